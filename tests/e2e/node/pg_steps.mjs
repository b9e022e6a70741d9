// Runs SQL steps on one node-postgres connection (the real `pg` driver: parameterised queries use the
// extended protocol, plain ones the simple protocol) and prints what the application saw as one JSON line.
// Env: PGHOST, PGPORT, PGUSER, PGDATABASE (read by pg itself); STEPS: JSON [{sql, params?}, ...].
// Output: [{ok: true, rows} | {ok: false, code, message}, ...], one entry per step, in order.
import pg from "pg";

const steps = JSON.parse(process.env.STEPS);
const client = new pg.Client({ connectionTimeoutMillis: 10000, query_timeout: 10000 });
const out = [];
try {
  await client.connect();
  for (const step of steps) {
    try {
      const res = await client.query(step.sql, step.params);
      out.push({ ok: true, rows: res.rows });
    } catch (e) {
      out.push({ ok: false, code: e.code ?? null, message: e.message });
    }
  }
} catch (e) {
  out.push({ ok: false, code: e.code ?? null, message: `connect: ${e.message}` });
} finally {
  await client.end().catch(() => {});
}
console.log(JSON.stringify(out));
