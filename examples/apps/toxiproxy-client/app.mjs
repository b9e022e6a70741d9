// A resilience suite as a team writes it for Toxiproxy: the published toxiproxy-node-client library,
// node:assert, one line per test, exit 1 if any failed. Run it under faultline (see scenario.lua),
// which serves Toxiproxy's REST API at the root of its control API and exports its address as
// FAULTLINE_ADMIN_URL, and the proxy's as FAULTLINE_CACHE_ADDR:
//   faultline run scenario.lua -- node app.mjs
// The checks speak RESP by hand, so what they measure is the proxy, not a client library's pool or
// retries: most open a fresh connection each; one keeps a connection open across toxic changes, as a
// pool does (faultline, like Toxiproxy, changes the toxics of open connections too).
import assert from "node:assert/strict";
import net from "node:net";
import { Toxiproxy } from "toxiproxy-node-client";

const toxiproxy = new Toxiproxy(process.env.FAULTLINE_ADMIN_URL ?? "http://127.0.0.1:8474");
const CACHE = process.env.FAULTLINE_CACHE_ADDR ?? "127.0.0.1:26379";
const FAST_MS = 250;  // a reply on loopback takes a few ms; 250 leaves room for a loaded machine

// Sends each command on one new connection, waiting for each reply before the next. Resolves with the
// replies (an error reply as { error }) and the milliseconds from connect to the last reply; rejects
// with the socket's error (ECONNREFUSED, ...) or ETIMEDOUT after `deadline` ms without every reply.
function redis(addr, commands, { deadline = 2000 } = {}) {
  const colon = addr.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const replies = [];
    let buffered = Buffer.alloc(0);
    let start;
    const socket = net.connect({ host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) });
    const fail = (err) => { clearTimeout(timer); socket.destroy(); reject(err); };
    const timer = setTimeout(() => fail(Object.assign(new Error(`no answer within ${deadline} ms`),
                                                      { code: "ETIMEDOUT" })), deadline);
    const sendNext = () => socket.write(encode(commands[replies.length]));
    socket.on("connect", () => { start = performance.now(); sendNext(); });
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (let r; replies.length < commands.length && (r = parseReply(buffered)); ) {
        replies.push(r.value);
        buffered = buffered.subarray(r.end);
        if (replies.length < commands.length) sendNext();
      }
      if (replies.length === commands.length) {
        clearTimeout(timer);
        socket.end();
        resolve({ replies, ms: Math.round(performance.now() - start) });
      }
    });
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("connection closed before every reply")));  // no-op once resolved
  });
}

