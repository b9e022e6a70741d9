-- Redis faults per command: does the app's cache layer survive LOADING, slow writes and lost connections?
-- Point the app at 127.0.0.1:6380 instead of :6379.  See docs/redis.md.
local redis_port = os.getenv("REDIS_PORT") or "6379"

seed(42)

local cache = proxy { name = "cache", listen = "127.0.0.1:6380", upstream = "127.0.0.1:" .. redis_port,
                      protocol = "redis" }

-- the first read of every session key says the server is still loading; the retry must succeed
cache:rule { name = "loading", match = { command = "GET", key = prefix "session:" }, key = "key", first = 1,
             action = redis.error "LOADING Redis is loading the dataset in memory" }
-- one cart write in ten takes 300 ms
cache:rule { name = "slow-cart", match = { command = "SET", key = prefix "cart:" }, probability = 0.1,
             action = delay(300) }
-- the fifth INCR of the rate limiter is executed but its answer never arrives
cache:rule { name = "lost-incr", match = { command = "INCR", key = prefix "ratelimit:" }, nth = 5,
             action = drop { after_forward = true } }
-- a cluster client is sent to another node once
cache:rule { name = "moved", match = { command = "GET", key = prefix "user:" }, first = 1,
             action = redis.error("MOVED 3999 127.0.0.1:" .. redis_port) }

expect { rule = "loading", fired_at_least = 1 }
