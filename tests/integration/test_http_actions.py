"""Every action on an http proxy as curl (and a raw socket, where timing matters) sees it
(SPEC §2.3, notes/http_behaviour.md). One faultline serves the class: each action has its own
path, and the upstream routes on the path's first segment (/bytes/truncate is /bytes)."""

import hashlib
import json
import os
import tempfile
import time
import unittest

from faultline_testlib import (Faultline, HttpReader, check_sanitizers, connect, curl,
                               http_exchange, http_proxy, http_request, recv_until_closed, wait_until)
from http_upstream import HttpUpstream, payload, sse_event

RULES = r'''
local function on(path, action) p:rule { name = path:sub(2):gsub("/", "-"), match = { path = path }, action = action } end
on("/echo/respond", http.respond(503, { headers = { ["x-a"] = "b", ["retry-after"] = "7" }, body = "down for now" }))
on("/echo/respond-json", http.respond(400, { json = { error = { message = "bad", code = json.null }, n = 3 } }))
on("/echo/rate-limit", openai_api.rate_limit { retry_after = 0.2 })
on("/echo/delay", delay(300))
on("/echo/jitter", delay { ms = 300, jitter = 100 })
on("/echo/hang-ms", hang { ms = 300 })
on("/echo/hang", hang())
on("/echo/drop", drop())
on("/echo/reset", reset())
on("/echo/drop-after-forward", drop { after_forward = true })
on("/echo/delay-response", http.delay_response(300))
on("/bytes/truncate", http.truncate { bytes = 1000 })
on("/bytes/truncate-chunked", http.truncate { bytes = 1000 })
on("/sse/cut", http.sse_cut { after_events = 2 })
on("/sse/cut-together", http.sse_cut { after_events = 2 })
on("/sse/delay", http.sse_delay { ms = 150 })
on("/sse/delay-together", http.sse_delay { ms = 150 })
on("/bytes/throttle", http.throttle { bytes_per_second = 1000 })
on("/bytes/sse-cut-on-non-stream", http.sse_cut { after_events = 1 })
'''


class HttpActionsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream()
        cls.fl = Faultline(http_proxy("p", cls.up.port) + RULES)
        try:
            cls.fl.start()
        except BaseException:
            cls.up.close()
            raise
        host, port = cls.fl.addr("p")
        cls.base = f"http://{host}:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.fl.close()
        check_sanitizers(cls.fl)
        cls.up.close()

    def tearDown(self):
        # whatever an action did to its connection, the proxy goes on serving others
        r = http_exchange(self.fl.addr("p"), http_request("GET", "/echo/after-each"))
        self.assertEqual(r.status, 200, f"the proxy stopped serving: {r}")
        self.assertTrue(self.fl.alive(), self.fl.stderr_text())

    def upstream_got(self, path):
        return [r for r in self.up.requests if r["path"] == path]

    # ---------------------------------------------------------------- answered by faultline

    def test_respond_sends_the_status_headers_and_body_and_nothing_goes_upstream(self):
        r = curl(f"{self.base}/echo/respond")
        self.assertEqual((r.exit, r.status, r.body), (0, 503, b"down for now"), r)
        self.assertEqual(r.header("x-a"), "b")
        self.assertEqual(r.header("retry-after"), "7")
        self.assertEqual(r.header("content-length"), "12")
        self.assertEqual(self.upstream_got("/echo/respond"), [])

    def test_respond_with_json_sends_compact_json_and_keeps_the_connection(self):
        r = curl(f"{self.base}/echo/respond-json")
        self.assertEqual((r.exit, r.status), (0, 400), r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.json(), {"error": {"message": "bad", "code": None}, "n": 3})
        with connect(self.fl.addr("p")) as s:
            reader = HttpReader(s)
            for _ in range(3):
                s.sendall(http_request("GET", "/echo/respond-json"))
                self.assertEqual(reader.response().status, 400)
            s.sendall(http_request("GET", "/echo/plain"))
            self.assertEqual(reader.response().status, 200, "keep-alive did not go on after a respond")

    def test_openai_rate_limit_is_a_429_with_the_api_headers_and_error_body(self):
        r = curl(f"{self.base}/echo/rate-limit", "-X", "POST", "-d", '{"model":"gpt-4o-mini"}')
        self.assertEqual((r.exit, r.status), (0, 429), r)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(r.header("retry-after-ms"), "200")
        self.assertEqual(r.header("x-ratelimit-limit-requests"), "500")
        self.assertEqual(r.header("x-ratelimit-remaining-requests"), "0")
        self.assertEqual(r.header("x-ratelimit-reset-requests"), "200ms")
        self.assertEqual(r.header("x-ratelimit-limit-tokens"), "200000")
        self.assertEqual(r.header("x-ratelimit-remaining-tokens"), "200000")
        self.assertEqual(r.header("x-ratelimit-reset-tokens"), "0s")
        self.assertRegex(r.header("x-request-id", ""), r"^req_[0-9a-f]{32}$")
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        err = r.json()["error"]
        self.assertEqual(sorted(err), ["code", "message", "param", "type"])
        self.assertEqual((err["type"], err["code"], err["param"]), ("requests", "rate_limit_exceeded", None))
        self.assertIn("Rate limit reached", err["message"])
        self.assertEqual(self.upstream_got("/echo/rate-limit"), [])

    # ---------------------------------------------------------------- before forwarding

    def test_delay_forwards_the_request_after_300_ms(self):
        t0 = time.monotonic()
        r = curl(f"{self.base}/echo/delay")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertGreaterEqual(r.elapsed, 0.3, r)
        got = self.upstream_got("/echo/delay")
        self.assertEqual(len(got), 1)
        self.assertGreaterEqual(got[0]["head_at"] - t0, 0.3, "the request went upstream before the delay")

    def test_delay_with_jitter_stays_above_ms_minus_jitter(self):
        for _ in range(3):
            r = curl(f"{self.base}/echo/jitter")
            self.assertEqual((r.exit, r.status), (0, 200), r)
            self.assertGreaterEqual(r.elapsed, 0.2, r)

    def test_hang_with_ms_closes_without_a_response_after_300_ms(self):
        r = curl(f"{self.base}/echo/hang-ms")
        self.assertEqual(r.exit, 52, r)  # empty reply from server
        self.assertGreaterEqual(r.elapsed, 0.3, r)
        self.assertEqual(self.upstream_got("/echo/hang-ms"), [])

    def test_hang_forever_times_the_client_out_and_nothing_goes_upstream(self):
        r = curl(f"{self.base}/echo/hang", "--max-time", "1")
        self.assertEqual(r.exit, 28, r)  # operation timed out
        self.assertGreaterEqual(r.elapsed, 1.0, r)
        self.assertEqual(self.upstream_got("/echo/hang"), [])

    def test_drop_closes_without_a_response_and_nothing_goes_upstream(self):
        r = curl(f"{self.base}/echo/drop")
        self.assertEqual(r.exit, 52, r)
        self.assertEqual(self.upstream_got("/echo/drop"), [])

    def test_reset_resets_the_client_connection(self):
        r = curl(f"{self.base}/echo/reset")
        self.assertEqual(r.exit, 56, r)  # failure receiving: connection reset
        self.assertEqual(self.upstream_got("/echo/reset"), [])

    def test_drop_after_forward_delivers_the_request_but_not_the_response(self):
        r = curl(f"{self.base}/echo/drop-after-forward", "-X", "POST", "--data-binary", "COMMIT;")
        self.assertEqual(r.exit, 52, r)
        self.assertEqual(r.body, b"")
        got = wait_until(lambda: self.upstream_got("/echo/drop-after-forward"), timeout=5,
                         message="the request to reach the upstream")
        self.assertEqual(got[0]["body"], b"COMMIT;", "the upstream did not get the whole request")

    # ---------------------------------------------------------------- on the response

    def test_delay_response_holds_the_response_300_ms_after_the_upstream_answered(self):
        t0 = time.monotonic()
        r = curl(f"{self.base}/echo/delay-response")
        t_end = t0 + r.elapsed
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(json.loads(r.body)["target"], "/echo/delay-response")
        self.assertGreaterEqual(r.elapsed, 0.3, r)
        got = self.upstream_got("/echo/delay-response")
        self.assertEqual(len(got), 1)
        self.assertGreaterEqual(t_end - got[0]["at"], 0.29, "the response was not held after the upstream answered")

    def test_truncate_cuts_a_content_length_body_after_exactly_n_bytes(self):
        r = curl(f"{self.base}/bytes/truncate?n=10000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.exit, 18, r)  # partial file
        self.assertEqual(r.header("content-length"), "10000")
        self.assertEqual(len(r.body), 1000)
        self.assertEqual(r.body, payload(10000)[:1000])

    def test_truncate_cuts_a_chunked_body_after_exactly_n_bytes(self):
        r = curl(f"{self.base}/bytes/truncate-chunked?n=10000&chunked=1")
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.exit, 0, r)
        self.assertEqual(len(r.body), 1000, r)
        self.assertEqual(r.body, payload(10000)[:1000])

    def test_sse_cut_delivers_exactly_two_events_then_an_error(self):
        r = curl(f"{self.base}/sse/cut?events=6", "-N")
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.exit, 0, f"a cut stream ended cleanly: {r}")
        self.assertEqual(r.body, sse_event(1) + sse_event(2))

    def test_sse_cut_counts_events_that_arrive_together_in_one_content_length_body(self):
        r = curl(f"{self.base}/sse/cut-together?events=6&length=1", "-N")
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.exit, 0, f"a cut stream ended cleanly: {r}")
        self.assertEqual(r.body, sse_event(1) + sse_event(2))

    def test_sse_cut_on_a_response_that_is_not_an_event_stream_passes(self):
        r = curl(f"{self.base}/bytes/sse-cut-on-non-stream?n=5000")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.body, payload(5000))

    def test_sse_delay_spaces_events_at_least_150_ms_apart(self):
        r = curl(f"{self.base}/sse/delay?events=3", "-N")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.body, sse_event(1) + sse_event(2) + sse_event(3))
        self.assertGreaterEqual(r.elapsed, 0.45, r)
        with connect(self.fl.addr("p")) as s:
            t0 = time.monotonic()
            s.sendall(http_request("GET", "/sse/delay?events=4"))
            reader = HttpReader(s)
            status, _ = reader.head()
            self.assertEqual(status, 200)
            stream, arrivals = b"", []
            while True:
                data = reader.chunk()
                if not data:
                    break
                stream += data
                arrivals += [time.monotonic() - t0] * (stream.count(b"\n\n") - len(arrivals))
        self.assertEqual(stream, b"".join(sse_event(i) for i in range(1, 5)))
        for k, t in enumerate(arrivals, start=1):
            self.assertGreaterEqual(t, 0.15 * k - 0.005,
                                    f"event {k} came {t:.3f}s after the request: sooner than {k} x 150 ms "
                                    f"(all: {arrivals})")

    def test_sse_delay_spaces_events_that_arrive_together_in_one_content_length_body(self):
        r = curl(f"{self.base}/sse/delay-together?events=3&length=1", "-N")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.body, sse_event(1) + sse_event(2) + sse_event(3))
        self.assertGreaterEqual(r.elapsed, 0.45, r)

    def test_throttle_delivers_2000_bytes_at_1000_bytes_per_second(self):
        r = curl(f"{self.base}/bytes/throttle?n=2000")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.body, payload(2000))
        self.assertGreaterEqual(r.elapsed, 1.8, r)


    # ---------------------------------------------------------------- actions meeting each other

    def test_drop_after_forward_on_a_3_mib_upload_forwards_all_of_it_before_closing(self):
        data = os.urandom(3 * 1024 * 1024)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            r = curl(f"{self.base}/echo/drop-after-forward?big=1", "-X", "POST", "--data-binary", "@" + f.name)
        self.assertEqual((r.exit, r.body), (52, b""), r)
        got = wait_until(lambda: [g for g in self.upstream_got("/echo/drop-after-forward") if len(g["body"]) > 100],
                         timeout=5, message="the upload to reach the upstream")
        self.assertEqual((len(got[0]["body"]), got[0]["body_sha256"]),
                         (len(data), hashlib.sha256(data).hexdigest()),
                         "the client was closed before its whole request went upstream")

    def test_pipelined_delayed_answered_and_forwarded_responses_keep_their_order(self):
        # The first response is held 300 ms, the second made by faultline, the third forwarded:
        # neither of the later ones may overtake the held one.
        with connect(self.fl.addr("p")) as s:
            t0 = time.monotonic()
            s.sendall(http_request("GET", "/echo/delay-response?pipelined=1") + http_request("GET", "/echo/respond")
                      + http_request("GET", "/echo/third"))
            reader = HttpReader(s)
            first = reader.response()
            t_first = time.monotonic() - t0
            second, third = reader.response(), reader.response()
        self.assertEqual((first.status, first.json()["target"]), (200, "/echo/delay-response?pipelined=1"))
        self.assertGreaterEqual(t_first, 0.29)
        self.assertEqual((second.status, second.body), (503, b"down for now"))
        self.assertEqual((third.status, third.json()["target"]), (200, "/echo/third"))

    def test_a_throttled_response_to_a_connection_close_request_arrives_whole_before_the_close(self):
        with connect(self.fl.addr("p")) as s:
            s.sendall(http_request("GET", "/bytes/throttle?n=600", [("Connection", "close")]))
            raw, how, _ = recv_until_closed(s, timeout=5.0)
        self.assertEqual(how, "eof", raw[:200])
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), raw[:200])
        self.assertEqual(body, payload(600), "the connection closed before the paced body had gone out")


if __name__ == "__main__":
    unittest.main()
