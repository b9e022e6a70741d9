"""Rules on a protocol = "postgres" proxy (SPEC §2.1-2.3) in front of a real PostgreSQL, driven by
psycopg2, node-postgres (`pg`), psql and pgbench: dropped and after-forward COMMITs, injected
serialization failures with the failed-transaction state a server would keep, FATAL, the extended
protocol, SCRAM, COPY, LISTEN/NOTIFY, cancel requests, and determinism with key = "user"."""

import json
import os
import select
import subprocess
import threading
import time
import unittest

from faultline_testlib import (Faultline, PostgresServer, check_sanitizers, race, read_journal, toxic,
                               wait_until, write_journal)

import psycopg2  # after faultline_testlib, which makes Debian's python3-psycopg2 importable
import psycopg2.errors
import psycopg2.extensions

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def pg_proxy(port, name="pg"):
    return (f'local {name} = proxy {{ name = "{name}", listen = "127.0.0.1:0", '
            f'upstream = "127.0.0.1:{port}", protocol = "postgres" }}\n')


class PostgresRulesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer()
        cls.addClassCleanup(cls.pg.stop)
        with psycopg2.connect(cls.pg.dsn()) as c:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute("CREATE TABLE saves (id int primary key, note text)")
                cur.execute("CREATE TABLE accounts (id int primary key, balance int)")
                cur.execute("INSERT INTO accounts VALUES (1, 100)")
                cur.execute("CREATE TABLE audit (id serial, what text)")
                cur.execute("CREATE TABLE node_t (id int, v text)")
                cur.execute("CREATE TABLE copied (id int, v text)")
        c.close()

    def start(self, rules, *args, toxics=""):
        fl = Faultline(pg_proxy(self.pg.port) + rules + toxics, "--journal", "{tmp}/journal.jsonl", *args)
        self.addCleanup(fl.close)
        fl.start()
        self.addCleanup(check_sanitizers, fl)
        return fl

    def journal(self, fl, count):
        """The journal's lines once there are `count` (it is written behind the traffic)."""
        lines = []

        def enough():
            lines[:] = read_journal(fl.path("journal.jsonl"))
            return len(lines) >= count
        wait_until(enough, timeout=5, message=f"{count} journal line(s)")
        return lines

    def connect(self, addr=None, **kw):
        dsn = self.pg.dsn(addr)
        conn = psycopg2.connect(dsn, **kw)
        self.addCleanup(conn.close)
        return conn

    def query(self, sql, args=()):
        with psycopg2.connect(self.pg.dsn()) as c, c.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        c.close()
        return rows

    def psql(self, addr, *args, user="postgres", password=None, stdin=None):
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        if password:
            env["PGPASSWORD"] = password
        return subprocess.run(
            [os.path.join(self.pg.bindir, "psql"), "-h", addr[0], "-p", str(addr[1]), "-U", user,
             "-d", "postgres", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *args],
            capture_output=True, text=True, timeout=60, env=env, input=stdin)

    # ---------------------------------------------------------------- COMMIT lost

    def test_a_dropped_commit_leaves_no_row(self):
        fl = self.start('pg:rule { match = { query = "COMMIT" }, action = drop() }\n')
        conn = self.connect(fl.addr("pg"))
        with conn.cursor() as cur:
            cur.execute("INSERT INTO saves VALUES (1, 'dropped')")
        with self.assertRaises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            conn.commit()
        # the server saw the connection go and rolled back: once its backend is gone, no row (a COMMIT
        # that had reached it would have committed by then)
        wait_until(lambda: self.query("SELECT count(*) FROM pg_stat_activity WHERE query = "
                                      "'INSERT INTO saves VALUES (1, ''dropped'')'") == [(0,)],
                   timeout=10, message="the dropped connection's backend to end")
        self.assertEqual(self.query("SELECT count(*) FROM saves WHERE id = 1"), [(0,)])

    def test_a_commit_dropped_after_forward_leaves_the_row(self):
        fl = self.start('pg:rule { match = { query = "COMMIT" }, action = drop { after_forward = true } }\n')
        conn = self.connect(fl.addr("pg"))
        with conn.cursor() as cur:
            cur.execute("INSERT INTO saves VALUES (2, 'committed')")
        with self.assertRaises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            conn.commit()
        wait_until(lambda: self.query("SELECT note FROM saves WHERE id = 2") == [("committed",)], timeout=10,
                   message="the forwarded COMMIT to commit")
        self.assertEqual(len(self.journal(fl, 1)), 1)

    # ---------------------------------------------------------------- injected errors

    def test_an_injected_40001_fails_the_transaction_and_the_retry_loop_succeeds(self):
        fl = self.start('pg:rule { name = "serialize", match = { query = prefix "UPDATE accounts" }, first = 1,\n'
                        '  action = postgres.error { sqlstate = "40001", message = "could not serialize access" } }\n')
        before = self.query("SELECT balance FROM accounts WHERE id = 1")[0][0]
        conn = self.connect(fl.addr("pg"))
        attempts, seen = 0, []
        while True:
            attempts += 1
            try:
                with conn.cursor() as cur:
                    cur.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 1")
                    cur.execute("INSERT INTO audit (what) VALUES ('credit')")
                conn.commit()
                break
            except psycopg2.errors.SerializationFailure as e:
                seen.append(e.pgcode)
                # as a server would: the transaction is failed until it ends
                self.assertEqual(conn.info.transaction_status, psycopg2.extensions.TRANSACTION_STATUS_INERROR)
                with self.assertRaises(psycopg2.errors.InFailedSqlTransaction):
                    conn.cursor().execute("SELECT 1")
                conn.rollback()
                self.assertEqual(conn.info.transaction_status, psycopg2.extensions.TRANSACTION_STATUS_IDLE)
            self.assertLess(attempts, 5)
        self.assertEqual((attempts, seen), (2, ["40001"]))
        self.assertEqual(self.query("SELECT balance FROM accounts WHERE id = 1")[0][0], before + 10)
        journal = self.journal(fl, 1)
        self.assertEqual([(l["rule"], l["action"]) for l in journal], [("serialize", "postgres_error")])

    def test_an_injected_error_outside_a_transaction_leaves_the_connection_idle(self):
        fl = self.start('pg:rule { match = { query = "SELECT 42" }, first = 1,\n'
                        '  action = postgres.error { sqlstate = "53300", message = "too many connections" } }\n')
        conn = self.connect(fl.addr("pg"))
        conn.autocommit = True
        with conn.cursor() as cur:
            with self.assertRaises(psycopg2.errors.TooManyConnections):
                cur.execute("SELECT 42")
            self.assertEqual(conn.info.transaction_status, psycopg2.extensions.TRANSACTION_STATUS_IDLE)
            cur.execute("SELECT 42")
            self.assertEqual(cur.fetchone(), (42,))

    def test_a_fatal_57p01_closes_the_connection(self):
        fl = self.start('pg:rule { match = { query = "SELECT pg_backend_pid()" },\n'
                        '  action = postgres.fatal { sqlstate = "57P01", message = "terminating connection due to administrator command" } }\n')
        conn = self.connect(fl.addr("pg"))
        with self.assertRaises(psycopg2.OperationalError):
            conn.cursor().execute("SELECT pg_backend_pid()")
        self.assertNotEqual(conn.closed, 0)
        out = self.psql(fl.addr("pg"), "-c", "SELECT pg_backend_pid()")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("FATAL:  terminating connection due to administrator command", out.stderr)

    def test_a_rule_on_user_and_database_context(self):
        fl = self.start('pg:rule { match = { user = "postgres", database = "postgres", message = "Query", query = "SELECT 7" },\n'
                        '  action = postgres.error { sqlstate = "XX000", message = "user matched" } }\n')
        conn = self.connect(fl.addr("pg"))
        conn.autocommit = True
        with self.assertRaises(psycopg2.errors.InternalError_):
            conn.cursor().execute("SELECT 7")
        line = self.journal(fl, 1)[0]
        self.assertEqual(line["message"], {"message": "Query", "query": "SELECT 7"})

    def test_delay_holds_a_query_and_the_answer_still_comes(self):
        fl = self.start('pg:rule { match = { query = "SELECT 3" }, action = delay(250) }\n')
        conn = self.connect(fl.addr("pg"))
        conn.autocommit = True
        cur = conn.cursor()
        t0 = time.monotonic()
        cur.execute("SELECT 3")
        self.assertEqual(cur.fetchone(), (3,))
        self.assertGreaterEqual(time.monotonic() - t0, 0.24)

    # ---------------------------------------------------------------- node-postgres, extended protocol

    def node(self, addr, steps):
        env = dict(os.environ, PGHOST=addr[0], PGPORT=str(addr[1]), PGUSER="postgres", PGDATABASE="postgres",
                   STEPS=json.dumps(steps))
        out = subprocess.run(["node", os.path.join(NODE_DIR, "pg_steps.mjs")], capture_output=True, text=True,
                             timeout=60, env=env, cwd=NODE_DIR)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_node_postgres_parameterised_queries_and_a_deadlock_on_a_matching_insert(self):
        fl = self.start('pg:rule { name = "deadlock", match = { query = prefix "INSERT INTO node_t" }, nth = { 1, 3 },\n'
                        '  action = postgres.error { sqlstate = "40P01", message = "deadlock detected" } }\n')
        results = self.node(fl.addr("pg"), [
            {"sql": "SELECT $1::int + 1 AS n, $2::text AS t", "params": [41, "x"]},
            {"sql": "INSERT INTO node_t VALUES ($1, $2)", "params": [1, "first try"]},
            {"sql": "INSERT INTO node_t VALUES ($1, $2)", "params": [1, "retried"]},
            {"sql": "BEGIN"},
            {"sql": "INSERT INTO node_t VALUES ($1, $2)", "params": [2, "in a transaction"]},
            {"sql": "SELECT $1::int AS n", "params": [5]},
            {"sql": "ROLLBACK"},
            {"sql": "SELECT count(*)::int AS c FROM node_t WHERE id = $1", "params": [1]},
        ])
        self.assertEqual(results[0], {"ok": True, "rows": [{"n": 42, "t": "x"}]})
        self.assertEqual((results[1]["ok"], results[1]["code"]), (False, "40P01"))
        self.assertEqual(results[2], {"ok": True, "rows": []})
        self.assertEqual(results[3]["ok"], True)
        self.assertEqual((results[4]["ok"], results[4]["code"]), (False, "40P01"))
        self.assertEqual((results[5]["ok"], results[5]["code"]), (False, "25P02"), results[5])
        self.assertEqual(results[6]["ok"], True)
        self.assertEqual(results[7], {"ok": True, "rows": [{"c": 1}]})
        self.assertEqual(self.query("SELECT v FROM node_t ORDER BY id"), [("retried",)])

    def test_node_postgres_extended_commit_of_a_failed_transaction_is_a_rollback(self):
        fl = self.start('pg:rule { match = { query = prefix "UPDATE accounts SET balance = balance - " }, first = 1,\n'
                        '  action = postgres.error { sqlstate = "40001", message = "could not serialize" } }\n')
        before = self.query("SELECT balance FROM accounts WHERE id = 1")[0][0]
        results = self.node(fl.addr("pg"), [
            {"sql": "BEGIN"},
            {"sql": "INSERT INTO audit (what) VALUES ($1)", "params": ["never"]},
            {"sql": "UPDATE accounts SET balance = balance - $1 WHERE id = 1", "params": [5]},
            {"sql": "COMMIT"},
            {"sql": "SELECT count(*)::int AS c FROM audit WHERE what = $1", "params": ["never"]},
        ])
        self.assertEqual([r["ok"] for r in results], [True, True, False, True, True], results)
        self.assertEqual(results[4]["rows"], [{"c": 0}])
        self.assertEqual(self.query("SELECT balance FROM accounts WHERE id = 1")[0][0], before)

    # ---------------------------------------------------------------- psql: SCRAM, COPY, cancel

    def test_psql_with_scram_authentication(self):
        self.pg.add_scram_user("scram_user", "s3cret pass")
        fl = self.start('pg:rule { match = { user = "scram_user", query = "SELECT 13" },\n'
                        '  action = postgres.error { sqlstate = "XX000", message = "scram user hit" } }\n')
        ok = self.psql(fl.addr("pg"), "-c", "SELECT current_user", user="scram_user", password="s3cret pass")
        self.assertEqual((ok.returncode, ok.stdout.strip()), (0, "scram_user"), ok.stderr)
        bad = self.psql(fl.addr("pg"), "-c", "SELECT 1", user="scram_user", password="wrong")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("password authentication failed", bad.stderr)
        hit = self.psql(fl.addr("pg"), "-c", "SELECT 13", user="scram_user", password="s3cret pass")
        self.assertIn("scram user hit", hit.stderr)

    def test_psql_copy_in_and_out_passes_through(self):
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = postgres.error { sqlstate = "XX000", message = "x" } }\n')
        rows = "".join(f"{i}\tvalue {i}\n" for i in range(2000))
        out = self.psql(fl.addr("pg"), "-c", "COPY copied FROM STDIN", stdin=rows)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.psql(fl.addr("pg"), "-c", "COPY (SELECT * FROM copied ORDER BY id) TO STDOUT")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, rows)

    def test_listen_notify_notifications_arrive_through_the_proxy(self):
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = postgres.error { sqlstate = "XX000", message = "x" } }\n')
        listener = self.connect(fl.addr("pg"))
        listener.autocommit = True
        listener.cursor().execute("LISTEN faultline_channel")
        notifier = self.connect()
        notifier.autocommit = True
        notifier.cursor().execute("NOTIFY faultline_channel, 'hello'")
        deadline = time.monotonic() + 10
        while not listener.notifies and time.monotonic() < deadline:
            select.select([listener], [], [], 1)
            listener.poll()
        self.assertEqual([(n.channel, n.payload) for n in listener.notifies], [("faultline_channel", "hello")])
        cur = listener.cursor()
        cur.execute("SELECT 1")  # and the connection still answers in order
        self.assertEqual(cur.fetchone(), (1,))

    def test_a_cancel_request_reaches_the_server(self):
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = postgres.error { sqlstate = "XX000", message = "x" } }\n')
        conn = self.connect(fl.addr("pg"))
        conn.autocommit = True
        threading.Timer(0.5, conn.cancel).start()
        t0 = time.monotonic()
        with self.assertRaises(psycopg2.errors.QueryCanceled):
            conn.cursor().execute("SELECT pg_sleep(20)")
        self.assertLess(time.monotonic() - t0, 10)
        cur = conn.cursor()
        cur.execute("SELECT 1")
        self.assertEqual(cur.fetchone(), (1,))

    def test_pgbench_through_the_proxy_gives_the_same_results_as_direct(self):
        bench = os.path.join(self.pg.bindir, "pgbench")
        env = dict(os.environ, PGUSER="postgres", PGCONNECT_TIMEOUT="10")
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = postgres.error { sqlstate = "XX000", message = "x" } }\n')
        host, port = fl.addr("pg")
        for extra in ([], ["-M", "extended"], ["-M", "prepared"], ["-S", "-M", "prepared"]):
            init = subprocess.run([bench, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(self.pg.port), "postgres"],
                                  capture_output=True, text=True, timeout=120, env=env)
            self.assertEqual(init.returncode, 0, init.stderr)
            run = subprocess.run([bench, "-c", "4", "-t", "100", "-h", host, "-p", str(port), *extra, "postgres"],
                                 capture_output=True, text=True, timeout=180, env=env)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn("number of transactions actually processed: 400/400", run.stdout)
            self.assertIn("number of failed transactions: 0", run.stdout)
            # tpcb-like keeps its invariant: the balances moved by exactly what history recorded
            moved = self.query("SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts), "
                               "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), (SELECT count(*) FROM pgbench_history)")
            self.assertEqual(moved[0][0], moved[0][1], extra)
            self.assertEqual(moved[0][2], 0 if "-S" in extra else 400, extra)

    def test_an_unreachable_server_is_a_fatal_error_naming_it(self):
        from faultline_testlib import refused_port
        holder, port = refused_port()
        self.addCleanup(holder.close)
        fl = Faultline(pg_proxy(port) + 'pg:rule { match = { query = "SELECT 99" }, action = drop() }\n')
        self.addCleanup(fl.close)
        fl.start()
        out = self.psql(fl.addr("pg"), "-c", "SELECT 1")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(f"FATAL:  faultline: upstream 127.0.0.1:{port} unreachable", out.stderr)
        self.assertTrue(fl.alive())

    def test_http_sent_to_a_postgres_proxy_gets_a_fatal_protocol_error(self):
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = drop() }\n')
        import socket
        with socket.create_connection(fl.addr("pg"), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertEqual(data[:1], b"E")
        self.assertIn(b"FATAL", data)
        self.assertIn(b"08P01", data)
        self.assertIn(b"invalid startup packet", data)
        conn = self.connect(fl.addr("pg"))  # and the proxy goes on serving
        conn.cursor().execute("SELECT 1")

    def test_pgbench_pipelines_in_the_extended_protocol_through_the_proxy(self):
        bench = os.path.join(self.pg.bindir, "pgbench")
        env = dict(os.environ, PGUSER="postgres", PGCONNECT_TIMEOUT="10")
        fl = self.start('pg:rule { match = { query = "SELECT 99" }, action = postgres.error { sqlstate = "XX000", message = "x" } }\n')
        host, port = fl.addr("pg")
        script = os.path.join(fl.tmpdir, "pipeline.sql")
        with open(script, "w", encoding="utf-8") as f:
            f.write("\\startpipeline\nSELECT 1;\nSELECT :client_id + 1;\nSELECT repeat('x', 5000);\n\\endpipeline\n")
        run = subprocess.run([bench, "-n", "-c", "4", "-t", "200", "-M", "extended", "-f", script, "-h", host, "-p", str(port),
                              "postgres"], capture_output=True, text=True, timeout=180, env=env)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("number of transactions actually processed: 800/800", run.stdout)
        self.assertIn("number of failed transactions: 0", run.stdout)

    def test_every_message_split_into_single_bytes_by_slicer_toxics(self):
        fl = self.start('pg:rule { name = "s", match = { query = prefix "UPDATE accounts" }, first = 1,\n'
                        '  action = postgres.error { sqlstate = "40001", message = "could not serialize" } }\n',
                        toxics=toxic("pg", "slicer", "upstream", average_size=1, delay=0)
                        + toxic("pg", "slicer", "downstream", average_size=1, delay=0))
        conn = self.connect(fl.addr("pg"))
        with self.assertRaises(psycopg2.errors.SerializationFailure):
            conn.cursor().execute("UPDATE accounts SET balance = balance WHERE id = 1")
        conn.rollback()
        cur = conn.cursor()
        cur.execute("SELECT id, balance FROM accounts WHERE id = %s", (1,))
        self.assertEqual(cur.fetchone()[0], 1)
        conn.commit()


class PostgresTlsUpstreamTest(unittest.TestCase):
    """upstream_tls = true: faultline asks the server for TLS (SSLRequest, then a handshake that
    verifies the server's certificate) while the client speaks in the clear to faultline."""

    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer(ssl=True)
        cls.addClassCleanup(cls.pg.stop)

    def start(self, pg, extra_fields="", rules="", env=None):
        scenario = (f'local pg = proxy {{ name = "pg", listen = "127.0.0.1:0", upstream = "127.0.0.1:{pg.port}", '
                    f'protocol = "postgres", upstream_tls = true{extra_fields} }}\n' + rules)
        fl = Faultline(scenario, env=env)
        self.addCleanup(fl.close)
        fl.start()
        self.addCleanup(check_sanitizers, fl)
        return fl

    def connect(self, fl, pg):
        conn = psycopg2.connect(pg.dsn(fl.addr("pg")), sslmode="disable", connect_timeout=10)
        self.addCleanup(conn.close)
        return conn

    def test_queries_and_rules_work_over_a_verified_tls_upstream(self):
        fl = self.start(self.pg, rules='pg:rule { name = "boom", match = { query = prefix "SELECT \'boom\'" }, '
                                       'action = postgres.error { sqlstate = "40001", message = "injected" } }\n',
                        env={"FAULTLINE_UPSTREAM_CA": self.pg.ssl_cert})
        conn = self.connect(fl, self.pg)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl_used, version = cur.fetchone()
            self.assertTrue(ssl_used, "the server saw a connection in the clear")
            self.assertTrue(version.startswith("TLS"), version)
            with self.assertRaises(psycopg2.errors.SerializationFailure):
                cur.execute("SELECT 'boom'")
            cur.execute("SELECT 40 + 2")
            self.assertEqual(cur.fetchone(), (42,))

    def test_an_unverified_certificate_is_refused_unless_tls_verify_is_false(self):
        fl = self.start(self.pg)  # the server's self-signed certificate is in no trust store
        with self.assertRaises(psycopg2.OperationalError) as caught:
            self.connect(fl, self.pg)
        # FATAL 08006 from faultline (psycopg2 gives no code for a failed connect: the text says it)
        self.assertIn("FATAL:  faultline: upstream", str(caught.exception))
        self.assertIn("certificate verify failed", str(caught.exception))
        fl2 = self.start(self.pg, extra_fields=", tls_verify = false")
        with self.connect(fl2, self.pg).cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            self.assertEqual(cur.fetchone(), (True,))

    def test_a_server_without_tls_is_reported_to_the_client_as_refusing_it(self):
        plain = PostgresServer()
        self.addCleanup(plain.stop)
        fl = self.start(plain, env={"FAULTLINE_UPSTREAM_CA": self.pg.ssl_cert})
        with self.assertRaises(psycopg2.OperationalError) as caught:
            self.connect(fl, plain)
        self.assertIn("FATAL:  faultline: upstream", str(caught.exception))
        self.assertIn("refused TLS", str(caught.exception))


class PostgresDeterminismTest(unittest.TestCase):
    """SPEC §3 with key = "user": each user's faults depend only on the seed, however clients race."""

    USERS = ["alice", "bob", "carol", "dave"]

    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer()
        cls.addClassCleanup(cls.pg.stop)
        with psycopg2.connect(cls.pg.dsn()) as c:
            c.autocommit = True
            for u in cls.USERS:
                c.cursor().execute(f"CREATE ROLE {u} LOGIN")
        c.close()

    def run_once(self, *args):
        fl = Faultline(pg_proxy(self.pg.port) +
                       'pg:rule { name = "flaky", match = { query = "SELECT 1" }, key = "user", probability = 0.5,\n'
                       '  action = postgres.error { sqlstate = "40001", message = "flaky" } }\n',
                       "--journal", "{tmp}/j.jsonl", *args)
        self.addCleanup(fl.close)
        fl.start()
        outcomes = {}

        def worker(user):
            host, port = fl.addr("pg")
            conn = psycopg2.connect(f"host={host} port={port} user={user} dbname=postgres connect_timeout=10")
            conn.autocommit = True
            got = []
            for _ in range(15):
                try:
                    conn.cursor().execute("SELECT 1")
                    got.append(".")
                except psycopg2.errors.SerializationFailure:
                    got.append("1")
            conn.close()
            outcomes[user] = "".join(got)

        race(worker, self.USERS)
        fl.stop()
        return outcomes, read_journal(fl.path("j.jsonl"))

    def test_racing_users_get_the_same_faults_on_every_run_and_replay_repeats_them(self):
        a, journal = self.run_once("--seed", "5")
        b, _ = self.run_once("--seed", "5")
        self.assertEqual(a, b)
        self.assertTrue(all(len(v) == 15 for v in a.values()))
        self.assertTrue(any("1" in v for v in a.values()) and any("." in v for v in a.values()))
        path = write_journal(self, journal)
        replayed, _ = self.run_once("--seed", "6", "--replay", path)
        self.assertEqual(replayed, a)


if __name__ == "__main__":
    unittest.main(verbosity=2)
