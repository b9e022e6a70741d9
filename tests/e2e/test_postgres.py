"""A real PostgreSQL behind a tcp proxy, driven by psql and psycopg2."""

import os
import subprocess
import time
import unittest

from faultline_testlib import Faultline, PostgresServer, tcp_proxy, toxic

import psycopg2  # after faultline_testlib, which makes Debian's python3-psycopg2 importable


class PostgresThroughProxyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pg = PostgresServer()
        cls.addClassCleanup(cls.pg.stop)

    def start_proxy(self, toxics=""):
        fl = Faultline(tcp_proxy("pg", self.pg.port) + toxics)
        self.addCleanup(fl.close)
        fl.start()
        return fl

    def connect(self, addr):
        conn = psycopg2.connect(self.pg.dsn(addr))
        self.addCleanup(conn.close)
        return conn

    def psql(self, addr, sql):
        env = dict(os.environ, PGCONNECT_TIMEOUT="10", PGSSLMODE="prefer")
        return subprocess.run(
            [os.path.join(self.pg.bindir, "psql"), "-h", addr[0], "-p", str(addr[1]),
             "-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-c", sql],
            capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)

    def test_psql_creates_inserts_and_selects_through_the_proxy(self):
        fl = self.start_proxy()
        addr = fl.addr("pg")
        out = self.psql(addr, "DROP TABLE IF EXISTS e2e_psql; "
                              "CREATE TABLE e2e_psql (id int primary key, name text)")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.psql(addr, "INSERT INTO e2e_psql VALUES (1, 'through faultline')")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.psql(addr, "SELECT id, name FROM e2e_psql")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "1|through faultline"), out.stderr)

    def test_psycopg2_transactions_go_through_the_proxy_to_the_real_server(self):
        fl = self.start_proxy()
        conn = self.connect(fl.addr("pg"))
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS e2e_py")
            cur.execute("CREATE TABLE e2e_py (id serial primary key, body bytea, note text)")
            body = bytes(range(256)) * 1024
            cur.execute("INSERT INTO e2e_py (body, note) VALUES (%s, %s) RETURNING id",
                        (psycopg2.Binary(body), "ünïcode ✓"))
            (row_id,) = cur.fetchone()
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT body, note FROM e2e_py WHERE id = %s", (row_id,))
            got_body, note = cur.fetchone()
        self.assertEqual(bytes(got_body), body)
        self.assertEqual(note, "ünïcode ✓")
        with self.connect(self.pg.addr).cursor() as cur:  # directly: the commit really happened
            cur.execute("SELECT count(*) FROM e2e_py")
            self.assertEqual(cur.fetchone()[0], 1)

    def test_a_rolled_back_transaction_leaves_nothing_behind(self):
        fl = self.start_proxy()
        conn = self.connect(fl.addr("pg"))
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS e2e_rb (v int)")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO e2e_rb VALUES (42)")
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM e2e_rb WHERE v = 42")
            self.assertEqual(cur.fetchone()[0], 0)

    def test_a_50_ms_latency_toxic_makes_select_1_take_at_least_50_ms(self):
        plain = self.start_proxy()
        fl = self.start_proxy(toxic("pg", "latency", "downstream", latency=50))
        slow, fast = self.connect(fl.addr("pg")), self.connect(plain.addr("pg"))
        slow.autocommit = fast.autocommit = True

        def timed_select(conn):
            with conn.cursor() as cur:
                t0 = time.monotonic()
                cur.execute("SELECT 1")
                value = cur.fetchone()[0]
                return (time.monotonic() - t0) * 1000.0, value

        slow_ms, value = timed_select(slow)
        self.assertEqual(value, 1)
        self.assertGreaterEqual(slow_ms, 50, f"SELECT 1 took {slow_ms:.1f} ms")
        self.assertLess(slow_ms, 150, f"SELECT 1 took {slow_ms:.1f} ms")
        fast_ms, _ = timed_select(fast)
        self.assertLess(fast_ms, 40, f"SELECT 1 without the toxic took {fast_ms:.1f} ms")


if __name__ == "__main__":
    unittest.main(verbosity=2)