const encode = (args) => `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");

// One RESP2 reply of the kinds these commands get (+simple, -error, :integer, $bulk), or null if incomplete.
function parseReply(buf) {
  const eol = buf.indexOf("\r\n");
  if (eol < 0) return null;
  const line = buf.toString("utf8", 1, eol);
  switch (String.fromCharCode(buf[0])) {
    case "+": return { value: line, end: eol + 2 };
    case "-": return { value: { error: line }, end: eol + 2 };
    case ":": return { value: Number(line), end: eol + 2 };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return null;
      return { value: buf.toString("utf8", eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    default: throw new Error(`unexpected reply ${JSON.stringify(buf.toString("utf8", 0, eol))}`);
  }
}

// One connection kept open, as a client's pool keeps it: send() resolves with the next reply and the ms
// it took.
async function openConnection(addr) {
  const colon = addr.lastIndexOf(":");
  const socket = net.connect({ host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) });
  await new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("error", reject); });
  let buffered = Buffer.alloc(0);
  let waiting = null;
  socket.on("data", (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    const r = waiting && parseReply(buffered);
    if (!r) return;
    buffered = buffered.subarray(r.end);
    const w = waiting;
    waiting = null;
    w.resolve({ reply: r.value, ms: Math.round(performance.now() - w.start) });
  });
  socket.on("close", () => waiting?.reject(new Error("connection closed")));
  return {
    send: (args) => new Promise((resolve, reject) => {
      waiting = { resolve, reject, start: performance.now() };
      socket.write(encode(args));
    }),
    close: () => socket.end(),
  };
}

async function ping(addr, options) {
  const { replies, ms } = await redis(addr, [["PING"]], options);
  assert.deepEqual(replies, ["PONG"]);
  return ms;
}

async function pingFast(addr) {
  const ms = await ping(addr);
  assert.ok(ms < FAST_MS, `PING took ${ms} ms, expected < ${FAST_MS}`);
  return ms;
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test("the scenario's proxy is listed, at the address faultline run exported", async () => {
  const proxies = await toxiproxy.getAll();
  assert.ok(proxies.cache, `no proxy 'cache' among ${Object.keys(proxies)}`);
  assert.equal(proxies.cache.listen, CACHE);
  assert.equal(proxies.cache.enabled, true);
  const cache = await toxiproxy.get("cache");
  return `cache ${cache.listen} -> ${cache.upstream}, PONG in ${await pingFast(CACHE)} ms`;
});

test("faultline's rule: the first read of the flags says LOADING, the retry gets them", async () => {
  const { replies } = await redis(CACHE, [["SET", "feature:flags", "dark-mode"], ["GET", "feature:flags"],
                                          ["GET", "feature:flags"]]);
  assert.deepEqual(replies, ["OK", { error: "LOADING Redis is loading the dataset in memory" }, "dark-mode"]);
  return replies.map((r) => r.error ?? r).join(" | ");
});

test("latency toxic: replies 300 ms late, fast again once it is removed", async () => {
  const cache = await toxiproxy.get("cache");
  const toxic = await cache.addToxic({ type: "latency", name: "slow_cache", stream: "downstream", toxicity: 1,
                                      attributes: { latency: 300, jitter: 0 } });
  assert.deepEqual((await cache.getToxic("slow_cache")).attributes, { latency: 300, jitter: 0 });
  const slow = await ping(CACHE);
  assert.ok(slow >= 250, `PING took ${slow} ms with 300 ms of latency`);
  await toxic.remove();
  await assert.rejects(cache.getToxic("slow_cache"), /404/);
  return `PONG in ${slow} ms with the toxic, ${await pingFast(CACHE)} ms without`;
});

test("a toxic acts on connections already open, as the client's pool holds them", async () => {
  const cache = await toxiproxy.get("cache");
  const pooled = await openConnection(CACHE);
  try {
    const before = await pooled.send(["PING"]);
    assert.ok(before.ms < FAST_MS, `PING took ${before.ms} ms before the toxic`);
    const toxic = await cache.addToxic({ type: "latency", name: "slow_pool", attributes: { latency: 300 } });
    const slow = await pooled.send(["PING"]);  // the same connection: it feels the toxic at once
    assert.equal(slow.reply, "PONG");
    assert.ok(slow.ms >= 250, `PING took ${slow.ms} ms on the open connection with 300 ms of latency`);
    await toxic.remove();
    const after = await pooled.send(["PING"]);
    assert.ok(after.ms < FAST_MS, `PING took ${after.ms} ms once the toxic was removed`);
    return `one open connection: PONG in ${before.ms} ms, ${slow.ms} ms with the toxic, ${after.ms} ms after`;
  } finally {
    pooled.close();
  }
});

test("timeout toxic: no answer, the client's own deadline fires; removed, answers again", async () => {
  const cache = await toxiproxy.get("cache");
  const toxic = await cache.addToxic({ type: "timeout", name: "blackhole", stream: "upstream",
                                      attributes: { timeout: 0 } });
  const err = await redis(CACHE, [["PING"]], { deadline: 500 }).then(() => null, (e) => e);
  assert.equal(err?.code, "ETIMEDOUT", `expected no answer, got ${err?.message ?? "PONG"}`);
  await toxic.remove();
  return `${err.message} with the toxic, PONG in ${await pingFast(CACHE)} ms without`;
});

test("disabled proxy: connection refused; reset() enables it again", async () => {
  const disabled = await (await toxiproxy.get("cache")).update({ enabled: false });
  assert.equal(disabled.enabled, false);
  await assert.rejects(redis(CACHE, [["PING"]]), { code: "ECONNREFUSED" });
  await toxiproxy.reset();
  assert.equal((await toxiproxy.get("cache")).enabled, true);
  return `ECONNREFUSED while disabled, PONG in ${await pingFast(CACHE)} ms after reset()`;
});

test("a proxy of the suite's own: made, slowed, used and removed through the API", async () => {
  const upstream = (await toxiproxy.get("cache")).upstream;  // the Redis server the scenario points at
  const replica = await toxiproxy.createProxy({ name: "cache_replica", listen: "127.0.0.1:0", upstream });
  assert.match(replica.listen, /^127\.0\.0\.1:[1-9]\d*$/);  // the port really bound
  assert.deepEqual(Object.keys(await toxiproxy.getAll()).sort(), ["cache", "cache_replica"]);
  // the same server (the value set above), and no LOADING: the scenario's rule is on 'cache' only
  const { replies } = await redis(replica.listen, [["GET", "feature:flags"]]);
  assert.deepEqual(replies, ["dark-mode"]);
  await replica.addToxic({ type: "latency", stream: "downstream", attributes: { latency: 300 } });
  const slow = await ping(replica.listen);
  assert.ok(slow >= 250, `PING took ${slow} ms with 300 ms of latency`);
  await pingFast(CACHE);  // a toxic on one proxy leaves the other alone
  await replica.remove();
  assert.deepEqual(Object.keys(await toxiproxy.getAll()), ["cache"]);
  await assert.rejects(redis(replica.listen, [["PING"]]), { code: "ECONNREFUSED" });
  return `${replica.listen} -> ${upstream}: GET answered, PONG in ${slow} ms with its toxic, gone after remove()`;
});

let failed = 0;
for (const [i, { name, fn }] of tests.entries()) {
  try {
    const detail = await fn();
    console.log(`ok ${i + 1} - ${name}: ${detail}`);
  } catch (err) {
    failed++;
    console.log(`not ok ${i + 1} - ${name}: ${err.message}`);
  } finally {
    await toxiproxy.reset();  // afterEach, as with Toxiproxy: every proxy enabled, every toxic removed
  }
}
console.log(failed ? `${failed} of ${tests.length} tests failed` : `all ${tests.length} tests passed`);
process.exit(failed ? 1 : 0);
