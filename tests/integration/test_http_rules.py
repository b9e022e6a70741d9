"""Rules on an http proxy: matchers, schedules, keys and function rules on real requests
(SPEC §2.1-2.3); the seed, the journal and replay (SPEC §3-4); expectations and the shutdown
report (SPEC §2.5)."""

import json
import time
import unittest

from faultline_testlib import (Faultline, HttpReader, check_sanitizers, connect, curl, http_proxy,
                               http_request, read_journal, sha256, started_faultline, wait_until, write_journal)
from http_upstream import HttpUpstream

MiB = 1 << 20
JOURNAL_KEYS = ["seq", "t_ms", "proxy", "conn", "protocol", "rule", "match", "action", "detail", "message"]


def hit(name):
    return f'http.respond(418, {{ body = "{name}" }})'


MATCHER_RULES = f'''
p:rule {{ name = "m-method", match = {{ method = "DELETE" }}, action = {hit("method")} }}
p:rule {{ name = "m-path", match = {{ path = "/echo/exact" }}, action = {hit("path")} }}
p:rule {{ name = "m-prefix", match = {{ path = prefix "/echo/pre/" }}, action = {hit("prefix")} }}
p:rule {{ name = "m-pattern", match = {{ path = pattern "^/echo/items/%d+$" }}, action = {hit("pattern")} }}
p:rule {{ name = "m-query", match = {{ path = "/echo/q", query = {{ mode = "fail" }} }}, action = {hit("query")} }}
p:rule {{ name = "m-header", match = {{ header = {{ ["X-Fault"] = "yes" }} }}, action = {hit("header")} }}
p:rule {{ name = "m-json", match = {{ json = {{ model = "broken" }} }}, action = {hit("json")} }}
p:rule {{ name = "m-any", match = {{ path = any_of {{ "/echo/a1", "/echo/a2" }} }}, action = {hit("any_of")} }}
p:rule {{ name = "s-first", match = {{ path = "/echo/first" }}, first = 2, action = {hit("first")} }}
p:rule {{ name = "s-nth", match = {{ path = "/echo/nth" }}, nth = 3, action = {hit("nth")} }}
p:rule {{ name = "s-nth-list", match = {{ path = "/echo/nth-list" }}, nth = {{ 2, 5 }}, action = {hit("nth")} }}
p:rule {{ name = "s-after", match = {{ path = "/echo/after" }}, after = 3, action = {hit("after")} }}
p:rule {{ name = "s-every", match = {{ path = "/echo/every" }}, every = 3, action = {hit("every")} }}
p:rule {{ name = "s-times", match = {{ path = "/echo/times" }}, times = 2, action = {hit("times")} }}
p:rule {{ name = "s-every-times", match = {{ path = "/echo/every-times" }}, every = 2, times = 2, action = {hit("et")} }}
p:rule {{ name = "s-during-later", match = {{ path = "/echo/during-later" }}, during = {{ from = 3600, to = 7200 }},
          action = {hit("later")} }}
p:rule {{ name = "s-during-now", match = {{ path = "/echo/during-now" }}, during = {{ from = 0, to = 3600 }},
          action = {hit("now")} }}
p:rule {{ name = "s-during-soon", match = {{ path = "/echo/during-soon" }}, during = {{ from = 0.5, to = 3600 }},
          action = {hit("soon")} }}
p:rule {{ name = "keyed", match = {{ path = "/echo/keyed" }}, key = "header:x-test-id", first = 2,
          action = {hit("keyed")} }}
p:rule {{ name = "fn", match = {{ path = prefix "/echo/fn/" }}, action = function(msg, ctx)
  if msg.path:find("hit", 1, true) then return http.respond(418, {{ body = "fn " .. ctx.count }}) end
  return nil
end }}
p:rule {{ name = "thrower", match = {{ path = "/echo/throw" }}, action = function(msg, ctx)
  error("boom from the rule")  -- THROW-LINE
end }}
'''


def fired(responses):
    """1-based positions of the responses a respond rule made."""
    return [i for i, r in enumerate(responses, start=1) if r.status == 418]


def exchange_all(addr, requests):
    """Sends requests one after another on one keep-alive connection; returns the responses."""
    out = []
    with connect(addr) as s:
        reader = HttpReader(s)
        for req in requests:
            s.sendall(req)
            out.append(reader.response())
    return out


class HttpMatchersAndSchedulesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream()
        cls.scenario = http_proxy("p", cls.up.port) + MATCHER_RULES
        cls.fl = Faultline(cls.scenario, "--journal", "{tmp}/journal.jsonl")
        cls.t_launch = time.monotonic()
        try:
            cls.fl.start()
        except BaseException:
            cls.up.close()
            raise
        cls.addr = cls.fl.addr("p")

    @classmethod
    def tearDownClass(cls):
        cls.fl.close()
        check_sanitizers(cls.fl)
        cls.up.close()

    def get(self, path, headers=(), method="GET", body=None):
        return exchange_all(self.addr, [http_request(method, path, headers, body)])[0]

    def assert_hit(self, resp, name):
        self.assertEqual((resp.status, resp.body.decode()), (418, name), resp)

    def assert_passed(self, resp, target=None):
        self.assertEqual(resp.status, 200, resp)
        if target:
            self.assertEqual(resp.json()["target"], target)

    def schedule(self, path, n):
        return fired(exchange_all(self.addr, [http_request("GET", path)] * n))

    # ---------------------------------------------------------------- matchers

    def test_method_matches_exactly(self):
        self.assert_hit(self.get("/echo/m", method="DELETE"), "method")
        self.assert_passed(self.get("/echo/m", method="PUT", body=b""), "/echo/m")

    def test_path_matches_the_whole_path_without_the_query(self):
        self.assert_hit(self.get("/echo/exact?x=1"), "path")
        self.assert_passed(self.get("/echo/exact/more"), "/echo/exact/more")
        self.assert_passed(self.get("/echo/exac"), "/echo/exac")

    def test_prefix_and_pattern_and_any_of(self):
        self.assert_hit(self.get("/echo/pre/anything"), "prefix")
        self.assert_passed(self.get("/echo/pre"), "/echo/pre")
        self.assert_hit(self.get("/echo/items/42"), "pattern")
        self.assert_passed(self.get("/echo/items/42a"), "/echo/items/42a")
        self.assert_hit(self.get("/echo/a2"), "any_of")
        self.assert_passed(self.get("/echo/a3"), "/echo/a3")

    def test_query_matches_one_parameter(self):
        self.assert_hit(self.get("/echo/q?a=1&mode=fail"), "query")
        self.assert_passed(self.get("/echo/q?mode=ok"), "/echo/q?mode=ok")
        self.assert_passed(self.get("/echo/q"), "/echo/q")

    def test_header_names_match_case_insensitively(self):
        self.assert_hit(self.get("/echo/h", [("x-fault", "yes")]), "header")
        self.assert_passed(self.get("/echo/h", [("X-Fault", "no")]), "/echo/h")

    def test_json_matches_a_top_level_field_of_the_body(self):
        body = json.dumps({"model": "broken", "messages": []}).encode()
        self.assert_hit(self.get("/echo/j", [("Content-Type", "application/json")], "POST", body), "json")
        body = json.dumps({"model": "fine"}).encode()
        self.assert_passed(self.get("/echo/j", [("Content-Type", "application/json")], "POST", body), "/echo/j")

    def test_json_over_1_mib_is_not_looked_into_and_the_request_passes_intact(self):
        body = json.dumps({"model": "broken", "pad": "p" * (MiB + 200_000)}).encode()
        resp = self.get("/echo/big-json", [("Content-Type", "application/json")], "POST", body)
        self.assert_passed(resp, "/echo/big-json")
        echo = resp.json()
        self.assertEqual((echo["body_len"], echo["body_sha256"]), (len(body), sha256(body)))

    # ---------------------------------------------------------------- schedules

    def test_first_nth_after_every(self):
        self.assertEqual(self.schedule("/echo/first", 5), [1, 2])
        self.assertEqual(self.schedule("/echo/nth", 5), [3])
        self.assertEqual(self.schedule("/echo/nth-list", 6), [2, 5])
        self.assertEqual(self.schedule("/echo/after", 6), [4, 5, 6])
        self.assertEqual(self.schedule("/echo/every", 7), [3, 6])

    def test_times_stops_after_n_fires(self):
        self.assertEqual(self.schedule("/echo/times", 5), [1, 2])
        self.assertEqual(self.schedule("/echo/every-times", 8), [2, 4])

    def test_during_fires_only_inside_its_window(self):
        self.assertEqual(self.schedule("/echo/during-later", 3), [])
        self.assertEqual(self.schedule("/echo/during-now", 3), [1, 2, 3])
        deadline = time.monotonic() + 5
        while True:
            resp = self.get("/echo/during-soon")
            if resp.status == 418:
                break
            self.assertLess(time.monotonic(), deadline, "during { from = 0.5 } never fired")
            time.sleep(0.02)  # pacing the polling, not synchronising
        self.assertGreaterEqual(time.monotonic() - self.t_launch, 0.5, "during fired before its window")

    def test_a_header_key_counts_each_client_on_its_own_however_they_interleave(self):
        with connect(self.addr) as a, connect(self.addr) as b:
            ra, rb = HttpReader(a), HttpReader(b)
            got = {"A": [], "B": []}
            for _ in range(3):
                for name, s, r in (("A", a, ra), ("B", b, rb)):
                    s.sendall(http_request("GET", "/echo/keyed", [("X-Test-Id", name)]))
                    got[name].append(r.response().status)
        self.assertEqual(got, {"A": [418, 418, 200], "B": [418, 418, 200]})

        def keyed_lines():  # the journal is written in batches: poll for the four lines
            lines = [l for l in read_journal(self.fl.path("journal.jsonl")) if l.get("rule") == "keyed"]
            return lines if len(lines) >= 4 else None
        lines = wait_until(keyed_lines, timeout=5, message="four journal lines of rule 'keyed'")
        self.assertEqual(sorted((l.get("key"), l["match"]) for l in lines),
                         [("A", 1), ("A", 2), ("B", 1), ("B", 2)], lines)

    def test_a_function_rule_fires_when_it_returns_an_action_and_passes_on_nil(self):
        responses = exchange_all(self.addr, [http_request("GET", p) for p in
                                             ("/echo/fn/hit", "/echo/fn/miss", "/echo/fn/hit-again")])
        self.assertEqual((responses[0].status, responses[0].body), (418, b"fn 1"))
        self.assert_passed(responses[1], "/echo/fn/miss")
        self.assertEqual((responses[2].status, responses[2].body), (418, b"fn 3"))

    def test_a_rule_function_that_throws_lets_the_request_pass_and_logs_file_and_line(self):
        line = next(i for i, text in enumerate(self.scenario.splitlines(), start=1) if "THROW-LINE" in text)
        body = b'{"model": "x", "n": 1}'
        resp = self.get("/echo/throw", [("Content-Type", "application/json")], "POST", body)
        self.assert_passed(resp, "/echo/throw")
        self.assertEqual(resp.json()["body"], body.decode(), "the request was harmed")
        m = self.fl.wait_for_log(r"scenario\.lua:(\d+):[^\n]*boom from the rule")
        self.assertEqual(int(m.group(1)), line, m.group(0))


