"""Rules as SPEC §2 writes them load and validate (`faultline check`), and a scenario with rules on
http, redis and postgres proxies runs."""
import unittest

from faultline_testlib import Faultline, run_check

SPEC_EXAMPLE = '''seed(42)
local openai = proxy { name = "openai", listen = "127.0.0.1:0", upstream = "http://127.0.0.1:8000",
                       protocol = "http" }
openai:rule { name = "throttle-first-two", match = { method = "POST", path = "/v1/chat/completions" },
              first = 2, action = openai_api.rate_limit { retry_after = 0.2 } }
openai:rule { name = "cut-third-stream", match = { path = prefix "/v1/chat", json = { stream = true } },
              nth = 3, action = http.sse_cut { after_events = 2 } }
local pg = proxy { name = "pg", listen = "127.0.0.1:0", upstream = "127.0.0.1:5432", protocol = "postgres" }
pg:rule { name = "lose-commit", match = { query = pattern "^%s*[Cc][Oo][Mm][Mm][Ii][Tt]" }, nth = 1,
          action = drop() }
pg:rule { name = "serialize", match = { query = pattern "UPDATE accounts" }, probability = 0.2,
          action = postgres.error { sqlstate = "40001",
                                    message = "could not serialize access due to concurrent update" } }
local cache = proxy { name = "cache", listen = "127.0.0.1:0", upstream = "127.0.0.1:6379", protocol = "redis" }
cache:rule { match = { command = "GET" }, every = 5,
             action = redis.error "LOADING Redis is loading the dataset in memory" }
pg:toxic { type = "latency", stream = "downstream", latency = 50, jitter = 10 }
expect { rule = "throttle-first-two", fired = 2 }
'''


class RuleDeclarationsTest(unittest.TestCase):
    def test_the_spec_example_validates_and_check_lists_every_rule_under_its_proxy(self):
        r, _ = run_check(SPEC_EXAMPLE)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        for line in ("rule 'throttle-first-two': match {method, path} -> respond",
                     "rule 'cut-third-stream': match {json:stream, path} -> sse_cut",
                     "rule 'lose-commit': match {query} -> drop",
                     "rule 'serialize': match {query} -> postgres_error",
                     "rule 'cache-1': match {command} -> redis_error"):
            self.assertIn(line, out)
        self.assertLess(out.index("proxy 'openai'"), out.index("throttle-first-two"))
        self.assertLess(out.index("cut-third-stream"), out.index("proxy 'pg'"))

    def test_the_spec_example_with_redis_and_postgres_rules_runs(self):
        with Faultline(SPEC_EXAMPLE) as fl:
            for name in ("openai", "pg", "cache"):
                self.assertTrue(fl.addr(name)[1] > 0)
            self.assertTrue(fl.alive())
            self.assertEqual(fl.stop(), 0, fl.stderr_text())

    def test_a_bad_rule_gives_file_and_line(self):
        scenario = ('local p = proxy { name = "p", listen = "127.0.0.1:0", upstream = "127.0.0.1:1",'
                    ' protocol = "http" }\n'
                    'p:rule { match = { command = "GET" }, action = drop() }\n')
        r, _ = run_check(scenario, filename="bad.lua")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"bad\.lua:2: .*match field 'command' is for redis proxies")

    def test_a_malformed_pattern_is_refused_at_load_time(self):
        scenario = ('local p = proxy { name = "p", listen = "127.0.0.1:0", upstream = "127.0.0.1:1",'
                    ' protocol = "http" }\n'
                    'p:rule { match = { path = pattern "[a" }, action = drop() }\n')
        r, _ = run_check(scenario, filename="pat.lua")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"pat\.lua:2: .*malformed pattern")


if __name__ == "__main__":
    unittest.main()
