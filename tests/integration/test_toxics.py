"""Each toxic's effect as a client sees it, with Toxiproxy's attributes and units (SPEC §2.4)."""

import os
import socket
import statistics
import time
import unittest

from faultline_testlib import (EchoServer, Faultline, SinkServer, SourceServer, connect,
                               echo_round_trip, read_journal, recv_exactly, recv_until_closed,
                               sha256, tcp_proxy, toxic, wait_until)

# A loaded 2-core CI box adds tens of ms; an idle machine lands within D..D+2 ms (SPEC §3).
SLACK_MS = 50


def ms(seconds):
    return seconds * 1000.0


class ToxicsTest(unittest.TestCase):

    def start(self, server, toxics, *args, seed=None):
        self.addCleanup(server.close)
        scenario = (f"seed({seed})\n" if seed is not None else "") + tcp_proxy("p", server.port) + toxics
        fl = Faultline(scenario, *args)
        self.addCleanup(fl.close)
        fl.start()
        return fl

    def round_trips(self, fl, n=3, payload=b"ping"):
        with connect(fl.addr("p")) as c:
            return [ms(echo_round_trip(c, payload)) for _ in range(n)]

    # ---------------------------------------------------------------- latency

    def test_no_toxic_gives_a_round_trip_well_under_100_ms(self):
        fl = self.start(EchoServer(), "")
        rtts = self.round_trips(fl, n=5)
        self.assertLess(statistics.median(rtts), 50, f"round trips {rtts}")

    def test_downstream_latency_of_100_ms_delays_each_echo_by_100_ms(self):
        fl = self.start(EchoServer(), toxic("p", "latency", "downstream", latency=100, jitter=0))
        rtts = self.round_trips(fl)
        self.assertGreaterEqual(min(rtts), 100, f"round trips {rtts}: a delay came early")
        self.assertLess(statistics.median(rtts), 100 + SLACK_MS, f"round trips {rtts}")

    def test_upstream_latency_of_100_ms_delays_each_echo_by_100_ms(self):
        fl = self.start(EchoServer(), toxic("p", "latency", "upstream", latency=100, jitter=0))
        rtts = self.round_trips(fl)
        self.assertGreaterEqual(min(rtts), 100, f"round trips {rtts}: a delay came early")
        self.assertLess(statistics.median(rtts), 100 + SLACK_MS, f"round trips {rtts}")

    def test_latency_in_both_directions_adds_up(self):
        fl = self.start(EchoServer(), toxic("p", "latency", "upstream", latency=60)
                        + toxic("p", "latency", "downstream", latency=60))
        rtts = self.round_trips(fl)
        self.assertGreaterEqual(min(rtts), 120, f"round trips {rtts}")
        self.assertLess(statistics.median(rtts), 120 + SLACK_MS, f"round trips {rtts}")

    def test_jitter_spreads_delays_within_latency_plus_or_minus_jitter(self):
        fl = self.start(EchoServer(), toxic("p", "latency", "downstream", latency=100, jitter=50))
        rtts = self.round_trips(fl, n=10)
        self.assertGreaterEqual(min(rtts), 50, f"round trips {rtts}: below latency - jitter")
        self.assertLess(statistics.median(rtts), 150 + SLACK_MS, f"round trips {rtts}")
        self.assertGreater(max(rtts) - min(rtts), 10, f"round trips {rtts}: jitter had no effect")

    def test_toxicity_zero_leaves_the_connection_untouched(self):
        fl = self.start(EchoServer(),
                        toxic("p", "latency", "downstream", latency=200, toxicity=0.0),
                        "--journal", "{tmp}/journal.jsonl")
        rtts = self.round_trips(fl)
        self.assertLess(max(rtts), 100, f"round trips {rtts}: the toxic fired at toxicity 0")
        self.assertEqual(fl.stop(), 0)
        self.assertEqual(read_journal(fl.path("journal.jsonl")), [],
                         "a toxic at toxicity 0 was journaled as taking effect")

    # ---------------------------------------------------------------- bandwidth

    def test_bandwidth_of_100_kb_per_second_moves_300_kb_in_about_3_seconds(self):
        payload = os.urandom(300_000)
        fl = self.start(SourceServer(payload, then="close"),
                        toxic("p", "bandwidth", "downstream", rate=100))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            data, how, t_end = recv_until_closed(c, timeout=10)
        elapsed = t_end - t0
        self.assertEqual(len(data), len(payload))
        self.assertEqual(sha256(data), sha256(payload), "bandwidth changed the bytes")
        self.assertEqual(how, "eof")
        self.assertGreaterEqual(elapsed, 2.5, f"300 KB took {elapsed:.2f}s: faster than 100 KB/s")
        self.assertLess(elapsed, 4.0, f"300 KB took {elapsed:.2f}s: slower than 100 KB/s")

    # ---------------------------------------------------------------- limit_data

    def test_limit_data_passes_exactly_1000_bytes_then_closes(self):
        payload = os.urandom(5000)
        source = SourceServer(payload, then="hold")  # the toxic, not the upstream, must close
        fl = self.start(source, toxic("p", "limit_data", "downstream", bytes=1000))
        with connect(fl.addr("p")) as c:
            data, how, _ = recv_until_closed(c, timeout=5)
        self.assertIn(how, ("eof", "reset"), "the connection stayed open after the limit")
        self.assertEqual(len(data), 1000)
        self.assertEqual(data, payload[:1000])
        self.assertTrue(source.records and "sent_at" in source.records[0],
                        "the upstream never got to send its 5000 bytes")

    def test_limit_data_upstream_lets_exactly_n_bytes_reach_the_server(self):
        echo = EchoServer()
        fl = self.start(echo, toxic("p", "limit_data", "upstream", bytes=1000))
        with connect(fl.addr("p")) as c:
            try:
                c.sendall(b"u" * 3000)
            except OSError:
                pass  # the proxy may close while we send
            data, how, _ = recv_until_closed(c, timeout=5)
        self.assertIn(how, ("eof", "reset"))
        wait_until(lambda: echo.records and "closed_at" in echo.records[0], timeout=5,
                   message="the upstream connection to close")
        self.assertEqual(echo.records[0].get("received"), 1000)

    # ---------------------------------------------------------------- reset_peer

    def test_reset_peer_resets_the_connection_200_ms_after_the_first_data(self):
        # Toxiproxy's reset_peer counts down from the first data on its stream; the upstream
        # sends at once, so that is the moment the client connects.
        source = SourceServer(b"h" * 100, then="hold")
        fl = self.start(source, toxic("p", "reset_peer", "downstream", timeout=200))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            data, how, t_end = recv_until_closed(c, timeout=5)
        elapsed = ms(t_end - t0)
        self.assertEqual(how, "reset", "the client did not see ECONNRESET")
        self.assertEqual(data, b"", "reset_peer let data through before the reset")
        self.assertGreaterEqual(elapsed, 195, f"reset after {elapsed:.0f} ms")
        self.assertLess(elapsed, 200 + 5 * SLACK_MS, f"reset after {elapsed:.0f} ms")

    def test_reset_peer_on_the_upstream_stream_resets_200_ms_after_the_client_sends(self):
        echo = EchoServer()
        fl = self.start(echo, toxic("p", "reset_peer", "upstream", timeout=200))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            c.sendall(b"request")
            data, how, t_end = recv_until_closed(c, timeout=5)
        elapsed = ms(t_end - t0)
        self.assertEqual(how, "reset", "the client did not see ECONNRESET")
        self.assertEqual(data, b"", "the request reached the upstream and was echoed")
        self.assertGreaterEqual(elapsed, 195, f"reset after {elapsed:.0f} ms")
        self.assertLess(elapsed, 200 + 5 * SLACK_MS, f"reset after {elapsed:.0f} ms")

    # ---------------------------------------------------------------- timeout

    def test_timeout_of_300_ms_drops_the_data_and_closes_after_300_ms(self):
        source = SourceServer(b"d" * 100, then="hold")
        fl = self.start(source, toxic("p", "timeout", "downstream", timeout=300))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            data, how, t_end = recv_until_closed(c, timeout=5)
        elapsed = ms(t_end - t0)
        self.assertEqual(data, b"", "data passed through a timeout toxic")
        self.assertIn(how, ("eof", "reset"), "the connection was never closed")
        self.assertGreaterEqual(elapsed, 295, f"closed after {elapsed:.0f} ms")
        self.assertLess(elapsed, 300 + 5 * SLACK_MS, f"closed after {elapsed:.0f} ms")

    def test_timeout_of_zero_holds_the_connection_open_and_silent(self):
        source = SourceServer(b"d" * 100, then="hold")
        fl = self.start(source, toxic("p", "timeout", "downstream", timeout=0))
        with connect(fl.addr("p")) as c:
            data, how, _ = recv_until_closed(c, timeout=1.0)
            self.assertEqual(data, b"", "data passed through a timeout toxic")
            self.assertEqual(how, "timeout", "timeout=0 must hold the connection open")
        wait_until(lambda: source.records and "sent_at" in source.records[0], timeout=2,
                   message="the upstream to have sent its data")

    # ---------------------------------------------------------------- slow_close

    def test_slow_close_delivers_data_at_once_and_eof_300_ms_after_the_upstream_closed(self):
        payload = b"s" * 100
        source = SourceServer(payload, then="close")
        fl = self.start(source, toxic("p", "slow_close", "downstream", delay=300))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            first = recv_exactly(c, len(payload), timeout=5)
            t_data = time.monotonic()
            rest, how, t_eof = recv_until_closed(c, timeout=5)
        self.assertEqual(first, payload)
        self.assertLess(ms(t_data - t0), 100, "slow_close delayed the data")
        self.assertEqual((rest, how), (b"", "eof"))
        wait_until(lambda: source.records and "closing_at" in source.records[0], timeout=2,
                   message="the upstream's close")
        after_close = ms(t_eof - source.records[0]["closing_at"])
        self.assertGreaterEqual(after_close, 300, f"EOF {after_close:.0f} ms after the upstream closed")
        self.assertLess(after_close, 300 + 5 * SLACK_MS, f"EOF {after_close:.0f} ms after close")

    # ---------------------------------------------------------------- slicer

    def test_slicer_delivers_every_byte_intact_in_many_small_pieces(self):
        payload = os.urandom(2000)
        fl = self.start(SourceServer(payload, then="close"),
                        toxic("p", "slicer", "downstream", average_size=10, size_variation=4,
                              delay=1000))
        pieces = []
        with connect(fl.addr("p")) as c:
            c.settimeout(5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                data = c.recv(65536)
                if not data:
                    break
                pieces.append(len(data))
        self.assertEqual(sum(pieces), len(payload), "bytes lost or added")
        self.assertGreaterEqual(len(pieces), 20, f"only {len(pieces)} recv()s: not sliced")
        self.assertLessEqual(statistics.median(pieces), 28,
                             f"median piece {statistics.median(pieces)} B for average_size 10")

    def test_slicer_keeps_the_bytes_in_order(self):
        payload = bytes(range(256)) * 8
        fl = self.start(SourceServer(payload, then="close"),
                        toxic("p", "slicer", "downstream", average_size=10, size_variation=4,
                              delay=100))
        with connect(fl.addr("p")) as c:
            data, how, _ = recv_until_closed(c, timeout=10)
        self.assertEqual(how, "eof")
        self.assertEqual(data, payload)

    # ---------------------------------------------------------------- toxicity

    def test_toxics_chain_in_order_and_the_bytes_arrive_intact(self):
        payload = os.urandom(3000)
        fl = self.start(SourceServer(payload, then="close"),
                        toxic("p", "latency", "downstream", latency=100)
                        + toxic("p", "slicer", "downstream", average_size=100, size_variation=50,
                                delay=500)
                        + toxic("p", "bandwidth", "downstream", rate=1000))
        with connect(fl.addr("p")) as c:
            t0 = time.monotonic()
            first = recv_exactly(c, 1, timeout=5)
            t_first = time.monotonic()
            rest, how, _ = recv_until_closed(c, timeout=10)
        self.assertEqual(first + rest, payload)
        self.assertEqual(how, "eof")
        self.assertGreaterEqual(ms(t_first - t0), 100, "the latency toxic was skipped")

    def test_bandwidth_upstream_limits_what_the_client_sends(self):
        sink = SinkServer()
        fl = self.start(sink, toxic("p", "bandwidth", "upstream", rate=100))
        payload = os.urandom(200_000)
        with connect(fl.addr("p"), timeout=10) as c:
            t0 = time.monotonic()
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            wait_until(lambda: sink.records and "eof_at" in sink.records[0], timeout=6,
                       message="the upstream to receive everything")
        elapsed = sink.records[0]["eof_at"] - t0
        self.assertEqual(sink.records[0]["sha256"], sha256(payload))
        self.assertGreaterEqual(elapsed, 1.5, f"200 KB took {elapsed:.2f}s at 100 KB/s")
        self.assertLess(elapsed, 3.0, f"200 KB took {elapsed:.2f}s at 100 KB/s")

    def affected_ordinals(self, seed, n=40, *args):
        """Runs n sequential connections through a toxicity-0.5 toxic; returns the set of
        connection ordinals the journal says it took effect on."""
        echo = EchoServer()
        self.addCleanup(echo.close)
        fl = Faultline(f"seed({seed})\n" + tcp_proxy("p", echo.port)
                       + toxic("p", "latency", "downstream", latency=1, toxicity=0.5),
                       "--journal", "{tmp}/journal.jsonl", *args)
        self.addCleanup(fl.close)
        fl.start()
        for _ in range(n):
            with connect(fl.addr("p")) as c:
                echo_round_trip(c)
        self.assertEqual(fl.stop(), 0)
        lines = read_journal(fl.path("journal.jsonl"))
        self.assertTrue(all(line.get("toxic") == "latency_downstream" for line in lines), lines)
        return {line["match"] for line in lines}

    def test_toxicity_half_picks_the_same_connections_on_every_run_with_one_seed(self):
        first = self.affected_ordinals(7)
        second = self.affected_ordinals(7)
        self.assertTrue(0 < len(first) < 40, f"toxicity 0.5 hit {len(first)} of 40 connections")
        self.assertLessEqual(max(first), 40)
        self.assertEqual(first, second, "the same seed picked different connections")
        other = self.affected_ordinals(8)
        self.assertNotEqual(first, other, "seeds 7 and 8 picked the same connections")

    def test_toxicity_picks_the_same_connections_with_two_worker_threads(self):
        one = self.affected_ordinals(7, 24)
        two = self.affected_ordinals(7, 24, "--threads", "2")
        self.assertEqual(one, two, "--threads 2 changed which connections the toxic hit")

    def test_the_seed_in_force_is_logged_at_start(self):
        fl = self.start(EchoServer(), "", seed=42)
        self.assertRegex(fl.stderr_text(), r"(?i)seed\D{0,20}\b42\b")
        fl2 = self.start(EchoServer(), "", "--seed", "1234", seed=42)
        self.assertRegex(fl2.stderr_text(), r"(?i)seed\D{0,20}\b1234\b")

    def test_toxicity_is_drawn_from_the_command_line_seed_over_the_scenario_seed(self):
        # --seed overrides seed(): scenario seed 8 run with --seed 7 equals seed 7.
        from_scenario = self.affected_ordinals(7, n=20)
        echo = EchoServer()
        self.addCleanup(echo.close)
        fl = Faultline("seed(8)\n" + tcp_proxy("p", echo.port)
                       + toxic("p", "latency", "downstream", latency=1, toxicity=0.5),
                       "--seed", "7", "--journal", "{tmp}/journal.jsonl")
        self.addCleanup(fl.close)
        fl.start()
        for _ in range(20):
            with connect(fl.addr("p")) as c:
                echo_round_trip(c)
        self.assertEqual(fl.stop(), 0)
        overridden = {line["match"] for line in read_journal(fl.path("journal.jsonl"))}
        self.assertEqual(overridden, from_scenario)


if __name__ == "__main__":
    unittest.main(verbosity=2)
