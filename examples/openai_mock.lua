-- The OpenAI API, fully offline: faultline answers chat completions itself (upstream = "mock"), so a CI
-- job needs no network and no API key. Point the application's SDK at the proxy:
--   OPENAI_BASE_URL=http://127.0.0.1:8081/v1 OPENAI_API_KEY=sk-test node app.js
-- What the mock answers and what each action does: docs/http.md.
seed(42)

local openai = proxy {
  name     = "openai",
  listen   = "127.0.0.1:8081",
  upstream = "mock",   -- POST .../chat/completions: a fixed completion, or a stream when the body says "stream": true
  protocol = "http",
}

-- The first chat request gets 429 Too Many Requests with retry-after-ms: 200. The official SDKs retry it by
-- themselves (maxRetries defaults to 2), so the application should still get its answer, 200 ms later.
openai:rule {
  name   = "throttle-first",
  match  = { method = "POST", path = "/v1/chat/completions" },
  first  = 1,
  action = openai_api.rate_limit { retry_after = 0.2 },
}

-- The second streamed request that reaches this rule gets the response head and 3 whole events, then a
-- connection reset: the SDK's stream loop throws mid-answer. Does the application retry, or keep half an
-- answer? (A request answered by the rule above is not counted here: the first rule that fires decides.)
openai:rule {
  name   = "cut-second-stream",
  match  = { method = "POST", path = "/v1/chat/completions", json = { stream = true } },
  nth    = 2,
  action = http.sse_cut { after_events = 3 },
}

-- Checked at shutdown (Ctrl-C): faultline logs each one as met or NOT met.
expect { rule = "throttle-first", fired = 1 }
expect { rule = "cut-second-stream", fired = 1 }