class HttpDeterminismTest(unittest.TestCase):
    N = 120
    SCENARIO_RULE = ('p:rule { name = "coin", match = { path = prefix "/echo/coin" }, probability = 0.3, '
                     'action = http.respond(418, { body = "coin" }) }\n')

    def setUp(self):
        self.up = HttpUpstream()
        self.addCleanup(self.up.close)

    def run_once(self, *args, n=None):
        """Runs faultline with args, sends n requests in order, stops it. Returns (fired positions,
        journal lines, stderr)."""
        fl = started_faultline(self, http_proxy("p", self.up.port) + self.SCENARIO_RULE,
                               "--journal", "{tmp}/j.jsonl", *args)
        responses = exchange_all(fl.addr("p"), [http_request("GET", f"/echo/coin?i={i}")
                                                for i in range(1, (n or self.N) + 1)])
        for r in responses:
            self.assertIn(r.status, (200, 418), r)
        self.assertEqual(fl.stop(), 0, fl.stderr_text())
        return fired(responses), read_journal(fl.path("j.jsonl")), fl.stderr_text()

    def test_the_same_seed_fires_the_same_requests_and_writes_the_same_journal(self):
        a, ja, _ = self.run_once("--seed", "7")
        b, jb, _ = self.run_once("--seed", "7")
        c, _, _ = self.run_once("--seed", "8")
        self.assertEqual(a, b, "seed 7 fired different requests on two runs")
        self.assertNotEqual(a, c, "seeds 7 and 8 fired the same requests")
        self.assertTrue(15 <= len(a) <= 60, f"probability 0.3 fired {len(a)} of {self.N}")
        self.assertEqual([l["match"] for l in ja], a, "the journal does not list the fired requests")

        def strip(lines):
            return [{k: v for k, v in l.items() if k not in ("t_ms", "conn")} for l in lines]
        self.assertEqual(strip(ja), strip(jb))

    def test_a_journal_line_has_the_documented_keys_in_order(self):
        _, lines, _ = self.run_once("--seed", "7", n=20)
        self.assertTrue(lines, "nothing was journaled")
        for l in lines:
            self.assertEqual(list(l.keys()), JOURNAL_KEYS, l)
            self.assertEqual((l["proxy"], l["protocol"], l["rule"], l["action"]), ("p", "http", "coin", "respond"))
            self.assertEqual(l["detail"], {"status": 418})
            self.assertEqual(l["message"], {"method": "GET", "path": "/echo/coin"})
            self.assertIsInstance(l["conn"], int)
            self.assertIsInstance(l["t_ms"], (int, float))
        seqs = [l["seq"] for l in lines]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))

    def write(self, lines):
        """lines as a journal file; returns its path."""
        return write_journal(self, lines)

    def test_replay_of_a_journal_with_lines_deleted_fires_exactly_the_kept_positions(self):
        original, journal, _ = self.run_once("--seed", "7")
        kept = journal[::2]
        self.assertTrue(kept)
        replayed, _, _ = self.run_once("--seed", "8", "--replay", self.write(kept))
        self.assertEqual(replayed, [l["match"] for l in kept])
        self.assertNotEqual(replayed, original)

    def test_a_replayed_position_that_never_comes_is_reported_at_shutdown(self):
        _, journal, _ = self.run_once("--seed", "7")
        late = [l for l in journal if l["match"] > 60]
        self.assertTrue(late, "seed 7 fired nothing after request 60")
        replayed, _, log = self.run_once("--replay", self.write(journal), n=60)
        self.assertEqual(replayed, [l["match"] for l in journal if l["match"] <= 60])
        never = [line for line in log.splitlines() if "replay:" in line and "never came" in line]
        self.assertEqual(len(never), len(late), log)


