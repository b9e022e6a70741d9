-- A chaos session on staging, in phases, that only hits tagged test traffic and switches itself off.
-- Send the requests of the chaos test suite with the header `x-chaos: 1`; everybody else's requests
-- pass untouched. Every rule carries a ttl: forgotten on a Friday evening, it is off within the hour.
--
--   faultline examples/staging_chaos.lua --journal chaos.jsonl
--   curl -s -XPOST localhost:8474/faultline/v1/reset     # the kill switch, at any time
seed(2026)

local api = proxy { name = "api", listen = "127.0.0.1:8082", upstream = "http://127.0.0.1:8000", protocol = "http" }
local db = proxy { name = "db", listen = "127.0.0.1:6544", upstream = "127.0.0.1:5432", protocol = "postgres" }

local tagged = { header = { ["x-chaos"] = "1" } }

-- Phase 1, minutes 0-5: slow answers, 200 ms more on every tagged request.
api:rule { name = "phase1-latency", match = tagged, during = { from = 0, to = 300 }, ttl = 3600,
           action = delay { ms = 200, jitter = 50 } }

-- Phase 2, minutes 5-10: one tagged request in twenty answered 503 with retry-after.
api:rule { name = "phase2-errors", match = tagged, during = { from = 300, to = 600 }, probability = 0.05, ttl = 3600,
           action = http.respond(503, { headers = { ["retry-after"] = "1" }, json = { error = "chaos" } }) }

-- Phase 3, minutes 10-15: the tagged test user's transactions hit serialization failures.
db:rule { name = "phase3-serialize", match = { user = "chaos_tester", query = prefix "UPDATE" },
          during = { from = 600, to = 900 }, probability = 0.2, ttl = 3600,
          action = postgres.error { sqlstate = "40001", message = "could not serialize access due to concurrent update" } }
