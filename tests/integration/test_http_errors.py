"""Bad input on an http proxy (SPEC §6): malformed or oversized requests, upstreams that are
unreachable, silent, not HTTP or gone mid-body, clients that vanish. Each gets a clear answer
(a JSON error, or a cut connection), and the proxy goes on serving."""

import json
import os
import socket
import unittest

from faultline_testlib import (Faultline, HttpReader, check_sanitizers, connect, curl,
                               http_exchange, http_proxy, http_request, refused_port, reset_close,
                               SinkServer, started_faultline)
from http_upstream import HttpUpstream, payload, sse_event


class HttpErrorsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream()
        cls.fl = Faultline(http_proxy("p", cls.up.port, upstream_timeout=300))
        try:
            cls.fl.start()
        except BaseException:
            cls.up.close()
            raise
        cls.addr = cls.fl.addr("p")
        cls.base = f"http://{cls.addr[0]}:{cls.addr[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.fl.close()
        check_sanitizers(cls.fl)
        cls.up.close()

    def tearDown(self):
        # after every bad input, a normal request is still served
        body = os.urandom(3000)
        r = http_exchange(self.addr, http_request("POST", "/echo/still-fine", body=body))
        self.assertEqual(r.status, 200, f"the proxy stopped serving: {r}")
        self.assertEqual(r.json()["body_len"], len(body))
        self.assertTrue(self.fl.alive(), self.fl.stderr_text())

    def assert_json_error(self, status, headers, body, code, err_type):
        self.assertEqual(status, code, body)
        err = json.loads(body)["error"]
        self.assertEqual(sorted(err), ["code", "message", "param", "type"], err)
        self.assertEqual(err["type"], err_type, err)
        self.assertEqual((err["param"], err["code"]), (None, None))
        lower = {k.lower(): v for k, v in headers}
        self.assertTrue(lower.get("content-type", "").startswith("application/json"), headers)
        self.assertEqual(lower.get("x-faultline-error"), err_type, headers)
        return err["message"]

    # ---------------------------------------------------------------- from the client

    def test_a_malformed_request_line_gets_a_400_naming_the_problem_and_the_connection_closes(self):
        with connect(self.addr) as s:
            s.sendall(b"GET /echo/x HTTP/1.1 trailing-garbage\r\nHost: x\r\n\r\n")
            reader = HttpReader(s)
            resp = reader.response()
            message = self.assert_json_error(resp.status, resp.headers, resp.body, 400, "invalid_request")
            self.assertIn("malformed request", message)
            self.assertGreater(len(message), len("faultline: malformed request: "), message)
            self.assertEqual(reader.closed(), "eof", "the connection stayed open after a 400")

    def test_a_request_line_that_is_not_http_at_all_gets_a_400(self):
        with connect(self.addr) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n")
            reader = HttpReader(s)
            resp = reader.response()
            self.assert_json_error(resp.status, resp.headers, resp.body, 400, "invalid_request")
            self.assertEqual(reader.closed(), "eof")

    def test_a_70_kib_header_gets_a_431_and_the_connection_closes(self):
        with connect(self.addr) as s:
            try:
                s.sendall(http_request("GET", "/echo/big-header", [("X-Big", "b" * (70 * 1024))]))
            except OSError:
                pass  # the proxy may answer and close while we still send
            reader = HttpReader(s)
            resp = reader.response()
            message = self.assert_json_error(resp.status, resp.headers, resp.body, 431,
                                             "request_header_fields_too_large")
            self.assertIn("too large", message)
            self.assertIn(reader.closed(), ("eof", "reset"))
        self.assertEqual([r for r in self.up.requests if r["path"] == "/echo/big-header"], [])

    def test_a_client_vanishing_mid_request_does_not_disturb_another_connection(self):
        with connect(self.addr) as other:
            other.sendall(http_request("GET", "/sse/other?events=6&interval_ms=50"))
            reader = HttpReader(other)
            status, _ = reader.head()
            self.assertEqual(status, 200)
            first = reader.chunk()
            # one client resets halfway through a body, one closes halfway through a head
            a = connect(self.addr)
            a.sendall(http_request("POST", "/echo/abandoned", [("Content-Length", "100000")]) + b"x" * 1000)
            reset_close(a)
            b = connect(self.addr)
            b.sendall(b"POST /echo/half-head HTTP/1.1\r\nHost: x\r\nContent-Le")
            b.close()
            c = connect(self.addr)
            c.sendall(http_request("POST", "/echo/abandoned-chunked", [("Transfer-Encoding", "chunked")])
                      + b"10\r\n0123456789")
            c.shutdown(socket.SHUT_WR)
            c.close()
            stream = first
            while True:
                data = reader.chunk()
                if not data:
                    break
                stream += data
            self.assertEqual(stream, b"".join(sse_event(i) for i in range(1, 7)))

    # ---------------------------------------------------------------- from the upstream

    def test_upstream_garbage_instead_of_http_gets_a_502_bad_upstream_response(self):
        r = curl(f"{self.base}/garbage")
        self.assertEqual(r.exit, 0, r)
        self.assert_json_error(r.status, r.headers, r.body, 502, "bad_upstream_response")

    def test_an_upstream_that_never_answers_gets_a_504_after_upstream_timeout(self):
        r = curl(f"{self.base}/hang")
        self.assertEqual(r.exit, 0, r)
        message = self.assert_json_error(r.status, r.headers, r.body, 504, "upstream_timeout")
        self.assertIn("300 ms", message)
        self.assertGreaterEqual(r.elapsed, 0.3, r)

    def test_an_upstream_closing_before_it_answers_gets_a_502(self):
        r = curl(f"{self.base}/close-early")
        self.assertEqual(r.exit, 0, r)
        self.assert_json_error(r.status, r.headers, r.body, 502, "upstream_closed")
        self.assertIn("closed the connection without responding", r.json()["error"]["message"])

    def test_an_upstream_closing_mid_body_cuts_the_client_connection(self):
        r = curl(f"{self.base}/cut?n=10000&send=1000")
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(r.exit, 0, f"an incomplete body looked complete: {r}")
        self.assertEqual(r.body, payload(10000)[:1000])


