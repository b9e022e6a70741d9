-- openai_api: responses shaped like the OpenAI API's own, built on http.respond (docs/openai_presets.md).
-- Everything here is deterministic: ids come from a counter and a stable hash, `created` is fixed.

local http, json = http, json
local byte, format = string.byte, string.format
local ceil, floor, huge = math.ceil, math.floor, math.huge
local concat, sort = table.concat, table.sort
local pairs, tostring, type, error = pairs, tostring, type, error

local MODEL = "gpt-4o-mini"
local CREATED = 1700000000 -- fixed: a clock would make two runs differ
local LIMIT_REQUESTS, LIMIT_TOKENS = 500, 200000

local counter = 0

-- FNV-1a 64 (integer arithmetic wraps in Lua 5.4): the same text gives the same id on every machine.
local function fnv1a(text)
  local h = 0xcbf29ce484222325
  for i = 1, #text do
    h = (h ~ byte(text, i)) * 0x100000001b3
  end
  return h
end

-- 32 hex digits, like the API's "req_deaa3616cbd15d33b4db96b3ba74d2b4"; the n-th id of a run is always the same.
local function next_id(kind)
  counter = counter + 1
  local seed = kind .. "#" .. counter
  return format("%016x%016x", fnv1a(seed), fnv1a(seed .. "#2"))
end

local function describe(value)
  if type(value) == "string" then return "'" .. value .. "'" end
  if type(value) == "number" then return tostring(value) end
  return type(value)
end

