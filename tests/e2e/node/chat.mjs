// One chat completion through the official openai SDK; prints what the application saw as one JSON line.
// Env: BASE_URL (required), STREAM=1 for a streamed answer, MAX_RETRIES (SDK default 2), TIMEOUT_MS.
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: "sk-test",
  baseURL: process.env.BASE_URL,
  maxRetries: process.env.MAX_RETRIES === undefined ? 2 : Number(process.env.MAX_RETRIES),
  timeout: process.env.TIMEOUT_MS === undefined ? 10000 : Number(process.env.TIMEOUT_MS),
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
}
result.elapsed_ms = Date.now() - started;
console.log(JSON.stringify(result));
