-- A slow, flaky cache: put faultline between your app and redis-server on 6379, point the app at 6380.
seed(42)

local cache = proxy { name = "cache", listen = "127.0.0.1:6380", upstream = "127.0.0.1:6379" }

-- every reply 50 ms late, ±10 ms, on every connection
cache:toxic { type = "latency", stream = "downstream", latency = 50, jitter = 10 }
-- a third of the connections (chosen by the seed) are cut after 1 KB of replies
cache:toxic { type = "limit_data", bytes = 1024, toxicity = 0.33 }

expect { toxic = "latency_downstream", fired_at_least = 1 }
