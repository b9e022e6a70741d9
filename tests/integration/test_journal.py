"""The journal of toxics that took effect (SPEC §4) and replaying it (SPEC §4.1)."""

import json
import re
import time
import unittest

from faultline_testlib import (EchoServer, Faultline, FaultlineError, connect, echo_round_trip,
                               read_journal, tcp_proxy, toxic)

KEYS = ["seq", "t_ms", "proxy", "conn", "toxic", "type", "stream", "match"]
LATENCY_MS = 200  # far above a loaded machine's loopback round trip, so "delayed" is never ambiguous


class JournalTest(unittest.TestCase):

    def setUp(self):
        self.echo = EchoServer()
        self.addCleanup(self.echo.close)

    def run_connections(self, scenario, n, *args, close=True):
        """Starts faultline, makes n sequential connections with one echo each, stops it.
        Returns (Faultline, list of round-trip ms per connection ordinal 1..n)."""
        fl = Faultline(scenario, *args)
        self.addCleanup(fl.close)
        fl.start()
        rtts = []
        for _ in range(n):
            with connect(fl.addr("p")) as c:
                rtts.append(echo_round_trip(c) * 1000.0)
        if close:
            self.assertEqual(fl.stop(), 0, fl.stderr_text())
        return fl, rtts

    def slow_ordinals(self, rtts):
        """Connection ordinals whose echo was delayed by the latency toxic; the others must
        be clearly fast, so no ordinal is ambiguous."""
        slow = {i + 1 for i, rtt in enumerate(rtts) if rtt >= LATENCY_MS}
        ambiguous = {i + 1: round(rtt) for i, rtt in enumerate(rtts) if LATENCY_MS * 0.6 <= rtt < LATENCY_MS}
        self.assertEqual(ambiguous, {}, "round trips neither clearly delayed nor clearly not")
        return slow

    def scenario(self, toxicity, seed):
        return (f"seed({seed})\n" + tcp_proxy("p", self.echo.port)
                + toxic("p", "latency", "downstream", latency=LATENCY_MS, toxicity=toxicity))

    # ---------------------------------------------------------------- the journal

    def test_each_affected_connection_writes_one_line_with_the_documented_keys_in_order(self):
        scenario = (tcp_proxy("p", self.echo.port)
                    + toxic("p", "latency", "downstream", latency=1)
                    + toxic("p", "bandwidth", "upstream", rate=1000, toxicity=0.0))
        fl, _ = self.run_connections(scenario, 3, "--journal", "{tmp}/journal.jsonl")
        with open(fl.path("journal.jsonl"), encoding="utf-8") as f:
            raw = [line for line in f.read().splitlines()]
        self.assertEqual(len(raw), 3, f"expected one line per connection:\n{raw}")
        lines = [json.loads(line) for line in raw]
        for line in lines:
            self.assertEqual(list(line.keys()), KEYS)
            self.assertEqual(line["proxy"], "p")
            self.assertEqual(line["toxic"], "latency_downstream")
            self.assertEqual(line["type"], "latency")
            self.assertEqual(line["stream"], "downstream")
            self.assertIsInstance(line["conn"], int)
            self.assertIsInstance(line["t_ms"], (int, float))
            self.assertGreaterEqual(line["t_ms"], 0)
        self.assertEqual([line["match"] for line in lines], [1, 2, 3])
        seqs = [line["seq"] for line in lines]
        self.assertEqual(seqs, sorted(set(seqs)), "seq must strictly increase")
        self.assertTrue(all(isinstance(s, int) and s >= 1 for s in seqs), seqs)
        self.assertEqual(len({line["conn"] for line in lines}), 3, "conn must tell connections apart")

    def test_a_named_toxic_is_journaled_under_its_name_and_stream(self):
        scenario = (tcp_proxy("p", self.echo.port)
                    + 'p:toxic { name = "slow-requests", type = "latency", stream = "upstream", '
                      'attributes = { latency = 1 } }\n')
        fl, _ = self.run_connections(scenario, 2, "--journal", "{tmp}/journal.jsonl")
        lines = read_journal(fl.path("journal.jsonl"))
        self.assertEqual([(l["toxic"], l["type"], l["stream"], l["match"]) for l in lines],
                         [("slow-requests", "latency", "upstream", 1),
                          ("slow-requests", "latency", "upstream", 2)])

    def test_match_counts_connections_per_proxy(self):
        other = EchoServer()
        self.addCleanup(other.close)
        scenario = (tcp_proxy("a", self.echo.port) + tcp_proxy("b", other.port)
                    + toxic("a", "latency", "downstream", latency=1)
                    + toxic("b", "latency", "upstream", latency=1))
        fl = Faultline(scenario, "--journal", "{tmp}/journal.jsonl")
        self.addCleanup(fl.close)
        fl.start()
        for name in ("a", "b", "a", "a", "b"):
            with connect(fl.addr(name)) as c:
                echo_round_trip(c)
        self.assertEqual(fl.stop(), 0)
        got = [(l["proxy"], l["toxic"], l["match"]) for l in read_journal(fl.path("journal.jsonl"))]
        self.assertEqual(got, [("a", "latency_downstream", 1), ("b", "latency_upstream", 1),
                               ("a", "latency_downstream", 2), ("a", "latency_downstream", 3),
                               ("b", "latency_upstream", 2)])

    def test_a_replay_file_that_does_not_exist_stops_faultline_from_starting(self):
        fl = Faultline(self.scenario(1.0, 7), "--replay", "{tmp}/no-such-journal.jsonl")
        self.addCleanup(fl.close)
        with self.assertRaises(FaultlineError):
            fl.start()
        self.assertIn(fl.returncode, (1, 2), "exit code")
        self.assertIn("no-such-journal.jsonl", fl.stderr_text())

    def test_the_journal_is_complete_when_faultline_stops(self):
        fl, _ = self.run_connections(self.scenario(1.0, 1), 12, "--journal", "{tmp}/journal.jsonl")
        self.assertEqual([l["match"] for l in read_journal(fl.path("journal.jsonl"))],
                         list(range(1, 13)))

    # ---------------------------------------------------------------- replay

    def record(self, n=16, seed=7):
        """A toxicity-0.5 run; returns (journal path, affected ordinals per the journal)."""
        fl, rtts = self.run_connections(self.scenario(0.5, seed), n,
                                        "--journal", "{tmp}/journal.jsonl")
        lines = read_journal(fl.path("journal.jsonl"))
        recorded = {l["match"] for l in lines}
        self.assertTrue(0 < len(recorded) < n, f"toxicity 0.5 hit {len(recorded)} of {n}")
        self.assertEqual(self.slow_ordinals(rtts), recorded, "the journal disagrees with the delays")
        return fl.path("journal.jsonl"), lines

    def test_replay_affects_exactly_the_recorded_connections_whatever_the_seed_and_toxicity(self):
        journal, lines = self.record()
        recorded = {l["match"] for l in lines}
        fl, rtts = self.run_connections(self.scenario(0.1, 12345), 16, "--seed", "999",
                                        "--replay", journal, "--journal", "{tmp}/replayed.jsonl")
        self.assertEqual(self.slow_ordinals(rtts), recorded, "replay delayed other connections")
        replayed = {l["match"] for l in read_journal(fl.path("replayed.jsonl"))}
        self.assertEqual(replayed, recorded, "the replay's own journal differs from the recording")

    def test_replay_leaves_connections_the_journal_does_not_name_untouched_even_at_toxicity_one(self):
        journal, lines = self.record()
        recorded = {l["match"] for l in lines}
        _, rtts = self.run_connections(self.scenario(1.0, 7), 16, "--replay", journal)
        self.assertEqual(self.slow_ordinals(rtts), recorded)

    def test_replaying_a_journal_with_lines_deleted_affects_only_the_remaining_connections(self):
        journal, lines = self.record()
        kept = lines[::2]
        with open(journal, "w", encoding="utf-8") as f:
            for l in kept:
                f.write(json.dumps(l) + "\n")
        expected = {l["match"] for l in kept}
        self.assertLess(len(expected), len(lines))
        fl, rtts = self.run_connections(self.scenario(0.5, 7), 16, "--replay", journal,
                                        "--journal", "{tmp}/replayed.jsonl")
        self.assertEqual(self.slow_ordinals(rtts), expected)
        self.assertEqual({l["match"] for l in read_journal(fl.path("replayed.jsonl"))}, expected)

    def test_a_replayed_position_that_never_comes_is_reported_at_shutdown(self):
        fl_rec, _ = self.run_connections(self.scenario(1.0, 7), 1, "--journal", "{tmp}/j.jsonl")
        line = read_journal(fl_rec.path("j.jsonl"))[0]
        line["match"] = 50  # connection 50 will never come
        journal = fl_rec.path("edited.jsonl")
        with open(journal, "w", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        fl, rtts = self.run_connections(self.scenario(1.0, 7), 3, "--replay", journal, close=False)
        self.assertEqual(self.slow_ordinals(rtts), set(), "replay fired where the journal had no line")
        before = fl.stderr_text()
        self.assertEqual(fl.stop(), 0)
        after = fl.stderr_text()[len(before):]
        report = [l for l in after.splitlines()
                  if "latency_downstream" in l and re.search(r"replay", l, re.I)]
        self.assertTrue(report, f"no shutdown report of the missing replay position:\n{after}")
        self.assertTrue(any("50" in l for l in report), f"the report does not say which one:\n{report}")


if __name__ == "__main__":
    unittest.main(verbosity=2)


class TtlTest(unittest.TestCase):
    """ttl = seconds (SPEC §2.2): a rule or toxic switches itself off, says so in the log and the
    journal, and a journal with those lines still replays."""

    def test_a_rule_and_a_toxic_switch_themselves_off_after_their_ttl(self):
        from faultline_testlib import curl, http_proxy, started_faultline, wait_until
        from http_upstream import HttpUpstream
        up = HttpUpstream()
        self.addCleanup(up.close)
        echo = EchoServer()
        self.addCleanup(echo.close)
        scenario = (http_proxy("web", up.port)
                    + 'web:rule { name = "brief", ttl = 0.5, action = http.respond(418, {}) }\n'
                    + tcp_proxy("p", echo.port)
                    + 'p:toxic { type = "latency", latency = 1, ttl = 0.5 }\n')
        fl = started_faultline(self, scenario, "--journal", "{tmp}/journal.jsonl")
        base = "http://%s:%d" % fl.addr("web")
        self.assertEqual(curl(base + "/echo/a").status, 418)
        with connect(fl.addr("p")) as c:
            echo_round_trip(c)
        expired = []

        def both_expired():
            expired[:] = [l for l in read_journal(fl.path("journal.jsonl")) if l.get("expired")]
            return len(expired) == 2
        wait_until(both_expired, timeout=5, message="both ttls to run out in the journal")
        self.assertEqual(sorted((l["proxy"], l.get("rule") or l.get("toxic")) for l in expired),
                         [("p", "latency_downstream"), ("web", "brief")])
        self.assertEqual(curl(base + "/echo/b").status, 200)
        with connect(fl.addr("p")) as c:
            echo_round_trip(c)
        self.assertEqual(fl.stop(), 0)
        log = fl.stderr_text()
        self.assertIn("rule 'brief' (proxy 'web'): its ttl is over, switched off", log)
        self.assertIn("toxic 'latency_downstream' (proxy 'p'): its ttl of 0.5 s is over", log)
        lines = read_journal(fl.path("journal.jsonl"))
        self.assertEqual([l["match"] for l in lines if l.get("toxic") and not l.get("expired")], [1],
                         "the toxic took effect on a connection after its ttl")
        self.assertEqual(len([l for l in lines if l.get("rule") and not l.get("expired")]), 1)
        # A journal with ttl lines replays, and under replay the ttl is not consulted (as `during`):
        # the recorded position fires even after the ttl.
        replay = Faultline(scenario, "--replay", fl.path("journal.jsonl"), "--journal", "{tmp}/replayed.jsonl")
        self.addCleanup(replay.close)
        replay.start()
        time.sleep(0.6)  # past the ttl: what is checked is that it does not matter under replay
        self.assertEqual(curl("http://%s:%d/echo/c" % replay.addr("web")).status, 418)
        self.assertEqual(replay.stop(), 0)
        self.assertEqual([l for l in read_journal(replay.path("replayed.jsonl")) if l.get("expired")], [])
