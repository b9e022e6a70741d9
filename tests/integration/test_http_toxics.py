"""Toxics on an http proxy, alone and together with the response actions on the same path: every
body arrives whole and unchanged (checksummed), and the proxy lives on. A toxic that passes bytes
straight through once re-entered the client write path from inside a push and corrupted bodies."""

import unittest

from faultline_testlib import (Faultline, HttpReader, check_sanitizers, connect, curl, http_proxy,
                               http_request, sha256, toxic)
from http_upstream import HttpUpstream, payload

SIZE = 300 * 1000

# Downstream toxics that let every byte through (SPEC §2.4): each gets its own proxy.
TOXICS = {
    "slow-close": dict(type_="slow_close", delay=20),
    "limit-data": dict(type_="limit_data", bytes=50_000_000),
    "slicer": dict(type_="slicer", average_size=1000, size_variation=300, delay=0),
    "latency": dict(type_="latency", latency=0),
    "latency-20": dict(type_="latency", latency=20, jitter=5),
    "bandwidth": dict(type_="bandwidth", rate=20_000),
}

# The response actions that shape what goes to the client, by path.
RULES = '''
{var}:rule {{ match = {{ path = "/bytes/throttle" }}, action = http.throttle {{ bytes_per_second = 3000000 }} }}
{var}:rule {{ match = {{ path = "/bytes/delay-response" }}, action = http.delay_response(30) }}
{var}:rule {{ match = {{ path = "/bytes/delay" }}, action = delay(10) }}
{var}:rule {{ match = {{ path = "/bytes/truncate" }}, action = http.truncate {{ bytes = 100000 }} }}
'''


class HttpToxicsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream()
        scenario = ""
        for name, attrs in TOXICS.items():
            var = name.replace("-", "_")
            attrs = dict(attrs)
            scenario += http_proxy(name, cls.up.port, var=var)
            scenario += toxic(var, attrs.pop("type_"), "downstream", **attrs)
            scenario += RULES.format(var=var)
        cls.fl = Faultline(scenario)
        try:
            cls.fl.start()
        except BaseException:
            cls.up.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.fl.close()
        check_sanitizers(cls.fl)
        cls.up.close()

    def download(self, proxy, path, *args):
        host, port = self.fl.addr(proxy)
        return curl(f"http://{host}:{port}{path}?n={SIZE}", *args, max_time=20)

    def check_matrix(self, path, chunked=False):
        for name in TOXICS:
            with self.subTest(toxic=name, path=path, chunked=chunked):
                r = self.download(name, path, *(["-G", "-d", "chunked=1"] if chunked else []))
                self.assertEqual((r.exit, r.status), (0, 200), r.stderr)
                self.assertEqual(len(r.body), SIZE)
                self.assertEqual(sha256(r.body), sha256(payload(SIZE)), "the body was changed on its way")
                self.assertTrue(self.fl.alive(), self.fl.stderr_text()[-2000:])

    def test_every_toxic_alone_passes_the_body_unchanged(self):
        self.check_matrix("/bytes/plain")

    def test_every_toxic_with_throttle_passes_the_body_unchanged(self):
        self.check_matrix("/bytes/throttle")

    def test_every_toxic_with_throttle_on_a_chunked_body(self):
        self.check_matrix("/bytes/throttle", chunked=True)

    def test_every_toxic_with_delay_response_passes_the_body_unchanged(self):
        self.check_matrix("/bytes/delay-response")

    def test_every_toxic_with_delay_passes_the_body_unchanged(self):
        self.check_matrix("/bytes/delay")

    def test_every_toxic_with_truncate_cuts_at_the_same_byte(self):
        for name in TOXICS:
            with self.subTest(toxic=name):
                r = self.download(name, "/bytes/truncate")
                self.assertEqual(r.body, payload(SIZE)[:100000], f"curl exit {r.exit}: {r.stderr}")
                self.assertTrue(self.fl.alive(), self.fl.stderr_text()[-2000:])

    def test_keep_alive_requests_after_a_throttled_one_stay_intact(self):
        for name in TOXICS:
            with self.subTest(toxic=name):
                with connect(self.fl.addr(name), timeout=20) as s:
                    reader = HttpReader(s, timeout=20)
                    for path in ("/bytes/throttle", "/bytes/plain", "/bytes/delay-response"):
                        s.sendall(http_request("GET", f"{path}?n={SIZE}"))
                        r = reader.response()
                        self.assertEqual(r.status, 200, path)
                        self.assertEqual(sha256(r.body), sha256(payload(SIZE)), f"{path}: body changed")

class HttpUpstreamToxicRetryTest(unittest.TestCase):
    """Bytes held by an upstream toxic belong to the upstream connection they were sent on."""

    def test_a_request_retried_on_a_fresh_connection_arrives_once(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        fl = Faultline(http_proxy("p", up.port) + toxic("p", "latency", "upstream", latency=150))
        self.addCleanup(fl.close)
        fl.start()
        with connect(fl.addr("p"), timeout=10) as s:
            # Two pipelined requests: the second goes out on the kept-alive upstream connection as
            # soon as the first is answered, is held by the latency toxic, and that connection is
            # closed by the upstream meanwhile (then=close), so it is sent again on a fresh one.
            s.sendall(http_request("GET", "/echo/one?then=close") + http_request("GET", "/echo/two"))
            reader = HttpReader(s, timeout=10)
            self.assertEqual(reader.response().json()["target"], "/echo/one?then=close")
            self.assertEqual(reader.response().json()["target"], "/echo/two")
            s.sendall(http_request("GET", "/echo/three"))
            self.assertEqual(reader.response().json()["target"], "/echo/three",
                             "the answer to a duplicate of /echo/two came back for /echo/three")
        self.assertEqual([r["target"] for r in up.requests],
                         ["/echo/one?then=close", "/echo/two", "/echo/three"])
        check_sanitizers(fl)


if __name__ == "__main__":
    unittest.main()
