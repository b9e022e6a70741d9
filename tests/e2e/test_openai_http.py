"""The official openai SDK (npm) through faultline's http proxy (protocol = "http"), with message-level
rules in front of a stand-in API on loopback, and against faultline's own mock upstream: what an
application sees on 429s with retry-after, 5xx and 4xx errors, a stream cut after N events, a hung
request, and offline runs with no API at all."""
import os
import re
import unittest

from fake_openai import FakeOpenAI
from faultline_testlib import Faultline, read_journal, wait_until
from sdk_client import sdk_chat

MOCK_CONTENT = "This is a mock response from faultline."


def http_proxy(name, upstream, var=None, listen="127.0.0.1:0", extra=""):
    """Lua that declares one http proxy bound to local `var` (default: the name)."""
    var = var or name.replace("-", "_")
    return (f'local {var} = proxy {{ name = "{name}", listen = "{listen}", upstream = "{upstream}", '
            f'protocol = "http"{extra} }}\n')


def rule(var, name, action, match='{ method = "POST", path = "/v1/chat/completions" }', schedule=""):
    sched = f", {schedule}" if schedule else ""
    return f'{var}:rule {{ name = "{name}", match = {match}{sched}, action = {action} }}\n'


def base_url(fl, name="api", scheme="http", host=None):
    h, port = fl.addr(name)
    return f"{scheme}://{host or h}:{port}/v1"


def stop_and_read_journal(test, fl, path="j.jsonl"):
    """Stops faultline (SIGTERM, expecting exit 0) and returns its journal's lines."""
    journal = os.path.join(fl.tmpdir, path)
    code = fl.stop()
    test.assertEqual(code, 0, fl.stderr_text())
    return read_journal(journal)


