"""The plain tcp proxy: bytes pass unchanged, both ways, many at once, and bad peers harm no one."""

import hashlib
import json
import os
import random
import signal
import socket
import threading
import time
import unittest

from faultline_testlib import (EchoServer, Faultline, TcpServer, connect, echo_round_trip,
                               recv_exactly, recv_until_closed, refused_port, reset_close,
                               sha256, tcp_proxy, wait_until)

MiB = 1 << 20


def pump_through(sock, payload, chunk=256 * 1024, timeout=60.0):
    """Sends payload from a thread while reading the echo here; returns (sha256 of the
    echo, bytes received, send error or None)."""
    errors = []

    def send():
        try:
            view = memoryview(payload)
            for i in range(0, len(view), chunk):
                sock.sendall(view[i:i + chunk])
        except OSError as e:
            errors.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    h, got = hashlib.sha256(), 0
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    while got < len(payload) and time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            break
        h.update(data)
        got += len(data)
    sender.join(timeout=10)
    return h.hexdigest(), got, (errors[0] if errors else None)


class TcpProxyTest(unittest.TestCase):

    def start_echo(self):
        echo = EchoServer()
        self.addCleanup(echo.close)
        return echo

    def start_faultline(self, scenario, *args):
        fl = Faultline(scenario, *args)
        self.addCleanup(fl.close)
        fl.start()
        return fl

    def test_64_mib_of_random_bytes_cross_the_proxy_both_ways_at_once_unchanged(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        payload = os.urandom(64 * MiB)
        with connect(fl.addr("p")) as c:
            digest, got, err = pump_through(c, payload)
            self.assertIsNone(err, "sending through the proxy failed")
            self.assertEqual(got, len(payload), "the echo did not come back in full")
            self.assertEqual(digest, sha256(payload), "bytes changed on the way")
            c.shutdown(socket.SHUT_WR)
            rest, how, _ = recv_until_closed(c, timeout=5)
            self.assertEqual((rest, how), (b"", "eof"), "no clean end after the echo")
        self.assertEqual(echo.records[0].get("received"), len(payload),
                         "the upstream did not receive every byte")

    def test_a_client_half_close_reaches_the_upstream_and_its_reply_still_reaches_the_client(self):
        def reply_after_eof(conn, record):
            got = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += data
            record["eof_at"] = time.monotonic()
            record["got"] = got
            conn.sendall(b"you sent %d bytes" % len(got))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):  # until the client closes too
                pass

        upstream = TcpServer(reply_after_eof)
        self.addCleanup(upstream.close)
        fl = self.start_faultline(tcp_proxy("p", upstream.port))
        with connect(fl.addr("p")) as c:
            c.sendall(b"x" * 5000)
            c.shutdown(socket.SHUT_WR)
            wait_until(lambda: upstream.records and "eof_at" in upstream.records[0], timeout=5,
                       message="the upstream to see the client's EOF")
            self.assertEqual(upstream.records[0]["got"], b"x" * 5000)
            data, how, _ = recv_until_closed(c, timeout=5)
            self.assertEqual(data, b"you sent 5000 bytes", "the reply after the half-close was lost")
            self.assertEqual(how, "eof", "the upstream's FIN did not reach the client")

    def test_an_upstream_half_close_reaches_the_client_which_can_still_send(self):
        def greet_then_listen(conn, record):
            conn.sendall(b"hello, I am done talking")
            conn.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += data
            record["got"] = got

        upstream = TcpServer(greet_then_listen)
        self.addCleanup(upstream.close)
        fl = self.start_faultline(tcp_proxy("p", upstream.port))
        with connect(fl.addr("p")) as c:
            data, how, _ = recv_until_closed(c, timeout=5)
            self.assertEqual((data, how), (b"hello, I am done talking", "eof"))
            c.sendall(b"but I still have something to say")
            c.shutdown(socket.SHUT_WR)
            wait_until(lambda: upstream.records and "got" in upstream.records[0], timeout=5,
                       message="the upstream to read the client's bytes after its own FIN")
        self.assertEqual(upstream.records[0]["got"], b"but I still have something to say")

    def test_fifty_concurrent_connections_each_get_their_own_payload_back(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        n = 50
        barrier = threading.Barrier(n, timeout=20)
        results = [None] * n

        def client(i):
            try:
                payload = random.Random(i).randbytes(32 * 1024 + i)
                with connect(fl.addr("p"), timeout=20) as c:
                    barrier.wait()  # all connected before anyone sends
                    c.sendall(payload)
                    c.shutdown(socket.SHUT_WR)
                    data, how, _ = recv_until_closed(c, timeout=20)
                    results[i] = (data == payload, how, len(data))
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = (False, repr(e), 0)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        bad = {i: r for i, r in enumerate(results) if r is None or r[:2] != (True, "eof")}
        self.assertEqual(bad, {}, "connections that did not get exactly their payload back")
        self.assertEqual(echo.accepted(), n, "every client needs its own upstream connection")

    def test_a_refused_upstream_closes_the_client_promptly_and_another_proxy_keeps_serving(self):
        dead_sock, dead_port = refused_port()
        self.addCleanup(dead_sock.close)
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("dead", dead_port) + tcp_proxy("live", echo.port))
        for attempt in range(2):
            with connect(fl.addr("dead")) as c:
                t0 = time.monotonic()
                data, how, t_end = recv_until_closed(c, timeout=5)
                self.assertEqual(data, b"", "bytes from an upstream that does not exist")
                self.assertIn(how, ("eof", "reset"), "the client was left hanging")
                self.assertLess(t_end - t0, 2.0, "the client was not closed promptly")
        with connect(fl.addr("live")) as c:
            self.assertLess(echo_round_trip(c, b"still here"), 1.0)
        self.assertTrue(fl.alive(), "faultline died")
        fl.wait_for_log(r"(?im)^.*dead.*refused.*$|^.*refused.*dead.*$", timeout=2)

    def test_a_client_reset_mid_transfer_does_not_disturb_another_connection(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        first_half, second_half = os.urandom(8 * MiB), os.urandom(8 * MiB)
        with connect(fl.addr("p"), timeout=30) as a:
            digest, got, err = pump_through(a, first_half)
            self.assertEqual((digest, got, err), (sha256(first_half), len(first_half), None))

            # b sends what fits (up to 4 MiB) without reading its echo, so the proxy has
            # writes queued for b when b vanishes with RST.
            b = connect(fl.addr("p"))
            self.addCleanup(b.close)
            b.setblocking(False)
            junk, sent = memoryview(os.urandom(4 * MiB)), 0
            while sent < len(junk):
                try:
                    sent += b.send(junk[sent:sent + 65536])
                except BlockingIOError:
                    break
            self.assertGreater(sent, 0)
            wait_until(lambda: echo.accepted() >= 2 and echo.records[1].get("received", 0) > 0,
                       timeout=5, message="b's bytes to reach the upstream")
            reset_close(b)
            wait_until(lambda: "closed_at" in echo.records[1], timeout=5,
                       message="the proxy to close b's upstream connection after b's reset")

            digest, got, err = pump_through(a, second_half)
            self.assertIsNone(err)
            self.assertEqual(got, len(second_half), "a's transfer stalled after b's reset")
            self.assertEqual(digest, sha256(second_half), "a's bytes changed after b's reset")
        with connect(fl.addr("p")) as c:
            self.assertLess(echo_round_trip(c, b"after the reset"), 1.0)
        self.assertTrue(fl.alive(), "faultline died")

    def test_sigterm_stops_faultline_with_exit_code_zero(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        with connect(fl.addr("p")) as c:
            echo_round_trip(c)
        self.assertEqual(fl.stop(signal.SIGTERM, timeout=10), 0)

    def test_sigint_stops_faultline_with_exit_code_zero(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        self.assertEqual(fl.stop(signal.SIGINT, timeout=10), 0)

    def test_sigterm_with_an_idle_open_connection_exits_zero_within_the_grace_period(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port))
        c = connect(fl.addr("p"))
        self.addCleanup(c.close)
        echo_round_trip(c)
        t0 = time.monotonic()
        code = fl.stop(signal.SIGTERM, timeout=10)
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 0)
        self.assertLess(elapsed, 4.0, "shutdown waited far longer than the 2 s grace period")
        _, how, _ = recv_until_closed(c, timeout=2)
        self.assertIn(how, ("eof", "reset"), "the open connection was not closed at shutdown")

    def test_sigterm_stops_accepting_at_once_but_lets_an_in_flight_reply_arrive(self):
        echo = self.start_echo()
        fl = self.start_faultline(
            tcp_proxy("p", echo.port)
            + 'p:toxic { type = "latency", stream = "downstream", latency = 400 }\n')
        addr = fl.addr("p")
        c = connect(addr)
        self.addCleanup(c.close)
        c.sendall(b"in flight")
        wait_until(lambda: echo.records and echo.records[0].get("received") == 9, timeout=5,
                   message="the request to reach the upstream")
        fl.proc.send_signal(signal.SIGTERM)

        def refused():
            try:
                socket.create_connection(addr, timeout=0.5).close()
                return False
            except ConnectionRefusedError:
                return True
            except (TimeoutError, ConnectionResetError):
                # A connection racing the listener's close is dropped (SYN lost) or reset (it was in the
                # accept backlog when the listener closed); the next attempt is refused.
                return False
        wait_until(refused, timeout=3.0, message="new connections to be refused after SIGTERM")
        self.assertEqual(recv_exactly(c, 9, timeout=3), b"in flight",
                         "the reply in flight at SIGTERM was lost")
        self.assertEqual(fl.wait(timeout=10), 0)

    def test_json_log_format_writes_one_json_object_per_line(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port), "--log-format", "json")
        with connect(fl.addr("p")) as c:
            self.assertLess(echo_round_trip(c, b"json"), 1.0)
        self.assertEqual(fl.stop(), 0)
        lines = [l for l in fl.stderr_text().splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            self.assertIsInstance(json.loads(line), dict, f"not a JSON object: {line!r}")

    def test_two_worker_threads_carry_traffic_correctly(self):
        echo = self.start_echo()
        fl = self.start_faultline(tcp_proxy("p", echo.port), "--threads", "2")
        n = 16
        results = [None] * n

        def client(i):
            try:
                payload = random.Random(1000 + i).randbytes(1 * MiB)
                with connect(fl.addr("p"), timeout=30) as c:
                    digest, got, err = pump_through(c, payload)
                    results[i] = (digest == sha256(payload), got, err)
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = (False, 0, e)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        bad = {i: r for i, r in enumerate(results) if r != (True, 1 * MiB, None)}
        self.assertEqual(bad, {}, "connections whose echo was wrong with --threads 2")
        self.assertEqual(fl.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
