-- A cache-aside lookup (app.py) must give the right answer when Redis misbehaves:
--   faultline run scenario.lua -- python3 app.py
seed(11)

local cache = proxy { name = "cache", listen = "127.0.0.1:6380", upstream = "127.0.0.1:6379", protocol = "redis" }

-- Redis restarting: the first GET of each user is answered LOADING. redis-py raises BusyLoadingError;
-- the app retries after a short pause.
cache:rule {
  name   = "loading",
  match  = { command = "GET", key = prefix "user:" },
  key    = "key",
  first  = 1,
  action = redis.error "LOADING Redis is loading the dataset in memory",
}

-- A stalled Redis: the fifth GET gets no answer for 2 s. The app's 0.3 s socket timeout fires and it
-- reads the database instead of hanging.
cache:rule {
  name   = "stall",
  match  = { command = "GET" },
  nth    = 5,
  action = hang { ms = 2000 },
}

expect { rule = "loading", fired_at_least = 3 }
expect { rule = "stall", fired = 1 }
