-- PostgreSQL over a bad network: a thin, slow link, and some connections that stall and time out.
-- Run your app's database tests against 127.0.0.1:6543 instead of :5432.
local pg_port = os.getenv("PGPORT") or "5432"

seed(7)

local pg = proxy { name = "pg", listen = "127.0.0.1:6543", upstream = "127.0.0.1:" .. pg_port,
                   protocol = "postgres" }

-- 40 ms each way, like a database in another region
pg:toxic { type = "latency", stream = "upstream", latency = 20 }
pg:toxic { type = "latency", stream = "downstream", latency = 20, jitter = 5 }
-- replies limited to 500 KB/s
pg:toxic { type = "bandwidth", stream = "downstream", rate = 500 }
-- one connection in ten stops answering and is closed after 5 s: does the pool notice?
pg:toxic { name = "stall", type = "timeout", stream = "downstream", timeout = 5000, toxicity = 0.1 }
