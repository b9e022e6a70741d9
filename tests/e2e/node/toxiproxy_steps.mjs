// A test suite's usual Toxiproxy workflow, with the published client library (toxiproxy-node-client),
// against faultline's Toxiproxy-compatible API. argv: ADMIN_URL UPSTREAM_HOST:PORT. Prints one JSON line
// per step; exits 1 on the first unexpected result.
import { Toxiproxy } from "toxiproxy-node-client";
import net from "node:net";

const [admin, upstream] = process.argv.slice(2);
const toxiproxy = new Toxiproxy(admin);
const step = (name, value) => console.log(JSON.stringify({ step: name, value }));

function echo(listen, payload) {
  const [host, port] = [listen.slice(0, listen.lastIndexOf(":")), Number(listen.slice(listen.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => s.write(payload));
    let got = "";
    s.on("data", (d) => {
      got += d;
      if (got.length >= payload.length) {
        s.end();
        resolve(got);
      }
    });
    s.on("error", reject);
  });
}

step("version", await toxiproxy.getVersion());
const created = await toxiproxy.createProxy({ name: "redis_master", listen: "127.0.0.1:0", upstream });
step("created", created.toJson());
step("echo", await echo(created.listen, "ping through the proxy"));
const fetched = await toxiproxy.get("redis_master");
step("get", fetched.toJson());
const disabled = await fetched.update({ enabled: false, listen: fetched.listen, upstream });
step("disabled", disabled.enabled);
try {
  await echo(created.listen, "x");
  step("echo-while-disabled", "unexpectedly answered");
  process.exit(1);
} catch (e) {
  step("echo-while-disabled", e.code);
}
await toxiproxy.reset();  // re-enables every proxy
step("after-reset", (await toxiproxy.get("redis_master")).enabled);
step("echo-after-reset", await echo(created.listen, "again"));
const populated = await toxiproxy.populate([
  { name: "redis_master", listen: created.listen, upstream },
  { name: "redis_replica", listen: "127.0.0.1:0", upstream },
]);
step("populated", Object.keys(populated).sort());
step("all", Object.keys(await toxiproxy.getAll()).sort());
try {
  await toxiproxy.get("nope");
  process.exit(1);
} catch (e) {
  step("missing", e.message);
}
await (await toxiproxy.get("redis_replica")).remove();
step("after-remove", Object.keys(await toxiproxy.getAll()).sort());

// Toxics: a suite makes the dependency slow for one test, then heals it.
const master = await toxiproxy.get("redis_master");
const timed = async (payload) => {
  const t0 = performance.now();
  await echo(master.listen, payload);
  return performance.now() - t0;
};
const slow = await master.addToxic({ type: "latency", name: "slow", stream: "downstream", toxicity: 1,
                                     attributes: { latency: 300, jitter: 0 } });
step("toxic", slow.toJson());
step("slow-ms-at-least-300", (await timed("slow?")) >= 300);
const fast = await slow.update({ type: "latency", name: "slow", stream: "downstream", toxicity: 1,
                                 attributes: { latency: 0, jitter: 0 } });
step("updated-latency", fast.attributes.latency);
step("fast-ms-under-300", (await timed("fast?")) < 300);
step("get-toxic", (await master.getToxic("slow")).toJson().attributes);
await fast.remove();
try {
  await master.getToxic("slow");
  step("toxic-after-remove", "still there");
} catch (e) {
  step("toxic-after-remove", e.message);
}
