"""A real redis-server behind a tcp proxy, driven by redis-cli, redis-py and redis-benchmark."""

import subprocess
import time
import unittest

from faultline_testlib import Faultline, RedisServer, tcp_proxy, toxic

import redis  # after faultline_testlib, which makes Debian's python3-redis importable


class RedisThroughProxyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)

    def start_proxy(self, toxics=""):
        fl = Faultline(tcp_proxy("cache", self.redis.port) + toxics)
        self.addCleanup(fl.close)
        fl.start()
        return fl

    def client(self, addr):
        c = redis.Redis(host=addr[0], port=addr[1], socket_timeout=10, socket_connect_timeout=10)
        self.addCleanup(c.close)
        return c

    def redis_cli(self, addr, *args):
        return subprocess.run(["redis-cli", "-h", addr[0], "-p", str(addr[1]), *args],
                              capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)

    def test_redis_cli_set_and_get_go_through_the_proxy_to_the_real_server(self):
        fl = self.start_proxy()
        out = self.redis_cli(fl.addr("cache"), "SET", "e2e:cli", "hello through faultline")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "OK"), out.stderr)
        out = self.redis_cli(fl.addr("cache"), "GET", "e2e:cli")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "hello through faultline"), out.stderr)
        direct = self.client(self.redis.addr)
        self.assertEqual(direct.get("e2e:cli"), b"hello through faultline", "the write never reached redis")

    def test_redis_py_commands_and_a_pipeline_work_through_the_proxy(self):
        fl = self.start_proxy()
        c = self.client(fl.addr("cache"))
        self.assertTrue(c.ping())
        big = bytes(range(256)) * 4096  # 1 MiB, every byte value
        c.set("e2e:big", big)
        self.assertEqual(c.get("e2e:big"), big)
        c.delete("e2e:n")
        pipe = c.pipeline(transaction=False)
        for _ in range(100):
            pipe.incr("e2e:n")
        self.assertEqual(pipe.execute(), list(range(1, 101)), "pipelined replies out of order")
        self.assertEqual(self.client(self.redis.addr).get("e2e:n"), b"100")

    def test_redis_benchmark_completes_through_the_proxy(self):
        fl = self.start_proxy()
        host, port = fl.addr("cache")
        out = subprocess.run(["redis-benchmark", "-h", host, "-p", str(port), "-q", "-n", "2000",
                              "-c", "20", "-t", "set,get"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        text = out.stdout.replace("\r", "\n")
        self.assertRegex(text, r"SET: [\d.]+ requests per second")
        self.assertRegex(text, r"GET: [\d.]+ requests per second")
        self.assertTrue(fl.alive())

    def test_a_50_ms_latency_toxic_makes_a_get_take_at_least_50_ms(self):
        plain = self.start_proxy()
        fl = self.start_proxy(toxic("cache", "latency", "downstream", latency=50))
        fast, slow = self.client(plain.addr("cache")), self.client(fl.addr("cache"))
        fast.set("e2e:slow", "v")
        self.assertTrue(slow.ping())  # connected, so the GET below times one round trip

        def timed_get(c):
            t0 = time.monotonic()
            value = c.get("e2e:slow")
            return (time.monotonic() - t0) * 1000.0, value

        slow_ms, value = timed_get(slow)
        self.assertEqual(value, b"v")
        self.assertGreaterEqual(slow_ms, 50, f"GET took {slow_ms:.1f} ms")
        self.assertLess(slow_ms, 150, f"GET took {slow_ms:.1f} ms")
        fast_ms, _ = timed_get(fast)
        self.assertLess(fast_ms, 40, f"GET without the toxic took {fast_ms:.1f} ms")


if __name__ == "__main__":
    unittest.main(verbosity=2)
