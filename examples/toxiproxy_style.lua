-- Every Toxiproxy toxic, with Toxiproxy's names, attributes and units, in front of one TCP service.
-- `faultline check examples/toxiproxy_style.lua` prints them with every default filled in.
local up = os.getenv("UPSTREAM") or "127.0.0.1:8080"

local svc = proxy { name = "svc", listen = "127.0.0.1:18080", upstream = up }

svc:toxic { type = "latency",    stream = "downstream", latency = 100, jitter = 20 }   -- ms
svc:toxic { type = "bandwidth",  stream = "upstream",   rate = 64 }                     -- KB/s
svc:toxic { type = "slicer",     stream = "downstream", average_size = 64, size_variation = 32,
            delay = 500 }                                                                 -- bytes, µs
svc:toxic { type = "slow_close", stream = "downstream", delay = 1000 }                 -- ms
svc:toxic { type = "limit_data", stream = "downstream", bytes = 1000000, toxicity = 0.5 }
svc:toxic { type = "reset_peer", stream = "upstream",   timeout = 3000, toxicity = 0.1 }  -- ms
svc:toxic { type = "timeout",    stream = "upstream",   timeout = 2000, toxicity = 0.05,
            name = "blackhole" }                                                          -- ms
