"""`faultline run SCENARIO -- CMD` (SPEC §1, §4.2): the proxies start, CMD runs with their addresses in
its environment and our stdin/stdout/stderr, signals reach it, and faultline exits with CMD's code, or 3
when CMD succeeded but an expectation was not met or a replayed fault never came, or 2 on a bad
scenario (CMD never runs). The report goes to stderr and, with --report-json, to a file."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from faultline_testlib import FAULTLINE_BIN, EchoServer, http_proxy, tcp_proxy, wait_until
from http_upstream import HttpUpstream

# A client for CMD: GETs each path through the http proxy named by $FAULTLINE_P_URL, prints the statuses.
CLIENT = r'''
import os, sys, urllib.request, urllib.error
base = os.environ["FAULTLINE_P_URL"]
for path in sys.argv[1:]:
    try:
        status = urllib.request.urlopen(base + path, timeout=5).status
    except urllib.error.HTTPError as e:
        status = e.code
    print(path, status, flush=True)
'''


class RunTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream()
        cls.addClassCleanup(cls.up.close)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="faultline-run-")
        self.client = self.write("client.py", CLIENT)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def scenario(self, rules="", expects=""):
        return self.write("scenario.lua", http_proxy("p", self.up.port) + rules + expects)

    def run_fl(self, scenario, *cmd, extra=(), stdin=None, timeout=60):
        return subprocess.run([FAULTLINE_BIN, "run", scenario, "--log-level", "warn", *extra, "--", *cmd],
                              input=stdin, capture_output=True, text=True, timeout=timeout, cwd=self.tmp)

    TEAPOT = ('p:rule { name = "teapot", match = { path = "/echo/tea" }, first = 2, '
              'action = http.respond(418, {}) }\n')

    def test_cmd_gets_the_addresses_and_its_exit_code_is_faultlines(self):
        sc = self.write("scenario.lua", http_proxy("p", self.up.port) + tcp_proxy("my-db", 1)
                        + 'proxy { name = "cache", listen = "127.0.0.1:0", upstream = "127.0.0.1:1", protocol = "redis" }\n')
        r = self.run_fl(sc, "sh", "-c", 'echo "$FAULTLINE_P_ADDR|$FAULTLINE_P_URL|$FAULTLINE_MY_DB_URL|'
                                         '$FAULTLINE_CACHE_URL"; exit 5')
        self.assertEqual(r.returncode, 5, r.stderr)
        addr, url, db_url, cache_url = r.stdout.strip().split("|")
        host, port = addr.rsplit(":", 1)
        self.assertEqual(host, "127.0.0.1")
        self.assertGreater(int(port), 0)
        self.assertEqual(url, f"http://{addr}")
        self.assertRegex(db_url, r"^tcp://127\.0\.0\.1:\d+$")
        self.assertRegex(cache_url, r"^redis://127\.0\.0\.1:\d+$")

    def test_a_met_expectation_exits_0_and_the_report_has_the_numbers(self):
        sc = self.scenario(self.TEAPOT, 'expect { rule = "teapot", fired = 2 }\n')
        report = os.path.join(self.tmp, "report.json")
        r = self.run_fl(sc, sys.executable, self.client, "/echo/tea", "/echo/tea", "/echo/tea", "/echo/x",
                        extra=("--report-json", report, "--seed", "9"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["/echo/tea", "418", "/echo/tea", "418", "/echo/tea", "200", "/echo/x", "200"])
        self.assertIn("rule 'teapot' (proxy 'p'): matched 3, fired 2", r.stderr)
        self.assertIn("seed 9", r.stderr)
        with open(report, encoding="utf-8") as f:
            doc = json.load(f)
        self.assertEqual(list(doc), ["seed", "rules", "toxics", "expectations", "unreached"])
        self.assertEqual(doc["seed"], 9)
        self.assertEqual(doc["rules"], [{"proxy": "p", "name": "teapot", "matched": 3, "fired": 2}])
        self.assertEqual(doc["expectations"][0]["rule"], "teapot")
        self.assertEqual((doc["expectations"][0]["fired"], doc["expectations"][0]["met"]), (2, True))
        self.assertEqual(doc["unreached"], [])

    def test_an_unmet_expectation_turns_success_into_3_but_keeps_a_failure_code(self):
        sc = self.scenario(self.TEAPOT, 'expect { rule = "teapot", fired_at_least = 1 }\n')
        r = self.run_fl(sc, sys.executable, self.client, "/echo/x")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("expectation NOT met: rule 'teapot' fired_at_least = 1 but fired 0", r.stderr)
        r = self.run_fl(sc, "sh", "-c", "exit 4")
        self.assertEqual(r.returncode, 4, r.stderr)

    def test_a_toxic_counts_the_connections_it_took_effect_on(self):
        echo = EchoServer()
        self.addCleanup(echo.close)
        sc = self.write("scenario.lua", tcp_proxy("p", echo.port) +
                        'p:toxic { type = "latency", latency = 1 }\nexpect { toxic = "latency_downstream", fired = 3 }\n')
        script = self.write("three.py", "import os, socket\nh, p = os.environ['FAULTLINE_P_ADDR'].rsplit(':', 1)\n"
                                        "for _ in range(3):\n    s = socket.create_connection((h, int(p)))\n"
                                        "    s.sendall(b'x'); s.recv(1); s.close()\n")
        report = os.path.join(self.tmp, "report.json")
        r = self.run_fl(sc, sys.executable, script, extra=("--report-json", report))
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(report, encoding="utf-8") as f:
            doc = json.load(f)
        self.assertEqual(doc["toxics"], [{"proxy": "p", "name": "latency_downstream", "connections": 3}])

    def test_a_replayed_fault_that_never_comes_exits_3_and_is_reported_as_its_journal_line(self):
        sc = self.scenario(self.TEAPOT)
        journal = os.path.join(self.tmp, "journal.jsonl")
        r = self.run_fl(sc, sys.executable, self.client, "/echo/tea", "/echo/tea", extra=("--journal", journal))
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(journal, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        self.assertEqual([l["match"] for l in lines], [1, 2])
        report = os.path.join(self.tmp, "report.json")
        r = self.run_fl(sc, sys.executable, self.client, "/echo/tea",
                        extra=("--replay", journal, "--report-json", report))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stdout.split(), ["/echo/tea", "418"])
        self.assertIn("replay: recorded fault never came", r.stderr)
        with open(report, encoding="utf-8") as f:
            doc = json.load(f)
        self.assertEqual(doc["unreached"], [lines[1]])

    def test_a_bad_scenario_exits_2_and_never_runs_the_command(self):
        sc = self.write("scenario.lua", 'proxy { name = "p", listen = "127.0.0.1:0" }\n')
        marker = os.path.join(self.tmp, "ran")
        r = self.run_fl(sc, "touch", marker)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("scenario.lua:1", r.stderr)
        self.assertFalse(os.path.exists(marker), "the command ran despite the broken scenario")

    def test_stdin_and_stdout_are_the_commands(self):
        r = self.run_fl(self.scenario(), "cat", stdin="through faultline run\n")
        self.assertEqual((r.returncode, r.stdout), (0, "through faultline run\n"), r.stderr)

    def test_a_missing_command_exits_127_naming_it(self):
        r = self.run_fl(self.scenario(), "no-such-command-for-faultline")
        self.assertEqual(r.returncode, 127, r.stderr)
        self.assertIn("cannot run 'no-such-command-for-faultline'", r.stderr)

    def test_sigterm_goes_to_the_command_and_its_end_stops_faultline(self):
        ready = os.path.join(self.tmp, "ready")
        script = self.write("wait.py", "import signal, sys, time\n"
                                       "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
                                       f"open({ready!r}, 'w').close()\n"
                                       "time.sleep(30)\n")
        proc = subprocess.Popen([FAULTLINE_BIN, "run", self.scenario(), "--log-level", "info", "--",
                                 sys.executable, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.tmp)
        self.addCleanup(proc.kill)
        wait_until(lambda: os.path.exists(ready), timeout=10, message="the command to start")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 42, err)  # the command's handler ran: it got the SIGTERM
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn("SIGTERM received, passing it to the command", err)


if __name__ == "__main__":
    unittest.main()