class HttpUnreachableUpstreamTest(unittest.TestCase):

    def test_a_refused_upstream_gets_a_502_upstream_unreachable_naming_it(self):
        holder, port = refused_port()
        self.addCleanup(holder.close)
        fl = started_faultline(self, http_proxy("p", port))
        host, lport = fl.addr("p")
        for _ in range(2):  # and again: the failure is not cached into a hang
            r = curl(f"http://{host}:{lport}/v1/models")
            self.assertEqual((r.exit, r.status), (0, 502), r)
            err = r.json()["error"]
            self.assertEqual(err["type"], "upstream_unreachable", err)
            self.assertEqual(r.header("x-faultline-error"), "upstream_unreachable")
            self.assertIn(f"127.0.0.1:{port}", err["message"])
            self.assertIn("refused", err["message"])
        self.assertTrue(fl.alive())
        self.assertEqual(fl.stop(), 0, fl.stderr_text())

    def test_a_connect_that_fails_at_once_gets_a_502_not_the_upstream_timeout(self):
        # TCP to a multicast address fails inside connect() itself (ENETUNREACH), before the proxy
        # holds the connection: that failure must still answer the request, not leave it waiting.
        fl = started_faultline(self, http_proxy("p", "http://224.0.0.1:9"))
        host, lport = fl.addr("p")
        for _ in range(2):
            r = curl(f"http://{host}:{lport}/v1/models", max_time=10)
            self.assertEqual((r.exit, r.status), (0, 502), r)
            self.assertEqual(r.json()["error"]["type"], "upstream_unreachable", r)
            self.assertIn("224.0.0.1:9", r.json()["error"]["message"])
        self.assertTrue(fl.alive())
        self.assertEqual(fl.stop(), 0, fl.stderr_text())

    def test_an_upstream_resetting_before_it_answers_gets_a_502_and_faultline_still_stops(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        fl = started_faultline(self, http_proxy("p", up.port))
        with connect(fl.addr("p")) as s:
            s.sendall(http_request("GET", "/reset-early"))
            reader = HttpReader(s)
            resp = reader.response()
            self.assertEqual(resp.status, 502, resp)
            self.assertEqual(resp.json()["error"]["type"], "upstream_unreachable")
            self.assertEqual(reader.closed(), "eof")
        r = http_exchange(fl.addr("p"), http_request("GET", "/echo/next"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(fl.stop(timeout=5), 0, "faultline did not stop on SIGTERM:\n" + fl.stderr_text())


def bytes_accepted_before_stall(sock, limit, stall=1.0):
    """Sends up to `limit` bytes; returns how many the peer took before a send blocked `stall` s."""
    sock.settimeout(stall)
    piece, sent = b"x" * (256 * 1024), 0
    try:
        while sent < limit:
            sent += sock.send(piece)
    except (socket.timeout, TimeoutError):
        pass
    return sent


class HttpBufferCeilingTest(unittest.TestCase):
    """A client streaming a large body is paused, not buffered without bound, wherever the body waits."""

    LIMIT = 256 * 1024 * 1024

    def stream_into(self, fl, path):
        with connect(fl.addr("p"), timeout=10) as s:
            s.sendall(http_request("POST", path, [("Content-Length", str(self.LIMIT))]))
            return bytes_accepted_before_stall(s, self.LIMIT)

    def test_a_request_held_by_delay_pauses_its_client(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        fl = started_faultline(self, http_proxy("p", up.port)
                               + 'p:rule { match = { path = "/upload" }, action = delay(60000) }\n')
        accepted = self.stream_into(fl, "/upload")
        # 1 MiB held plus what the kernel's socket buffers take; without a ceiling it is all 256 MiB.
        self.assertLess(accepted, 64 * 1024 * 1024, "faultline kept reading a held request")
        self.assertTrue(fl.alive())

    def test_a_request_behind_a_stalled_tls_handshake_pauses_its_client(self):
        sink = SinkServer()  # takes the ClientHello and never answers it
        self.addCleanup(sink.close)
        fl = started_faultline(self, f'local p = proxy {{ name = "p", listen = "127.0.0.1:0", protocol = "http", '
                                     f'upstream = "https://127.0.0.1:{sink.port}", tls_verify = false }}\n')
        accepted = self.stream_into(fl, "/upload")
        self.assertLess(accepted, 64 * 1024 * 1024, "faultline kept buffering plaintext for TLS")
        self.assertTrue(fl.alive())


if __name__ == "__main__":
    unittest.main()


class SplitHeadCutTest(unittest.TestCase):
    """A response whose head arrives in two reads, then cut by http.truncate: the cut drops the
    upstream connection while its kept bytes are being parsed; the client must still get the head and
    exactly the bytes truncate lets through, then a clean FIN."""

    def test_truncate_after_a_head_split_across_reads(self):
        import time
        from faultline_testlib import TcpServer, recv_until_closed, started_faultline, http_proxy

        def handler(conn, record):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-")
            time.sleep(0.1)  # the rest of the head in a later read (what is being tested: a split head)
            conn.sendall(b"Length: 5000\r\n\r\n" + b"z" * 5000)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

        up = TcpServer(handler)
        self.addCleanup(up.close)
        fl = started_faultline(self, http_proxy("p", up.port) +
                               'p:rule { name = "cut", action = http.truncate { bytes = 10 } }\n')
        with connect(fl.addr("p")) as s:
            s.sendall(http_request("GET", "/"))
            raw, how, _ = recv_until_closed(s, timeout=5.0)
        self.assertEqual(how, "eof", raw[:300])
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertEqual(head, b"HTTP/1.1 200 OK\r\nContent-Length: 5000")
        self.assertEqual(body, b"z" * 10)
        self.assertNotIn("internal error", fl.stderr_text())
