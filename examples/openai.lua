-- The real OpenAI API behind faultline. The application talks plain HTTP to the proxy on loopback; faultline
-- talks HTTPS to api.openai.com (SNI, certificates checked against the system trust store).
--   OPENAI_BASE_URL=http://127.0.0.1:9000/v1 node app.js
-- The application's Authorization header is forwarded unchanged: it uses its own API key.
-- The same faults without network or key: examples/openai_mock.lua. Details: docs/http.md.
seed(42)

local openai = proxy {
  name     = "openai",
  listen   = "127.0.0.1:9000",          -- loopback only: the proxy carries your API key in clear text
  upstream = "https://api.openai.com",  -- port 443; Host is rewritten to api.openai.com
  protocol = "http",
  -- upstream_timeout = 60000,          -- the default: no response head within 60 s gives the client a 504
}

-- The first chat request gets 429 Too Many Requests with retry-after-ms: 200; it never reaches OpenAI.
-- The official SDKs retry it by themselves (maxRetries defaults to 2).
openai:rule {
  name   = "throttle-first",
  match  = { method = "POST", path = "/v1/chat/completions" },
  first  = 1,
  action = openai_api.rate_limit { retry_after = 0.2 },
}

-- The second streamed request that reaches this rule goes to OpenAI; the client gets the response head and
-- 3 whole events of its answer, then a connection reset.
openai:rule {
  name   = "cut-second-stream",
  match  = { method = "POST", path = "/v1/chat/completions", json = { stream = true } },
  nth    = 2,
  action = http.sse_cut { after_events = 3 },
}

expect { rule = "throttle-first", fired = 1 }
expect { rule = "cut-second-stream", fired = 1 }
