"""The control API's native endpoints (SPEC §5, /faultline/v1) over real HTTP: proxies and rules,
enable/disable with a ttl, the journal ring, the kill switch, the report; its security (bearer
token, loopback by default, bounded bodies, malformed requests) and errors."""

import json
import os
import re
import socket
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

from faultline_testlib import (FAULTLINE_BIN, EchoServer, connect, curl, echo_round_trip, http_proxy,
                               read_journal, run_faultline, started_faultline, tcp_proxy, wait_until)
from http_upstream import HttpUpstream

ADMIN_RE = re.compile(r"control API on http://(\S+):(\d+)")


def admin_url(fl):
    m = ADMIN_RE.search(fl.stderr_text())
    assert m, fl.stderr_text()
    return f"http://{m.group(1)}:{m.group(2)}"


def call(url, method="GET", body=None, headers=None):
    """(status, parsed JSON body or text) of one request."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in ctype else raw.decode())


RULES = ('web:rule { name = "teapot", match = { path = "/echo/tea" }, action = http.respond(418, {}) }\n'
         'web:rule { name = "brief", match = { path = "/echo/brief" }, ttl = 60, action = http.respond(503, {}) }\n')


class AdminApiTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream()
        self.addCleanup(self.up.close)
        self.echo = EchoServer()
        self.addCleanup(self.echo.close)

    def start(self, *args):
        scenario = (http_proxy("web", self.up.port) + RULES + tcp_proxy("raw", self.echo.port)
                    + 'raw:toxic { type = "latency", latency = 1 }\n')
        fl = started_faultline(self, scenario, "--admin", "127.0.0.1:0", "--journal", "{tmp}/journal.jsonl", *args)
        self.api = admin_url(fl) + "/faultline/v1"
        self.web = "http://%s:%d" % fl.addr("web")
        return fl

    def get_status(self, path):
        return curl(self.web + path).status

    def test_proxies_and_rules_describe_the_running_scenario(self):
        fl = self.start()
        self.assertEqual(self.get_status("/echo/tea"), 418)
        status, proxies = call(self.api + "/proxies")
        self.assertEqual(status, 200)
        self.assertEqual([p["name"] for p in proxies], ["web", "raw"])
        web = proxies[0]
        self.assertEqual((web["protocol"], web["listen"], web["rules"]),
                         ("http", "%s:%d" % fl.addr("web"), ["teapot", "brief"]))
        self.assertEqual(web["connections"], 1)
        self.assertEqual(proxies[1]["toxics"][0]["name"], "latency_downstream")
        self.assertEqual(proxies[1]["toxics"][0]["attributes"], {"jitter": 0, "latency": 1})
        status, rules = call(self.api + "/rules")
        self.assertEqual(status, 200)
        teapot = rules[0]
        self.assertEqual((teapot["name"], teapot["proxy"], teapot["enabled"], teapot["matched"], teapot["fired"]),
                         ("teapot", "web", True, 1, 1))
        self.assertEqual(rules[1]["ttl"], 60)

    def test_disable_and_enable_a_rule_and_a_ttl_given_by_the_api(self):
        self.start()
        status, rule = call(self.api + "/rules/teapot/disable", "POST")
        self.assertEqual((status, rule["enabled"]), (200, False))
        self.assertEqual(self.get_status("/echo/tea"), 200)
        status, rule = call(self.api + "/rules/teapot/enable", "POST", '{"ttl": 0.3}')
        self.assertEqual((status, rule["enabled"]), (200, True))
        self.assertEqual(self.get_status("/echo/tea"), 418)

        def expired():
            _, body = call(self.api + "/journal?since=0")
            return [l for l in body["lines"] if l.get("expired")]
        lines = wait_until(expired, timeout=5, message="the API-given ttl to run out")
        self.assertEqual((lines[0]["rule"], lines[0]["proxy"]), ("teapot", "web"))
        self.assertEqual(self.get_status("/echo/tea"), 200)

    def test_the_journal_since_a_seq_and_its_bounded_ring(self):
        fl = self.start("--journal-lines", "2")
        for _ in range(3):
            self.assertEqual(self.get_status("/echo/tea"), 418)
        status, body = call(self.api + "/journal?since=0")
        self.assertEqual(status, 200)
        self.assertEqual([l["seq"] for l in body["lines"]], [2, 3])
        self.assertEqual((body["next"], body["dropped"]), (3, 1))
        status, body = call(self.api + "/journal?since=3")
        self.assertEqual((body["lines"], body["next"], body["dropped"]), ([], 3, 0))
        self.assertEqual(call(self.api + "/journal?since=-1")[0], 400)
        self.assertEqual(call(self.api + "/journal?since=x")[0], 400)
        wait_until(lambda: len(read_journal(fl.path("journal.jsonl"))) == 3, timeout=5,
                   message="the file to keep every line")

    def test_reset_is_a_kill_switch_for_rules_and_toxics_mid_traffic(self):
        fl = self.start()
        self.assertEqual(self.get_status("/echo/tea"), 418)
        with connect(fl.addr("raw")) as c:
            echo_round_trip(c)
        status, body = call(self.api + "/reset", "POST")
        self.assertEqual((status, body), (200, {"rules_disabled": 2, "toxics_disabled": 1}))
        self.assertEqual(self.get_status("/echo/tea"), 200)
        self.assertEqual(self.get_status("/echo/brief"), 200)
        with connect(fl.addr("raw")) as c:
            echo_round_trip(c)
        _, report = call(self.api + "/report")
        self.assertEqual(report["toxics"], [{"proxy": "raw", "name": "latency_downstream", "connections": 1}])
        _, rules = call(self.api + "/rules")
        self.assertEqual([r["enabled"] for r in rules], [False, False])

    def test_the_kill_switch_while_four_clients_keep_sending(self):
        # Every answer stays whole and is either the fault or the upstream's, the clients never see a
        # broken connection, and once the reset has answered no fault fires any more.
        import threading
        from faultline_testlib import HttpReader, http_request
        fl = self.start()
        stop = threading.Event()
        seen, problems = [], []
        after_reset = threading.Event()
        late_faults = []

        def client():
            try:
                with connect(fl.addr("web")) as s:
                    reader = HttpReader(s)
                    while not stop.is_set():
                        was_after = after_reset.is_set()
                        s.sendall(http_request("GET", "/echo/tea"))
                        r = reader.response()
                        seen.append(r.status)
                        if r.status not in (200, 418):
                            problems.append(r.status)
                        if was_after and r.status == 418:
                            late_faults.append(r)
            except Exception as e:  # noqa: BLE001 - any error is the failure being tested for
                problems.append(repr(e))
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: seen.count(418) >= 20, timeout=10, message="faults under traffic")
        self.assertEqual(call(self.api + "/reset", "POST")[0], 200)
        after_reset.set()
        n = len(seen)
        wait_until(lambda: len(seen) >= n + 40, timeout=10, message="traffic after the reset")
        stop.set()
        for t in threads:
            t.join(timeout=10)
        self.assertEqual(problems, [])
        self.assertEqual(late_faults, [], "a fault fired after the kill switch answered")
        self.assertIn(200, seen[n:])
        self.assertTrue(fl.alive())

    def test_report_and_expectations_are_served(self):
        self.start()
        self.get_status("/echo/tea")
        status, report = call(self.api + "/report")
        self.assertEqual(status, 200)
        self.assertEqual(list(report), ["seed", "rules", "toxics", "expectations", "unreached"])
        self.assertEqual(report["rules"][0], {"proxy": "web", "name": "teapot", "matched": 1, "fired": 1})
        self.assertEqual(call(self.api + "/expectations"), (200, []))

    def test_errors_are_json_with_the_status_and_never_stop_the_api(self):
        fl = self.start()
        self.assertEqual(call(self.api + "/nope"), (404, {"error": "no such endpoint: GET /faultline/v1/nope", "status": 404}))
        self.assertEqual(call(self.api + "/rules", "POST")[0], 405)
        self.assertEqual(call(self.api + "/rules/ghost/enable", "POST")[1]["error"], "no rule named 'ghost'")
        status, body = call(self.api + "/rules/teapot/enable", "POST", '{"ttl": "soon"}')
        self.assertEqual((status, body["error"]), (400, "ttl must be a positive number of seconds"))
        status, body = call(self.api + "/rules/teapot/enable", "POST", "x" * (2 * 1024 * 1024))
        self.assertEqual(status, 413, body)
        host, port = admin_url(fl)[7:].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n")
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer)
        self.assertIn(b"malformed request", answer)
        self.assertEqual(call(self.api + "/proxies")[0], 200)
        self.assertTrue(fl.alive())


class AdminSecurityTest(unittest.TestCase):

    def test_with_a_token_every_request_needs_it(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        fl = started_faultline(self, http_proxy("web", up.port), "--admin", "127.0.0.1:0", "--admin-token", "s3cret")
        api = admin_url(fl) + "/faultline/v1/proxies"
        status, body = call(api)
        self.assertEqual(status, 401)
        self.assertIn("bearer token", body["error"])
        self.assertEqual(call(api, headers={"Authorization": "Bearer wrong!"})[0], 401)
        self.assertEqual(call(api, headers={"Authorization": "Bearer s3cret"})[0], 200)

    def test_a_non_loopback_address_without_a_token_is_refused_at_start(self):
        r = run_faultline(["--admin", "0.0.0.0:0", "/nonexistent.lua"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("is not loopback: set --admin-token", r.stderr)

    def test_an_admin_address_in_use_given_explicitly_is_an_error(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        tmp = self.enterContext(__import__("tempfile").TemporaryDirectory())
        path = os.path.join(tmp, "s.lua")
        with open(path, "w") as f:
            f.write(tcp_proxy("p", 1))
        r = run_faultline([path, "--admin", f"127.0.0.1:{port}"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"control API --admin 127.0.0.1:{port}", r.stderr)

    def test_run_exports_the_admin_url(self):
        up = HttpUpstream()
        self.addCleanup(up.close)
        tmp = self.enterContext(__import__("tempfile").TemporaryDirectory())
        path = os.path.join(tmp, "s.lua")
        with open(path, "w") as f:
            f.write(http_proxy("web", up.port))
        script = ("import os, urllib.request\n"
                  "print(urllib.request.urlopen(os.environ['FAULTLINE_ADMIN_URL'] + '/faultline/v1/proxies').status)\n")
        r = subprocess.run([FAULTLINE_BIN, "run", path, "--admin", "127.0.0.1:0", "--", sys.executable, "-c", script],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "200"), r.stderr)


if __name__ == "__main__":
    unittest.main()


class MetricsTest(unittest.TestCase):
    """GET /metrics after known traffic, read with prometheus_client's own parser."""

    def test_metrics_after_known_traffic_parse_and_add_up(self):
        from prometheus_client.parser import text_string_to_metric_families
        up = HttpUpstream()
        self.addCleanup(up.close)
        echo = EchoServer()
        self.addCleanup(echo.close)
        scenario = (http_proxy("web", up.port) + RULES + tcp_proxy("raw", echo.port)
                    + 'raw:toxic { type = "latency", latency = 1 }\n'
                    + tcp_proxy("dead", 1))
        fl = started_faultline(self, scenario, "--admin", "127.0.0.1:0")
        base = "http://%s:%d" % fl.addr("web")
        statuses = [curl(base + path).status for path in ("/echo/tea", "/echo/a", "/echo/tea")]
        self.assertEqual(statuses, [418, 200, 418])
        with connect(fl.addr("raw")) as c:
            echo_round_trip(c, b"x" * 1000)
        with connect(fl.addr("dead")) as c:  # its upstream refuses: one connect error
            c.settimeout(5)
            self.assertEqual(c.recv(1), b"")
        url = admin_url(fl) + "/metrics"
        req = urllib.request.urlopen(url, timeout=5)
        self.assertTrue(req.headers["content-type"].startswith("text/plain; version=0.0.4"))
        text = req.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

        def value(name, **labels):
            return samples[(name, tuple(sorted(labels.items())))]
        self.assertEqual(value("faultline_connections_total", proxy="web"), 3)
        self.assertEqual(value("faultline_connections_total", proxy="raw"), 1)
        self.assertEqual(value("faultline_messages_total", proxy="web", protocol="http"), 3)
        self.assertEqual(value("faultline_faults_fired_total", proxy="web", rule="teapot", action="respond"), 2)
        self.assertEqual(value("faultline_rule_matches_total", proxy="web", rule="teapot"), 2)
        self.assertEqual(value("faultline_rule_enabled", proxy="web", rule="brief"), 1)
        self.assertEqual(value("faultline_toxic_connections_total", proxy="raw", toxic="latency_downstream",
                               type="latency", stream="downstream"), 1)
        self.assertEqual(value("faultline_bytes_total", proxy="raw", direction="upstream"), 1000)
        self.assertEqual(value("faultline_bytes_total", proxy="raw", direction="downstream"), 1000)
        self.assertGreater(value("faultline_bytes_total", proxy="web", direction="upstream"), 0)
        self.assertEqual(value("faultline_upstream_connect_errors_total", proxy="dead"), 1)
        # one forwarded request: one latency observation, in the buckets that cumulate to it
        self.assertEqual(value("faultline_upstream_response_seconds_count", proxy="web"), 1)
        self.assertEqual(value("faultline_upstream_response_seconds_bucket", proxy="web", le="+Inf"), 1)
        self.assertEqual(value("faultline_upstream_response_seconds_bucket", proxy="web", le="10.0"), 1)
        self.assertGreater(value("faultline_upstream_response_seconds_sum", proxy="web"), 0)
        self.assertGreater(value("faultline_journal_lines_total"), 2)
        call(admin_url(fl) + "/faultline/v1/reset", "POST")
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        self.assertIn('faultline_toxic_enabled{proxy="raw",toxic="latency_downstream"} 0', text)
        self.assertIn('faultline_rule_enabled{proxy="web",rule="teapot"} 0', text)

    def test_a_proxy_moved_through_the_toxiproxy_api_keeps_one_series_that_adds_up(self):
        # Moved, "raw" stays in memory (removed) beside its replacement under the same name: /metrics must
        # still have one series per label set, counting both, and the report each rule and toxic once.
        # (Rules cannot be doubled this way, only tcp proxies move and they have none: a reload will.)
        from collections import Counter
        from prometheus_client.parser import text_string_to_metric_families
        up = HttpUpstream()
        self.addCleanup(up.close)
        echo, other = EchoServer(), EchoServer()
        self.addCleanup(echo.close)
        self.addCleanup(other.close)
        scenario = (http_proxy("web", up.port) + RULES + tcp_proxy("raw", echo.port)
                    + 'raw:toxic { type = "latency", latency = 1 }\n')
        fl = started_faultline(self, scenario, "--admin", "127.0.0.1:0")
        admin = admin_url(fl)
        self.assertEqual(curl("http://%s:%d/echo/tea" % fl.addr("web")).status, 418)
        for _ in range(2):
            with connect(fl.addr("raw")) as c:
                echo_round_trip(c, b"x" * 100)
        status, moved = call(admin + "/proxies/raw", "POST", json.dumps({"upstream": f"127.0.0.1:{other.port}"}))
        self.assertEqual((status, moved["upstream"]), (200, f"127.0.0.1:{other.port}"), moved)
        host, port = moved["listen"].rsplit(":", 1)
        for _ in range(3):
            with connect((host, int(port))) as c:
                echo_round_trip(c, b"y" * 100)
        self.assertEqual(other.accepted(), 3)  # the moved proxy took them

        text = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
        keys = Counter()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                keys[key] += 1
                samples[key] = s.value
        self.assertEqual([k for k, n in keys.items() if n > 1], [], text)

        def value(name, **labels):
            return samples[(name, tuple(sorted(labels.items())))]
        self.assertEqual(value("faultline_connections_total", proxy="raw"), 5)
        self.assertEqual(value("faultline_bytes_total", proxy="raw", direction="upstream"), 500)
        self.assertEqual(value("faultline_toxic_connections_total", proxy="raw", toxic="latency_downstream",
                               type="latency", stream="downstream"), 5)
        self.assertEqual(value("faultline_toxic_enabled", proxy="raw", toxic="latency_downstream"), 1)
        self.assertEqual(value("faultline_connections_total", proxy="web"), 1)
        self.assertEqual(value("faultline_faults_fired_total", proxy="web", rule="teapot", action="respond"), 1)
        wait_until(lambda: "faultline_connections_active{proxy=\"raw\"} 0\n" in
                   urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode(),
                   timeout=5, message="the closed connections of both to leave the active count")

        status, report = call(admin + "/faultline/v1/report")
        self.assertEqual(status, 200)
        self.assertEqual([(r["proxy"], r["name"]) for r in report["rules"]], [("web", "teapot"), ("web", "brief")])
        self.assertEqual(report["rules"][0]["fired"], 1)
        self.assertEqual(report["toxics"], [{"proxy": "raw", "name": "latency_downstream", "connections": 5}])
