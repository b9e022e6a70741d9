-- The demo scenario (scripts/demo): two proxies in front of one local redis-server.
-- DEMO_REDIS_PORT is set by scripts/demo; scenarios may read the environment with os.getenv.
local redis_port = os.getenv("DEMO_REDIS_PORT") or "6379"

seed(42)

-- Every reply from redis is held back 250 ms (downstream = server -> client).
local slow = proxy { name = "slow", listen = "127.0.0.1:0", upstream = "127.0.0.1:" .. redis_port }
slow:toxic { type = "latency", stream = "downstream", latency = 250, jitter = 0 }

-- Half of the connections are reset at once (RST, "connection reset by peer"); which half is decided
-- by the seed, so every run with seed 42 resets the same connections.
local flaky = proxy { name = "flaky", listen = "127.0.0.1:0", upstream = "127.0.0.1:" .. redis_port }
flaky:toxic { type = "reset_peer", timeout = 0, toxicity = 0.5 }

expect { toxic = "latency_downstream", fired_at_least = 1 }
