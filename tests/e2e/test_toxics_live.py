"""Toxics changed while connections are open (Toxiproxy's semantics): a toxic added, changed or removed
through the Toxiproxy API, switched off by the kill switch or by Toxiproxy's /reset acts on the open
connections of its proxy too (tcp, redis and keep-alive http), before the API answers; a toxic taken
out lets go at once of the bytes it holds. Run with one worker and with two (connections spread over
both loops)."""

import json
import re
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request

from faultline_testlib import (EchoServer, HttpReader, RedisServer, connect, echo_round_trip, http_proxy,
                               http_request, recv_exactly, started_faultline, wait_until)
from http_upstream import HttpUpstream


def call(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": "faultline-tests"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, (json.loads(raw) if raw.strip() and raw.strip()[:1] in b"{[" else raw.decode())


class LiveToxicsTest(unittest.TestCase):
    THREADS = "1"

    def setUp(self):
        self.echo = EchoServer()
        self.addCleanup(self.echo.close)
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
        self.web_up = HttpUpstream()
        self.addCleanup(self.web_up.close)
        scenario = (f'proxy {{ name = "db", listen = "127.0.0.1:0", upstream = "127.0.0.1:{self.echo.port}" }}\n'
                    f'local cache = proxy {{ name = "cache", listen = "127.0.0.1:0", '
                    f'upstream = "127.0.0.1:{self.redis.port}", protocol = "redis" }}\n'
                    'cache:toxic { name = "slow_cache", type = "latency", latency = 10000 }\n'
                    + http_proxy("web", self.web_up.port))
        self.fl = started_faultline(self, scenario, "--admin", "127.0.0.1:0", "--threads", self.THREADS)
        m = re.search(r"control API on (http://\S+)", self.fl.stderr_text())
        self.api = m.group(1)

    def clients(self, proxy, n=4):
        """n open connections; with two workers the kernel spreads them over both loops."""
        out = []
        for _ in range(n):
            c = connect(self.fl.addr(proxy), timeout=15)
            self.addCleanup(c.close)
            out.append(c)
        return out

    def bytes_from_upstream(self, proxy):
        with urllib.request.urlopen(self.api + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(r'faultline_bytes_total\{proxy="%s",direction="downstream"\} (\d+)' % proxy, text)
        return int(m.group(1)) if m else 0

    def test_a_toxic_added_changed_and_removed_acts_on_open_connections(self):
        conns = self.clients("db")
        for c in conns:
            self.assertLess(echo_round_trip(c), 0.4)
        status, _ = call(self.api + "/proxies/db/toxics", "POST", {"type": "latency", "attributes": {"latency": 400}})
        self.assertEqual(status, 200)
        for c in conns:  # the very next bytes feel it: the API answered once every worker had it
            self.assertGreaterEqual(echo_round_trip(c), 0.4)
        status, _ = call(self.api + "/proxies/db/toxics/latency_downstream", "PATCH", {"attributes": {"latency": 0}})
        self.assertEqual(status, 200)
        for c in conns:
            self.assertLess(echo_round_trip(c), 0.4)
        # decided once per connection, counted and journaled once: the change kept them
        _, report = call(self.api + "/faultline/v1/report")
        self.assertIn({"proxy": "db", "name": "latency_downstream", "connections": 4}, report["toxics"])
        self.assertEqual(call(self.api + "/proxies/db/toxics/latency_downstream", "DELETE")[0], 204)
        status, _ = call(self.api + "/proxies/db/toxics", "POST",
                         {"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 6}})
        before = [r.get("received", 0) for r in self.echo.records]
        for c in conns:  # the upstream direction of the same connections: 6 more bytes pass, then the close
            c.sendall(b"0123456789")
            c.settimeout(10)
            while c.recv(64):
                pass
        wait_until(lambda: all("eof_at" in r for r in self.echo.records), timeout=5, message="upstreams closed")
        self.assertEqual([r.get("received", 0) - b for r, b in zip(self.echo.records, before)], [6] * 4)
        self.assertTrue(self.fl.alive())

    def test_a_removed_toxic_lets_go_at_once_of_what_it_held(self):
        conns = self.clients("db")
        for c in conns:
            echo_round_trip(c)
        self.assertEqual(call(self.api + "/proxies/db/toxics", "POST",
                              {"type": "latency", "attributes": {"latency": 30000}})[0], 200)
        before = self.bytes_from_upstream("db")
        for c in conns:
            c.sendall(b"held")
        # every echo has come back from the upstream: the toxic holds it
        wait_until(lambda: self.bytes_from_upstream("db") >= before + 16, timeout=5, message="echoes read")
        for c in conns:
            c.settimeout(0.2)
            with self.assertRaises(socket.timeout):
                c.recv(16)
        t0 = time.monotonic()
        self.assertEqual(call(self.api + "/proxies/db/toxics/latency_downstream", "DELETE")[0], 204)
        for c in conns:
            self.assertEqual(recv_exactly(c, 4, timeout=10), b"held")
        self.assertLess(time.monotonic() - t0, 10)  # far from the 30 s it would have held them
        for c in conns:
            self.assertLess(echo_round_trip(c), 1.0)

    def test_the_kill_switch_lets_held_redis_replies_go_and_heals_the_open_connection(self):
        conns = self.clients("cache", n=3)
        before = self.bytes_from_upstream("cache")
        for c in conns:
            c.sendall(b"*1\r\n$4\r\nPING\r\n")
        wait_until(lambda: self.bytes_from_upstream("cache") >= before + 21, timeout=5, message="PONGs read")
        status, body = call(self.api + "/faultline/v1/reset", "POST")
        self.assertEqual((status, body["toxics_disabled"]), (200, 1))
        for c in conns:
            self.assertEqual(recv_exactly(c, 7, timeout=5), b"+PONG\r\n")
        for c in conns:
            t0 = time.monotonic()
            c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            self.assertEqual(recv_exactly(c, 5, timeout=5), b"+OK\r\n")
            self.assertLess(time.monotonic() - t0, 5)
        _, toxics = call(self.api + "/proxies/cache/toxics")
        self.assertEqual(toxics, [])

    def test_keep_alive_http_feels_a_toxic_on_either_stream_and_toxiproxys_reset_heals_it(self):
        c = connect(self.fl.addr("web"), timeout=15)
        self.addCleanup(c.close)
        reader = HttpReader(c)

        def get_s():
            t0 = time.monotonic()
            c.sendall(http_request("GET", "/echo/x"))
            self.assertEqual(reader.response().status, 200)
            return time.monotonic() - t0
        self.assertLess(get_s(), 0.4)
        self.assertEqual(call(self.api + "/proxies/web/toxics", "POST",
                              {"type": "latency", "stream": "upstream", "attributes": {"latency": 400}})[0], 200)
        self.assertGreaterEqual(get_s(), 0.4)  # on the pooled upstream connection the request went out on
        self.assertEqual(call(self.api + "/proxies/web/toxics", "POST",
                              {"type": "latency", "attributes": {"latency": 300}})[0], 200)
        self.assertGreaterEqual(get_s(), 0.7)  # both ways
        self.assertEqual(call(self.api + "/reset", "POST")[0], 204)
        self.assertLess(get_s(), 0.4)
        self.assertEqual(self.web_up.request_count(), 4)

class LiveToxicsTwoWorkersTest(LiveToxicsTest):
    THREADS = "2"

    def test_toxics_changing_while_clients_keep_sending_never_break_a_stream(self):
        # Four clients stream through the tcp proxy while toxics come and go; every byte comes back, in order.
        conns = self.clients("db")
        errors, rounds = [], [0] * len(conns)
        stop = threading.Event()

        def client(i, c):
            try:
                n = 0
                while not stop.is_set():
                    payload = (b"%d:%d;" % (i, n)) * 50
                    c.sendall(payload)
                    self.assertEqual(recv_exactly(c, len(payload), timeout=10), payload)
                    n += 1
                    rounds[i] = n
            except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(i, c)) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        toxics = [{"type": "latency", "attributes": {"latency": 20, "jitter": 10}},
                  {"type": "slicer", "attributes": {"average_size": 7, "size_variation": 3, "delay": 100}},
                  {"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 50}},
                  {"type": "latency", "name": "up_lat", "stream": "upstream", "attributes": {"latency": 15}}]
        for round_ in range(6):
            for t in toxics:
                self.assertEqual(call(self.api + "/proxies/db/toxics", "POST", t)[0], 200)
            time.sleep(0.05)
            self.assertEqual(call(self.api + "/proxies/db/toxics/latency_downstream", "PATCH",
                                  {"attributes": {"latency": 5 * round_}})[0], 200)
            time.sleep(0.05)
            self.assertEqual(call(self.api + "/reset", "POST")[0], 204)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(errors, [])
        self.assertTrue(all(r > 0 for r in rounds), rounds)
        self.assertTrue(self.fl.alive())


if __name__ == "__main__":
    unittest.main()


class TtlOnOpenConnectionsTest(unittest.TestCase):

    def test_a_toxic_past_its_ttl_is_taken_off_the_open_connection_that_waits_on_it(self):
        echo = EchoServer()
        self.addCleanup(echo.close)
        fl = started_faultline(self, f'local db = proxy {{ name = "db", listen = "127.0.0.1:0", '
                                     f'upstream = "127.0.0.1:{echo.port}" }}\n'
                                     'db:toxic { name = "stall", type = "latency", latency = 60000, ttl = 1 }\n')
        c = connect(fl.addr("db"), timeout=15)
        self.addCleanup(c.close)
        c.sendall(b"waiting")
        # held for a minute, but the ttl (1 s after the start) takes the toxic off this connection
        self.assertEqual(recv_exactly(c, 7, timeout=10), b"waiting")
        self.assertLess(echo_round_trip(c), 1.0)
        wait_until(lambda: "its ttl of 1 s is over" in fl.stderr_text(), timeout=5, message="the log line")
