"""Replacing the running scenario (SPEC §5): PUT /faultline/v1/scenario and SIGHUP. A broken scenario
answers 400 with FILE:LINE and changes nothing, its connections included; a good one swaps at once,
keeping the listeners whose address did not change with their open connections (which go on with the
scenario they started with), closing the proxies it drops, starting the new ones. Mid-traffic too."""

import json
import re
import signal
import socket
import threading
import unittest
import urllib.error
import urllib.request

from faultline_testlib import (EchoServer, HttpReader, connect, echo_round_trip, http_proxy, http_request,
                               read_journal, run_faultline, started_faultline, tcp_proxy, wait_until, write_journal)
from http_upstream import HttpUpstream


def call(url, method="GET", body=None):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def teapot(status, name="teapot"):
    return (f'web:rule {{ name = "{name}", match = {{ path = "/echo/tea" }}, '
            f'action = http.respond({status}, {{}}) }}\n')


class ReloadTest(unittest.TestCase):
    THREADS = "1"

    def setUp(self):
        self.up = HttpUpstream()
        self.addCleanup(self.up.close)
        self.echo = EchoServer()
        self.addCleanup(self.echo.close)

    def start(self, *args):
        scenario = http_proxy("web", self.up.port) + teapot(418) + tcp_proxy("raw", self.echo.port)
        self.fl = started_faultline(self, scenario, "--admin", "127.0.0.1:0", "--threads", self.THREADS,
                                    "--journal", "{tmp}/journal.jsonl", *args)
        m = re.search(r"control API on (http://\S+)", self.fl.stderr_text())
        self.api = m.group(1) + "/faultline/v1"
        return self.fl

    def web_scenario(self, status, *extra):
        host, port = self.fl.addr("web")
        # the address it listens on now: the listener and its connections are kept
        return http_proxy("web", self.up.port, listen=f"{host}:{port}") + teapot(status) + "".join(extra)

    def keep_alive(self):
        c = connect(self.fl.addr("web"), timeout=10)
        self.addCleanup(c.close)
        reader = HttpReader(c)

        def get(path="/echo/tea"):
            c.sendall(http_request("GET", path))
            return reader.response().status
        return get

    def test_a_broken_scenario_answers_400_with_file_and_line_and_changes_nothing(self):
        self.start()
        raw = connect(self.fl.addr("raw"))
        self.addCleanup(raw.close)
        echo_round_trip(raw)
        get = self.keep_alive()
        self.assertEqual(get(), 418)
        for source, where in [("proxy { name = 'x',\n  listen = '127.0.0.1:0'\n upstream = 1 }\n", r"scenario\.lua:3:"),
                              ('local web = proxy { name = "web", listen = "127.0.0.1:0", upstream = "127.0.0.1:1" }\n'
                               'web:toxic { type = "latncy" }\n', r"scenario\.lua:2:.*latncy")]:
            status, body = call(self.api + "/scenario", "PUT", source)
            self.assertEqual(status, 400, body)
            self.assertRegex(body["error"], where)
        self.assertEqual(call(self.api + "/scenario", "PUT", "")[0], 400)
        self.assertEqual(call(self.api + "/scenario", "POST", "x")[0], 405)
        # nothing changed: the same connections work, with the same rules, and new ones too
        echo_round_trip(raw)
        self.assertEqual(get(), 418)
        self.assertEqual(self.keep_alive()(), 418)
        _, rules = call(self.api + "/rules")
        self.assertEqual([r["name"] for r in rules], ["teapot"])
        _, journal = call(self.api + "/journal?since=0")
        self.assertEqual([line for line in journal["lines"] if "reload" in line], [])

    def test_a_good_scenario_keeps_unchanged_listeners_and_their_connections(self):
        self.start()
        raw = connect(self.fl.addr("raw"))
        self.addCleanup(raw.close)
        echo_round_trip(raw)
        old = self.keep_alive()
        self.assertEqual(old(), 418)
        other = EchoServer()
        self.addCleanup(other.close)
        status, body = call(self.api + "/scenario", "PUT",
                            "seed(7)\n" + self.web_scenario(503) + tcp_proxy("extra", other.port))
        self.assertEqual(status, 200, body)
        self.assertEqual((body["kept"], body["started"], body["stopped"], body["seed"]),
                         (["web"], ["extra"], ["raw"], 7))
        # the open keep-alive connection was kept, on the scenario it started with
        self.assertEqual(old(), 418)
        self.assertEqual(old("/echo/plain"), 200)
        # a new connection on the same listener gets the new scenario
        self.assertEqual(self.keep_alive()(), 503)
        # the dropped proxy: its connection closed, its port no longer listens
        raw.settimeout(5)
        self.assertEqual(raw.recv(10), b"")
        with self.assertRaises(OSError):
            socket.create_connection(self.fl.addr("raw"), timeout=2)
        # the new proxy listens
        _, proxies = call(self.api + "/proxies")
        self.assertEqual(sorted(p["name"] for p in proxies), ["extra", "web"])
        host, port = [p["listen"] for p in proxies if p["name"] == "extra"][0].rsplit(":", 1)
        with connect((host, int(port))) as c:
            echo_round_trip(c)
        # one rule in the report and in /metrics: what the old scenario's and the new one's did adds up
        _, report = call(self.api + "/report")
        self.assertEqual([r for r in report["rules"] if r["name"] == "teapot"],
                         [{"proxy": "web", "name": "teapot", "matched": 3, "fired": 3}])
        from prometheus_client.parser import text_string_to_metric_families
        with urllib.request.urlopen(self.api.replace("/faultline/v1", "/metrics"), timeout=5) as r:
            text = r.read().decode()
        samples = [(s.name, tuple(sorted(s.labels.items())), s.value)
                   for family in text_string_to_metric_families(text) for s in family.samples]
        keys = [(n, labels) for n, labels, _ in samples]
        self.assertEqual(len(keys), len(set(keys)), "a series appears twice")
        fired = {dict(labels)["rule"]: v for n, labels, v in samples if n == "faultline_faults_fired_total"}
        self.assertEqual(fired, {"teapot": 3})
        self.fl.stop()
        lines = read_journal(self.fl.path("journal.jsonl"))
        self.assertTrue(any(line.get("reload", "").endswith("scenario.lua") and line["seed"] == 7 for line in lines))

    def test_sighup_reloads_the_file_and_keeps_the_old_scenario_when_it_is_broken(self):
        fl = self.start()
        with open(fl.scenario_path, "w", encoding="utf-8") as f:
            f.write(self.web_scenario(503))
        fl.proc.send_signal(signal.SIGHUP)
        fl.wait_for_log(r"scenario \S+ reloaded")
        self.assertEqual(self.keep_alive()(), 503)
        with open(fl.scenario_path, "w", encoding="utf-8") as f:
            f.write(self.web_scenario(503) + "web:rule { name = 'bad', match = { nope = 1 } }\n")
        fl.proc.send_signal(signal.SIGHUP)
        fl.wait_for_log(r"reload refused, the running scenario stays: \S*scenario\.lua:\d+:")
        self.assertEqual(self.keep_alive()(), 503)
        self.assertTrue(fl.alive())

    def test_a_replayed_run_refuses_a_reload_and_a_journal_spanning_one_is_refused_by_replay(self):
        journal = write_journal(self, [{"proxy": "web", "rule": "teapot", "match": 1}])
        self.start("--replay", journal)
        status, body = call(self.api + "/scenario", "PUT", self.web_scenario(503))
        self.assertEqual(status, 409)
        self.assertIn("--replay", body["error"])
        spanning = write_journal(self, [{"seq": 1, "reload": "scenario.lua", "seed": 1},
                                        {"proxy": "web", "rule": "teapot", "match": 1}])
        r = run_faultline([self.fl.scenario_path, "--replay", spanning, "--admin", "off"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertRegex(r.stderr, r"faultline-replay-\S+\.jsonl:1: the scenario was reloaded here")

    def test_reloads_while_clients_keep_sending(self):
        self.start()
        stop = threading.Event()
        seen, problems = [], []

        def client():
            try:
                while not stop.is_set():
                    get = self.keep_alive()
                    for _ in range(5):
                        status = get()
                        seen.append(status)
                        if status not in (200, 418, 503):
                            problems.append(status)
            except Exception as e:  # noqa: BLE001 - any error is the failure looked for
                problems.append(repr(e))
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(6):
            wait_until(lambda n=len(seen): len(seen) >= n + 10, timeout=10, message="traffic between reloads")
            status, body = call(self.api + "/scenario", "PUT", self.web_scenario(503 if i % 2 == 0 else 418))
            self.assertEqual(status, 200, body)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(problems, [])
        self.assertIn(503, seen)
        self.assertEqual(self.keep_alive()(), 418)  # the last one
        self.assertTrue(self.fl.alive())


class ReloadTwoWorkersTest(ReloadTest):
    THREADS = "2"


if __name__ == "__main__":
    unittest.main()
