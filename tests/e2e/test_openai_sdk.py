"""The official openai SDK (npm) through faultline's TCP proxy, against a stand-in API on loopback:
what an application sees when the link to the API is slow, cut mid-stream, or stalls."""
import json
import os
import subprocess
import unittest

from fake_openai import FakeOpenAI
from faultline_testlib import Faultline, tcp_proxy, toxic

NODE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "node"))


def chat(base_url, **env):
    """Runs one chat completion through the SDK; returns what the application saw."""
    full_env = dict(os.environ, BASE_URL=base_url, **{k: str(v) for k, v in env.items()})
    r = subprocess.run(["node", os.path.join(NODE_DIR, "chat.mjs")], capture_output=True, text=True,
                       timeout=60, env=full_env, cwd=NODE_DIR)
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"chat.mjs failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class OpenAiSdkThroughTcpProxyTest(unittest.TestCase):
    def setUp(self):
        self.api = FakeOpenAI(chunks=["Hel", "lo", " wor", "ld", "!"])
        self.api.__enter__()
        self.addCleanup(self.api.__exit__, None, None, None)

    def proxy_url(self, fl):
        host, port = fl.addr("api")
        return f"http://{host}:{port}/v1"

    def test_plain_and_streamed_completions_pass_through_unchanged(self):
        with Faultline(tcp_proxy("api", self.api.port)) as fl:
            plain = chat(self.proxy_url(fl))
            streamed = chat(self.proxy_url(fl), STREAM=1)
        self.assertTrue(plain["ok"], plain)
        self.assertEqual(plain["content"], "Hello from the fake API")
        self.assertTrue(streamed["ok"], streamed)
        self.assertEqual(streamed["content"], "Hello world!")
        self.assertEqual(streamed["chunks"], 5)

    def test_downstream_latency_slows_the_sdk_call_by_at_least_the_latency(self):
        scenario = tcp_proxy("api", self.api.port, var="p") + toxic("p", "latency", latency=300)
        with Faultline(scenario) as fl:
            result = chat(self.proxy_url(fl))
        self.assertTrue(result["ok"], result)
        self.assertGreaterEqual(result["elapsed_ms"], 300)

    def test_a_stream_cut_by_limit_data_surfaces_as_an_error_after_part_of_the_answer(self):
        # Enough bytes for the response head and a couple of events, not for the whole stream.
        scenario = tcp_proxy("api", self.api.port, var="p") + toxic("p", "limit_data", bytes=630)
        with Faultline(scenario) as fl:
            result = chat(self.proxy_url(fl), STREAM=1, MAX_RETRIES=0)
        self.assertFalse(result["ok"], result)
        self.assertIn("error", result)
        # The bytes are deterministic (same head, same events), so the cut lands after exactly 2 chunks.
        self.assertEqual(result["chunks"], 2, result)
        self.assertEqual(result["content"], "Hello", result)

    def test_a_stalled_link_hits_the_sdk_timeout(self):
        scenario = tcp_proxy("api", self.api.port, var="p") + toxic("p", "timeout", timeout=0)
        with Faultline(scenario) as fl:
            result = chat(self.proxy_url(fl), TIMEOUT_MS=500, MAX_RETRIES=0)
        self.assertFalse(result["ok"], result)
        self.assertEqual(result["error"]["name"], "APIConnectionTimeoutError", result)
        self.assertGreaterEqual(result["elapsed_ms"], 500)


if __name__ == "__main__":
    unittest.main()