-- The option table of preset `name`, checked against `known` (a list). Level 3 is the preset's caller.
local function options(name, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(format("openai_api.%s: expected a table of options or nothing, got %s", name, describe(opts)), 3)
  end
  local allowed, unknown = {}, {}
  for _, field in pairs(known) do allowed[field] = true end
  for field in pairs(opts) do
    if not allowed[field] then unknown[#unknown + 1] = tostring(field) end
  end
  if #unknown > 0 then
    sort(unknown)
    local valid = #known > 0 and concat(known, ", ") or "none"
    error(format("openai_api.%s: unknown field '%s' (valid fields: %s)", name, unknown[1], valid), 3)
  end
  return opts
end

local function check_number(name, opts, field, default)
  local value = opts[field]
  if value == nil then return default end
  if type(value) ~= "number" or value ~= value or value < 0 or value == huge then
    error(format("openai_api.%s: %s must be a number of seconds >= 0, got %s", name, field, describe(value)), 3)
  end
  return value
end

local function check_string(name, opts, field, default)
  local value = opts[field]
  if value == nil then return default end
  if type(value) ~= "string" then
    error(format("openai_api.%s: %s must be a string, got %s", name, field, describe(value)), 3)
  end
  return value
end

-- Go's time.Duration text, as in x-ratelimit-reset-*: "200ms", "1s", "1.5s", "6m0s", "1h0m0s".
local function duration(seconds)
  local ms = floor(seconds * 1000 + 0.5)
  if ms < 1000 then return format("%dms", ms) end
  local h, m = ms // 3600000, (ms // 60000) % 60
  local s = format("%.3f", (ms % 60000) / 1000):gsub("0+$", ""):gsub("%.$", "")
  local out = ""
  if h > 0 then out = h .. "h" end
  if h > 0 or m > 0 then out = out .. m .. "m" end
  return out .. s .. "s"
end

local function error_body(message, kind, param, code)
  return { error = { message = message, type = kind, param = param or json.null, code = code or json.null } }
end

-- An error from OpenAI's own servers: JSON body, x-request-id.
local function api_error(status, body, headers)
  headers = headers or {}
  headers[#headers + 1] = { "x-request-id", "req_" .. next_id("req") }
  return http.respond(status, { headers = headers, json = body })
end

-- An error from the Cloudflare edge in front of api.openai.com: its JSON, no x-request-id
-- (the request never reached OpenAI).
local function edge_error(status, message, kind)
  return http.respond(status, {
    json = { error = { code = status, message = message, param = json.null, type = kind } },
  })
end

openai_api = {}

-- 429 with the headers the SDKs read: retry-after-ms first, then retry-after (seconds).
function openai_api.rate_limit(opts)
  opts = options("rate_limit", opts, { "retry_after", "message" })
  local after = check_number("rate_limit", opts, "retry_after", 1)
  local wait = duration(after)
  local message = check_string("rate_limit", opts, "message", format(
    "Rate limit reached for %s in organization org-faultline on requests per min (RPM): Limit %d, Used %d, " ..
    "Requested 1. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.",
    MODEL, LIMIT_REQUESTS, LIMIT_REQUESTS, wait))
  return api_error(429, error_body(message, "requests", nil, "rate_limit_exceeded"), {
    { "retry-after", tostring(ceil(after)) }, -- whole seconds (RFC 9110); the exact wait is in retry-after-ms
    { "retry-after-ms", tostring(floor(after * 1000 + 0.5)) },
    { "x-ratelimit-limit-requests", tostring(LIMIT_REQUESTS) },
    { "x-ratelimit-limit-tokens", tostring(LIMIT_TOKENS) },
    { "x-ratelimit-remaining-requests", "0" },
    { "x-ratelimit-remaining-tokens", tostring(LIMIT_TOKENS) },
    { "x-ratelimit-reset-requests", wait },
    { "x-ratelimit-reset-tokens", "0s" },
  })
end

function openai_api.server_error(opts)
  opts = options("server_error", opts, { "message" })
  local message = check_string("server_error", opts, "message",
    "The server had an error while processing your request. Sorry about that!")
  return api_error(500, error_body(message, "server_error"))
end

function openai_api.overloaded(opts)
  opts = options("overloaded", opts, { "message" })
  local message = check_string("overloaded", opts, "message",
    "Our servers are currently overloaded. Please try again later.")
  return api_error(503, error_body(message, "service_unavailable_error", nil, "server_is_overloaded"))
end

function openai_api.bad_gateway(opts)
  options("bad_gateway", opts, {})
  return edge_error(502, "Bad gateway.", "cf_bad_gateway")
end

-- What api.openai.com answers when the model takes too long: Cloudflare's 524 (see the docs for why not 408/504).
function openai_api.timeout(opts)
  options("timeout", opts, {})
  return edge_error(524, "Gateway timeout.", "cf_gateway_timeout")
end

function openai_api.context_length_exceeded(opts)
  opts = options("context_length_exceeded", opts, { "message" })
  local message = check_string("context_length_exceeded", opts, "message",
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. " ..
    "Please reduce the length of the messages.")
  return api_error(400, error_body(message, "invalid_request_error", "messages", "context_length_exceeded"))
end

function openai_api.invalid_api_key(opts)
  opts = options("invalid_api_key", opts, { "message" })
  local message = check_string("invalid_api_key", opts, "message",
    "Incorrect API key provided: sk-fault*****line. You can find your API key at " ..
    "https://platform.openai.com/account/api-keys.")
  return api_error(401, error_body(message, "invalid_request_error", nil, "invalid_api_key"))
end

-- Roughly four characters a token, as OpenAI's own rule of thumb; only for plausible usage numbers.
local function tokens(text)
  return ceil(#text / 4)
end

-- 200 with a chat.completion object.
function openai_api.completion(opts)
  opts = options("completion", opts, { "content", "model", "finish_reason" })
  local content = opts.content
  if type(content) ~= "string" then
    error(format("openai_api.completion: content must be a string, got %s", describe(content)), 2)
  end
  local model = check_string("completion", opts, "model", MODEL)
  local finish = check_string("completion", opts, "finish_reason", "stop")
  local prompt_tokens, completion_tokens = 10, tokens(content)
  local id = next_id("chatcmpl")
  return http.respond(200, {
    headers = { { "x-request-id", "req_" .. next_id("req") } },
    json = {
      id = "chatcmpl-" .. id,
      object = "chat.completion",
      created = CREATED,
      model = model,
      choices = {
        {
          index = 0,
          message = { role = "assistant", content = content, refusal = json.null },
          logprobs = json.null,
          finish_reason = finish,
        },
      },
      usage = {
        prompt_tokens = prompt_tokens,
        completion_tokens = completion_tokens,
        total_tokens = prompt_tokens + completion_tokens,
      },
      system_fingerprint = "fp_faultline",
    },
  })
end

-- 200 with a text/event-stream of chat.completion.chunk events: one per chunk (the first also
-- carries role = "assistant"), a last one with finish_reason, then data: [DONE].
function openai_api.stream(opts)
  opts = options("stream", opts, { "chunks", "model", "finish_reason" })
  local chunks = opts.chunks
  if type(chunks) ~= "table" then
    error(format("openai_api.stream: chunks must be a list of strings, got %s", describe(chunks)), 2)
  end
  local count = 0
  for _ in pairs(chunks) do count = count + 1 end
  for i = 1, count do
    if type(chunks[i]) ~= "string" then
      error(format("openai_api.stream: chunks[%d] must be a string, got %s", i, describe(chunks[i])), 2)
    end
  end
  local model = check_string("stream", opts, "model", MODEL)
  local finish = check_string("stream", opts, "finish_reason", "stop")
  local id = "chatcmpl-" .. next_id("chatcmpl")
  local function event(delta, finish_reason)
    return "data: " .. json.encode({
      id = id,
      object = "chat.completion.chunk",
      created = CREATED,
      model = model,
      system_fingerprint = "fp_faultline",
      choices = { { index = 0, delta = delta, logprobs = json.null, finish_reason = finish_reason or json.null } },
    }) .. "\n\n"
  end
  local events = {}
  for i = 1, count do
    local delta = { content = chunks[i] }
    if i == 1 then delta.role = "assistant" end
    events[#events + 1] = event(delta)
  end
  events[#events + 1] = event(json.object {}, finish)
  events[#events + 1] = "data: [DONE]\n\n"
  return http.respond(200, {
    headers = {
      { "content-type", "text/event-stream; charset=utf-8" },
      { "cache-control", "no-cache" },
      { "x-request-id", "req_" .. next_id("req") },
    },
    body = concat(events),
  })
end