class HttpExpectationsTest(unittest.TestCase):

    def test_the_shutdown_report_lists_rules_and_met_and_unmet_expectations(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        scenario = (http_proxy("p", up.port)
                    + 'p:rule { name = "two", match = { path = "/echo/x" }, first = 2, action = http.respond(418, {}) }\n'
                    + 'p:rule { name = "never", match = { path = "/echo/none" }, action = drop() }\n'
                    + 'expect { rule = "two", fired = 2 }\n'
                    + 'expect { rule = "two", fired_at_least = 3 }\n'
                    + 'expect { rule = "never", fired = 1 }\n')
        fl = started_faultline(self, scenario)
        r = curl(f"http://{fl.addr('p')[0]}:{fl.addr('p')[1]}/echo/x")
        self.assertEqual((r.exit, r.status), (0, 418), r)
        statuses = [resp.status for resp in exchange_all(fl.addr("p"), [http_request("GET", "/echo/x")] * 2)]
        self.assertEqual(statuses, [418, 200])
        self.assertEqual(fl.stop(), 0)
        log = fl.stderr_text()
        self.assertIn("rule 'two' (proxy 'p'): matched 3, fired 2", log)
        self.assertIn("rule 'never' (proxy 'p'): matched 0, fired 0", log)
        met = [l for l in log.splitlines() if "expectation met:" in l]
        unmet = [l for l in log.splitlines() if "expectation NOT met:" in l]
        self.assertEqual(len(met), 1, log)
        self.assertIn("'two'", met[0])
        self.assertEqual(len(unmet), 2, log)
        self.assertTrue(any("'two'" in l and "fired 2" in l for l in unmet), unmet)
        self.assertTrue(any("'never'" in l and "fired 0" in l for l in unmet), unmet)


if __name__ == "__main__":
    unittest.main()
