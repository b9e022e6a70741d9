"""protocol = "http" proxies forwarding plain traffic: bodies both ways in both framings, the
rewritten head, HTTP/1.0, keep-alive, pipelining, 100-continue, HEAD and Upgrade
(notes/http_behaviour.md)."""

import json
import os
import socket
import tempfile
import unittest

from faultline_testlib import (Faultline, HttpReader, check_sanitizers, chunked, connect, curl,
                               http_proxy, http_request, recv_exactly, sha256, started_faultline)
from http_upstream import HttpUpstream, payload

MiB = 1 << 20


class HttpProxyTest(unittest.TestCase):

    def start(self, rules="", *args, **proxy_fields):
        self.up = HttpUpstream()
        self.addCleanup(self.up.close)
        fl = started_faultline(self, http_proxy("p", self.up.port, **proxy_fields) + rules, *args)
        self.fl = fl
        host, port = fl.addr("p")
        self.base = f"http://{host}:{port}"
        return fl

    def tmpfile(self, data):
        fd, path = tempfile.mkstemp(prefix="faultline-body-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.addCleanup(os.unlink, path)
        return path

    def echo_of(self, result):
        self.assertEqual(result.status, 200, result)
        return json.loads(result.body)

    # ---------------------------------------------------------------- bodies

    def test_get_with_content_length_download_of_5_mib_arrives_intact(self):
        self.start()
        r = curl(f"{self.base}/bytes?n={5 * MiB}")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.header("content-length"), str(5 * MiB))
        self.assertEqual(len(r.body), 5 * MiB)
        self.assertEqual(sha256(r.body), sha256(payload(5 * MiB)), "the download changed on the way")

    def test_get_with_chunked_download_of_5_mib_arrives_intact_and_chunked(self):
        self.start()
        r = curl(f"{self.base}/bytes?n={5 * MiB}&chunked=1")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(sha256(r.body), sha256(payload(5 * MiB)), "the download changed on the way")

    def test_post_with_content_length_upload_of_5_mib_reaches_the_upstream_intact(self):
        self.start()
        data = os.urandom(5 * MiB)
        r = curl(f"{self.base}/echo", "--data-binary", "@" + self.tmpfile(data),
                 "-H", "Content-Type: application/octet-stream")
        self.assertEqual(r.exit, 0, r)
        echo = self.echo_of(r)
        self.assertEqual((echo["method"], echo["framing"], echo["body_len"]), ("POST", "length", 5 * MiB))
        self.assertEqual(echo["body_sha256"], sha256(data), "the upload changed on the way")

    def test_post_with_chunked_upload_of_5_mib_reaches_the_upstream_intact_and_chunked(self):
        self.start()
        data = os.urandom(5 * MiB)
        r = curl(f"{self.base}/echo", "--data-binary", "@" + self.tmpfile(data),
                 "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream")
        self.assertEqual(r.exit, 0, r)
        echo = self.echo_of(r)
        self.assertEqual((echo["framing"], echo["body_len"]), ("chunked", 5 * MiB))
        self.assertEqual(echo["body_sha256"], sha256(data), "the upload changed on the way")

    def test_a_raw_chunked_post_gets_a_chunked_response_both_intact(self):
        self.start()
        body = os.urandom(50_000)
        with connect(self.fl.addr("p")) as s:
            s.sendall(http_request("POST", "/echo?chunked=1", [("Transfer-Encoding", "chunked")])
                      + chunked(body, 7000))
            resp = HttpReader(s).response()
        self.assertEqual((resp.status, resp.framing), (200, "chunked"), resp)
        echo = resp.json()
        self.assertEqual((echo["framing"], echo["body_sha256"]), ("chunked", sha256(body)))

    # ---------------------------------------------------------------- the forwarded head

    def test_host_is_rewritten_to_the_upstream_and_x_forwarded_for_is_added(self):
        self.start()
        r = curl(f"{self.base}/echo?a=1", "-H", "X-Custom: kept as is")
        self.assertEqual(r.exit, 0, r)
        echo = self.echo_of(r)
        headers = echo["headers"]
        self.assertEqual(echo["target"], "/echo?a=1")
        self.assertEqual([v for k, v in headers if k.lower() == "host"], [f"127.0.0.1:{self.up.port}"])
        self.assertEqual([v for k, v in headers if k.lower() == "x-forwarded-for"], ["127.0.0.1"])
        self.assertIn(["X-Custom", "kept as is"], headers)

    def test_x_forwarded_for_is_appended_to_an_existing_one(self):
        self.start()
        r = curl(f"{self.base}/echo", "-H", "X-Forwarded-For: 10.1.2.3")
        echo = self.echo_of(r)
        self.assertEqual([v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"],
                         ["10.1.2.3, 127.0.0.1"])

    # ---------------------------------------------------------------- connections

    def test_an_http_1_0_client_gets_its_response_and_the_connection_closes(self):
        self.start()
        with connect(self.fl.addr("p")) as s:
            s.sendall(b"GET /echo?v=10 HTTP/1.0\r\nHost: x\r\n\r\n")
            reader = HttpReader(s)
            resp = reader.response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["target"], "/echo?v=10")
            self.assertEqual(reader.closed(), "eof", "the HTTP/1.0 connection stayed open")

    def test_keep_alive_twenty_requests_on_one_connection_are_answered_in_order(self):
        self.start()
        with connect(self.fl.addr("p")) as s:
            reader = HttpReader(s)
            for i in range(20):
                body = f"request {i}".encode() if i % 2 else None
                s.sendall(http_request("POST" if body else "GET", f"/echo?i={i}", body=body))
                resp = reader.response()
                self.assertEqual(resp.status, 200, resp)
                echo = resp.json()
                self.assertEqual(echo["target"], f"/echo?i={i}")
                self.assertEqual(echo["body"], body.decode() if body else "")
        self.assertEqual(self.up.accepted(), 1, "keep-alive was not used upstream")

    def test_ten_pipelined_requests_some_answered_by_a_rule_come_back_in_order_intact(self):
        self.start('p:rule { name = "canned", match = { path = prefix "/canned/" }, '
                   'action = http.respond(203, { headers = { ["x-canned"] = "yes" }, body = "canned!" }) }\n')
        reqs, expect = [], []
        for i in range(10):
            if i in (1, 4, 5, 9):
                reqs.append(http_request("POST" if i == 4 else "GET", f"/canned/{i}",
                                         body=b"dropped body" if i == 4 else None))
                expect.append(("canned", i))
            elif i == 6:
                reqs.append(http_request("POST", f"/echo?i={i}", [("Transfer-Encoding", "chunked")])
                            + chunked(b"z" * 3000, 1000))
                expect.append(("echo", i))
            else:
                reqs.append(http_request("GET", f"/echo?i={i}"))
                expect.append(("echo", i))
        with connect(self.fl.addr("p")) as s:
            s.sendall(b"".join(reqs))
            reader = HttpReader(s)
            for kind, i in expect:
                resp = reader.response()
                if kind == "canned":
                    self.assertEqual((resp.status, resp.body, resp.header("x-canned")),
                                     (203, b"canned!", "yes"), f"response {i}: {resp}")
                else:
                    self.assertEqual(resp.status, 200, f"response {i}: {resp}")
                    echo = resp.json()
                    self.assertEqual(echo["target"], f"/echo?i={i}", f"response {i} out of order")
                    if i == 6:
                        self.assertEqual(echo["body"], "z" * 3000)
            # and the connection still works afterwards
            s.sendall(http_request("GET", "/echo?after=1"))
            self.assertEqual(reader.response().json()["target"], "/echo?after=1")
        self.assertEqual(sorted(r["target"] for r in self.up.requests),
                         sorted([f"/echo?i={i}" for k, i in expect if k == "echo"] + ["/echo?after=1"]),
                         "a canned request went upstream, or a forwarded one did not")

    def test_expect_100_continue_passes_through_to_the_upstream(self):
        self.start()
        data = os.urandom(20_000)
        r = curl(f"{self.base}/echo", "-v", "-H", "Expect: 100-continue",
                 "--data-binary", "@" + self.tmpfile(data))
        self.assertEqual(r.exit, 0, r)
        self.assertIn("HTTP/1.1 100 Continue", r.stderr, "curl saw no 100 Continue")
        echo = self.echo_of(r)
        self.assertEqual(echo["body_sha256"], sha256(data))

    def test_expect_100_continue_with_a_json_rule_is_answered_by_faultline(self):
        self.start('p:rule { name = "json-hit", match = { json = { model = "fault" } }, '
                   'action = http.respond(429, { json = { error = "limited" } }) }\n')
        body_pass = json.dumps({"model": "fine", "pad": "x" * 5000}).encode()
        r = curl(f"{self.base}/echo", "-v", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
                 "--data-binary", "@" + self.tmpfile(body_pass))
        self.assertEqual(r.exit, 0, r)
        self.assertIn("HTTP/1.1 100 Continue", r.stderr, "curl saw no 100 Continue")
        echo = self.echo_of(r)
        self.assertEqual(echo["body_sha256"], sha256(body_pass))
        self.assertNotIn("expect", [k.lower() for k, _ in echo["headers"]],
                         "faultline answered 100 itself but still asked the upstream")
        body_hit = json.dumps({"model": "fault", "pad": "y" * 5000}).encode()
        r = curl(f"{self.base}/echo", "-v", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
                 "--data-binary", "@" + self.tmpfile(body_hit))
        self.assertEqual((r.exit, r.status), (0, 429), r)
        self.assertEqual(r.json(), {"error": "limited"})
        self.assertEqual(self.up.request_count(), 1, "the json rule's request went upstream")

    def test_head_gets_the_head_without_a_body_and_the_connection_goes_on(self):
        self.start()
        r = curl(f"{self.base}/bytes?n=12345", "-I")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.header("content-length"), "12345")
        with connect(self.fl.addr("p")) as s:
            reader = HttpReader(s)
            s.sendall(http_request("HEAD", "/bytes?n=777"))
            resp = reader.response(head_only=True)
            self.assertEqual((resp.status, resp.header("content-length")), (200, "777"))
            s.sendall(http_request("GET", "/bytes?n=777"))
            resp = reader.response()
            self.assertEqual(resp.body, payload(777), "HEAD left a body in the stream")

    def test_an_accepted_upgrade_becomes_a_byte_tunnel_both_ways(self):
        self.start()
        with connect(self.fl.addr("p")) as s:
            s.sendall(http_request("GET", "/upgrade", [("Connection", "Upgrade"), ("Upgrade", "websocket")]))
            reader = HttpReader(s)
            resp = reader.response()
            self.assertEqual(resp.status, 101, resp)
            self.assertEqual(bytes(reader.buf), b"")
            for size in (1, 100, 70_000):
                data = os.urandom(size)
                s.sendall(data)
                self.assertEqual(recv_exactly(s, size), data, "the tunnel changed bytes")
            # not HTTP any more: an HTTP-looking line is echoed, not parsed
            s.sendall(b"GET /echo HTTP/1.1\r\n\r\n")
            self.assertEqual(recv_exactly(s, 22), b"GET /echo HTTP/1.1\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(reader.closed(), "eof")

    def test_a_refused_upgrade_keeps_http_working_on_the_connection(self):
        self.start()
        with connect(self.fl.addr("p")) as s:
            reader = HttpReader(s)
            s.sendall(http_request("GET", "/echo?up=1", [("Connection", "Upgrade"), ("Upgrade", "websocket")]))
            resp = reader.response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["target"], "/echo?up=1")
            s.sendall(http_request("POST", "/echo?next=1", body=b"still http"))
            resp = reader.response()
            self.assertEqual((resp.status, resp.json()["body"]), (200, "still http"), resp)


