// A small client of the OpenAI API with the official SDK: one answer, one streamed answer, each must
// arrive whole however the API misbehaves. Run under faultline (see scenario.lua); it reads the proxy's
// address from FAULTLINE_OPENAI_URL, which `faultline run` exports.
import OpenAI from "openai";

const base = process.env.FAULTLINE_OPENAI_URL ?? "http://127.0.0.1:8081";
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-test", maxRetries: 3, timeout: 10_000 });
const messages = [{ role: "user", content: "Say hello." }];

// 1. Rate limits: the SDK retries 429s itself, honouring retry-after-ms.
const answer = await client.chat.completions.create({ model: "gpt-4o-mini", messages });
const text = answer.choices[0].message.content;
if (!text) throw new Error("empty answer");
console.log(`answer: ${text}`);

// 2. A stream cut mid-answer: the SDK throws while iterating; keeping half an answer would be the bug.
async function streamed(attempts) {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let got = "";
    try {
      const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
      for await (const chunk of stream) got += chunk.choices[0]?.delta?.content ?? "";
      return got;
    } catch (err) {
      console.log(`stream attempt ${attempt} failed after ${JSON.stringify(got)}: ${err.message}; retrying`);
    }
  }
  throw new Error("no whole streamed answer");
}
console.log(`streamed: ${await streamed(3)}`);
