// One chat completion through the official openai SDK; prints what the application saw as one JSON line.
// Env: BASE_URL (required), STREAM=1 for a streamed answer, MAX_RETRIES (SDK default 2), TIMEOUT_MS.
// Output: {ok, content, chunks, attempts, elapsed_ms, error?: {name, status, message, code?, type?, request_id?}}
// where attempts counts the HTTP requests the SDK made (first try + retries). For https base URLs, trust a
// private CA with NODE_EXTRA_CA_CERTS=ca.pem in the environment (read by node at start).
import OpenAI from "openai";

let attempts = 0;
const countingFetch = (...args) => {
  attempts += 1;
  return fetch(...args);
};

const client = new OpenAI({
  apiKey: "sk-test",
  baseURL: process.env.BASE_URL,
  timeout: process.env.TIMEOUT_MS === undefined ? 10000 : Number(process.env.TIMEOUT_MS),
  fetch: countingFetch,
  // Unset: the SDK's own default (2 retries).
  ...(process.env.MAX_RETRIES === undefined ? {} : { maxRetries: Number(process.env.MAX_RETRIES) }),
});

const started = Date.now();
const result = { ok: false, content: "", chunks: 0 };
try {
  const params = { model: "gpt-fake", messages: [{ role: "user", content: "hi" }] };
  if (process.env.STREAM === "1") {
    const stream = await client.chat.completions.create({ ...params, stream: true });
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) {
        result.chunks += 1;
        result.content += piece;
      }
    }
  } else {
    const answer = await client.chat.completions.create(params);
    result.content = answer.choices[0].message.content;
  }
  result.ok = true;
} catch (err) {
  result.error = { name: err.constructor.name, status: err.status ?? null, message: String(err.message) };
  if (err instanceof OpenAI.APIError) {
    result.error.code = err.code ?? null;
    result.error.type = err.type ?? null;
    result.error.request_id = err.requestID ?? null;
  }
  if (err.cause) result.error.cause = String(err.cause.code ?? err.cause.message ?? err.cause);
}
result.attempts = attempts;
result.elapsed_ms = Date.now() - started;
console.log(JSON.stringify(result));