MOCK_TEXT = "This is a mock response from faultline."


class HttpMockTest(unittest.TestCase):
    """upstream = "mock": chat completions answered by faultline itself."""

    @classmethod
    def setUpClass(cls):
        cls.fl = Faultline(http_proxy("p", "mock")
                           + 'p:rule { name = "cut", match = { header = { ["x-cut"] = "yes" } }, '
                             'action = http.sse_cut { after_events = 2 } }\n')
        cls.fl.start()
        host, port = cls.fl.addr("p")
        cls.url = f"http://{host}:{port}/v1/chat/completions"
        cls.base = f"http://{host}:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.fl.close()
        check_sanitizers(cls.fl)

    def chat(self, stream, *extra):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            body["stream"] = True
        return curl(self.url, "-N", "-H", "Content-Type: application/json", "-d", json.dumps(body), *extra)

    @staticmethod
    def events(body):
        return [e for e in body.decode().split("\n\n") if e.strip()]

    def test_a_chat_completion_is_answered_with_a_chat_completion_object(self):
        r = self.chat(False)
        self.assertEqual((r.exit, r.status), (0, 200), r)
        obj = r.json()
        self.assertEqual(obj["object"], "chat.completion")
        self.assertEqual(obj["choices"][0]["message"]["role"], "assistant")
        self.assertEqual(obj["choices"][0]["message"]["content"], MOCK_TEXT)
        self.assertEqual(obj["choices"][0]["finish_reason"], "stop")
        self.assertTrue(obj["id"].startswith("chatcmpl-"), obj)
        self.assertRegex(r.header("x-request-id", ""), r"^req_[0-9a-f]{32}$")

    def test_a_streamed_chat_completion_is_an_event_stream_ending_in_done(self):
        r = self.chat(True)
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertTrue(r.header("content-type", "").startswith("text/event-stream"), r)
        events = self.events(r.body)
        self.assertEqual(events[-1], "data: [DONE]")
        chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks), chunks)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual(text, MOCK_TEXT)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")

    def test_anything_else_is_a_404_json_error(self):
        r = curl(f"{self.base}/v1/models")
        self.assertEqual((r.exit, r.status), (0, 404), r)
        err = r.json()["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertIn("GET /v1/models", err["message"])
        self.assertEqual((err["param"], err["code"]), (None, None))

    def test_sse_cut_on_the_mock_delivers_exactly_two_events_then_an_error(self):
        r = self.chat(True, "-H", "x-cut: yes")
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.exit, 0, f"a cut stream ended cleanly: {r}")
        events = self.events(r.body)
        self.assertEqual(len(events), 2, r.body)
        self.assertTrue(r.body.endswith(b"\n\n"), "an event was cut in half")
        self.assertTrue(all(e.startswith("data: {") for e in events), events)


if __name__ == "__main__":
    unittest.main()