class OpenAiSdkThroughHttpProxyTest(unittest.TestCase):
    def setUp(self):
        self.api = FakeOpenAI(chunks=["Hel", "lo", " wor", "ld", "!"])
        self.api.__enter__()
        self.addCleanup(self.api.__exit__, None, None, None)

    def start(self, rules=""):
        fl = Faultline(http_proxy("api", f"http://127.0.0.1:{self.api.port}") + rules,
                       "--journal", "{tmp}/j.jsonl")
        fl.start()
        self.addCleanup(fl.close)
        return fl

    def api_chat_requests(self):
        return [r for r in self.api.requests if r["path"].startswith("/v1/chat/completions")]

    def test_plain_and_streamed_completions_pass_through_unchanged(self):
        fl = self.start()
        plain = sdk_chat(base_url(fl))
        streamed = sdk_chat(base_url(fl), STREAM=1)
        self.assertTrue(plain["ok"], plain)
        self.assertEqual(plain["content"], "Hello from the fake API")
        self.assertTrue(streamed["ok"], streamed)
        self.assertEqual(streamed["content"], "Hello world!")
        self.assertEqual(streamed["chunks"], 5)
        self.assertEqual(len(self.api_chat_requests()), 2)
        self.assertEqual(stop_and_read_journal(self, fl), [])

    def test_the_sdk_retries_through_two_429s_waiting_as_retry_after_ms_says(self):
        fl = self.start(rule("api", "throttle", "openai_api.rate_limit { retry_after = 0.5 }",
                             schedule="first = 2"))
        result = sdk_chat(base_url(fl))  # the SDK's default max_retries (2)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "Hello from the fake API")
        self.assertEqual(result["attempts"], 3, result)
        # Two waits of retry-after-ms = 500 each; a loose lower bound only.
        self.assertGreaterEqual(result["elapsed_ms"], 1000, result)
        self.assertEqual(len(self.api_chat_requests()), 1, self.api.requests)

        journal = stop_and_read_journal(self, fl)
        self.assertEqual(len(journal), 2, journal)
        for i, line in enumerate(journal, start=1):
            self.assertEqual(line["rule"], "throttle", line)
            self.assertEqual(line["proxy"], "api", line)
            self.assertEqual(line["protocol"], "http", line)
            self.assertEqual(line["match"], i, line)
            self.assertEqual(line["detail"]["status"], 429, line)
            self.assertEqual(line["message"], {"method": "POST", "path": "/v1/chat/completions"}, line)
        self.assertRegex(fl.stderr_text(), r"rule 'throttle' \(proxy 'api'\): matched 3, fired 2")

    def assert_api_error(self, action, max_retries, name, status, code, type_, attempts=1):
        fl = self.start(rule("api", "fail", action))
        env = {} if max_retries is None else {"MAX_RETRIES": max_retries}
        result = sdk_chat(base_url(fl), **env)
        self.assertFalse(result["ok"], result)
        err = result["error"]
        self.assertEqual(err["name"], name, result)
        self.assertEqual(err["status"], status, result)
        self.assertEqual(err["code"], code, result)
        self.assertEqual(err["type"], type_, result)
        self.assertRegex(err["request_id"] or "", r"^req_[0-9a-f]{32}$", result)
        self.assertEqual(result["attempts"], attempts, result)
        self.assertEqual(self.api_chat_requests(), [], "answered by faultline, nothing went upstream")
        journal = stop_and_read_journal(self, fl)
        self.assertEqual([(j["rule"], j["detail"]["status"]) for j in journal], [("fail", status)] * attempts)

    def test_server_error_surfaces_as_an_internal_server_error(self):
        self.assert_api_error("openai_api.server_error()", 0, "InternalServerError", 500, None, "server_error")

    def test_overloaded_surfaces_as_a_503_with_its_code(self):
        self.assert_api_error("openai_api.overloaded()", 0, "InternalServerError", 503,
                              "server_is_overloaded", "service_unavailable_error")

    def test_invalid_api_key_is_an_authentication_error_and_not_retried(self):
        self.assert_api_error("openai_api.invalid_api_key()", None, "AuthenticationError", 401,
                              "invalid_api_key", "invalid_request_error")

    def test_context_length_exceeded_is_a_bad_request_and_not_retried(self):
        self.assert_api_error("openai_api.context_length_exceeded()", None, "BadRequestError", 400,
                              "context_length_exceeded", "invalid_request_error")

    def test_a_stream_cut_after_two_events_delivers_two_chunks_then_an_error(self):
        fl = self.start(rule("api", "cut", "http.sse_cut { after_events = 2 }",
                             match='{ path = "/v1/chat/completions", json = { stream = true } }'))
        result = sdk_chat(base_url(fl), STREAM=1)
        self.assertFalse(result["ok"], f"a cut stream must not end cleanly: {result}")
        self.assertIn("error", result)
        self.assertEqual(result["chunks"], 2, result)
        self.assertEqual(result["content"], "Hello", result)
        self.assertEqual(result["attempts"], 1, "the SDK does not retry a stream that already started")
        self.assertEqual(len(self.api_chat_requests()), 1)
        journal = stop_and_read_journal(self, fl)
        self.assertEqual([(j["rule"], j["match"]) for j in journal], [("cut", 1)], journal)

    def test_a_stream_cut_counts_events_even_when_they_arrive_together(self):
        # All seven events in one chunk and one write: the cut still falls after the second event.
        self.api.coalesce = True
        fl = self.start(rule("api", "cut", "http.sse_cut { after_events = 2 }",
                             match='{ path = "/v1/chat/completions", json = { stream = true } }'))
        result = sdk_chat(base_url(fl), STREAM=1)
        self.assertFalse(result["ok"], f"a cut stream must not end cleanly: {result}")
        self.assertEqual(result["chunks"], 2, result)
        self.assertEqual(result["content"], "Hello", result)

    def test_a_hung_request_times_out_and_the_retry_succeeds(self):
        fl = self.start(rule("api", "hang-first", "hang()", schedule="first = 1"))
        result = sdk_chat(base_url(fl), TIMEOUT_MS=1000, MAX_RETRIES=1)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "Hello from the fake API")
        self.assertEqual(result["attempts"], 2, result)
        self.assertGreaterEqual(result["elapsed_ms"], 1000, result)
        self.assertEqual(len(self.api_chat_requests()), 1, "the hung request never went upstream")
        journal = stop_and_read_journal(self, fl)
        self.assertEqual([(j["rule"], j["match"]) for j in journal], [("hang-first", 1)], journal)


class OpenAiSdkAgainstTheMockUpstreamTest(unittest.TestCase):
    """upstream = "mock": no API server at all."""

    def test_plain_and_streamed_completions_come_from_the_mock(self):
        with Faultline(http_proxy("api", "mock")) as fl:
            plain = sdk_chat(base_url(fl))
            streamed = sdk_chat(base_url(fl), STREAM=1)
        self.assertTrue(plain["ok"], plain)
        self.assertEqual(plain["content"], MOCK_CONTENT)
        self.assertTrue(streamed["ok"], streamed)
        self.assertEqual(streamed["content"], MOCK_CONTENT)
        self.assertEqual(streamed["chunks"], 6, streamed)

    def test_rules_act_on_mock_answers_too(self):
        scenario = (http_proxy("api", "mock")
                    + rule("api", "throttle", "openai_api.rate_limit { retry_after = 0.1 }",
                           schedule="first = 1")
                    + rule("api", "cut", "http.sse_cut { after_events = 3 }",
                           match='{ path = "/v1/chat/completions", json = { stream = true } }'))
        with Faultline(scenario) as fl:
            plain = sdk_chat(base_url(fl))
            streamed = sdk_chat(base_url(fl), STREAM=1)
        self.assertTrue(plain["ok"], plain)
        self.assertEqual(plain["attempts"], 2, plain)
        self.assertEqual(plain["content"], MOCK_CONTENT)
        self.assertFalse(streamed["ok"], streamed)
        self.assertEqual(streamed["chunks"], 3, streamed)
        self.assertEqual(streamed["content"], "This is a mock ", streamed)


if __name__ == "__main__":
    unittest.main()
