-- A test suite written for Toxiproxy (app.mjs, with the toxiproxy-node-client library) drives faultline
-- through its Toxiproxy-compatible API, the control API's root (FAULTLINE_ADMIN_URL):
--   faultline run scenario.lua -- node app.mjs
-- The suite adds and removes its own toxics, disables the proxy, resets, and makes a second proxy;
-- the scenario declares the proxy, and a Redis-aware rule that no toxic could express.
seed(5)

local cache = proxy { name = "cache", listen = "127.0.0.1:26379", upstream = "127.0.0.1:6379", protocol = "redis" }

-- Redis restarting: the first read of the feature flags is answered LOADING, and the suite's retry
-- must get the value. Writes, PINGs and other keys pass untouched, toxics or not.
cache:rule {
  name   = "flags-loading",
  match  = { command = "GET", key = "feature:flags" },
  first  = 1,
  action = redis.error "LOADING Redis is loading the dataset in memory",
}

-- `faultline run` exits 3 if the suite passed without the rule ever firing.
expect { rule = "flags-loading", fired = 1 }
