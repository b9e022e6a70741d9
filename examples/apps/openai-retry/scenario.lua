-- Does the app survive rate limits and a stream cut mid-answer? Run it under faultline:
--   faultline run scenario.lua -- node app.mjs
-- faultline answers chat completions itself (upstream = "mock"): no network, no API key.
seed(7)

local openai = proxy { name = "openai", listen = "127.0.0.1:8081", upstream = "mock", protocol = "http" }

-- The first two chat requests get 429 with retry-after-ms: the SDK must wait and retry by itself.
openai:rule {
  name   = "throttle",
  match  = { method = "POST", path = "/v1/chat/completions" },
  first  = 2,
  action = openai_api.rate_limit { retry_after = 0.1 },
}

-- The first streamed answer is cut after 2 events: the app must notice and ask again.
openai:rule {
  name   = "cut-stream",
  match  = { method = "POST", path = "/v1/chat/completions", json = { stream = true } },
  first  = 1,
  action = http.sse_cut { after_events = 2 },
}

-- `faultline run` exits 3 if the app passed without these faults ever happening.
expect { rule = "throttle", fired = 2 }
expect { rule = "cut-stream", fired = 1 }
