"""Toxiproxy's REST API at the root of the control API (SPEC §5): endpoint by endpoint with
Toxiproxy's shapes, status codes and error bodies, real connections through the proxies it makes,
and the published client library (toxiproxy-node-client from npm) through a suite's usual workflow.
Toxics changed through the API act on open connections too: tests/e2e/test_toxics_live.py."""

import json
import os
import re
import socket
import subprocess
import unittest
import urllib.error
import urllib.request

from faultline_testlib import EchoServer, connect, echo_round_trip, started_faultline, wait_until

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
SCENARIO = ('local web = proxy { name = "web", listen = "127.0.0.1:0", upstream = "127.0.0.1:1", protocol = "http" }\n'
            'local db = proxy { name = "db", listen = "127.0.0.1:0", upstream = "127.0.0.1:1" }\n'
            'db:toxic { type = "latency", latency = 5, jitter = 1 }\n')


def call(url, method="GET", body=None, ua="faultline-tests"):
    data = json.dumps(body).encode() if body is not None and not isinstance(body, (bytes, str)) else body
    if isinstance(data, str):
        data = data.encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": ua})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, (json.loads(raw) if raw.strip() else None)


class ToxiproxyApiTest(unittest.TestCase):

    def setUp(self):
        self.echo = EchoServer()
        self.addCleanup(self.echo.close)
        self.fl = started_faultline(self, SCENARIO, "--admin", "127.0.0.1:0")
        m = re.search(r"control API on (http://\S+)", self.fl.stderr_text())
        self.api = m.group(1)
        self.up = f"127.0.0.1:{self.echo.port}"

    def addr(self, listen):
        host, port = listen.rsplit(":", 1)
        return host, int(port)

    def test_version_and_the_scenario_proxies_in_toxiproxy_shapes(self):
        self.assertEqual(call(self.api + "/version"), (200, {"version": "2.12.0"}))
        status, proxies = call(self.api + "/proxies")
        self.assertEqual(status, 200)
        self.assertEqual(sorted(proxies), ["db", "web"])
        db = proxies["db"]
        self.assertEqual(list(db), ["name", "listen", "upstream", "enabled", "toxics"])
        self.assertEqual((db["name"], db["upstream"], db["enabled"]), ("db", "127.0.0.1:1", True))
        self.assertEqual(db["listen"], "%s:%d" % self.fl.addr("db"))
        self.assertEqual(db["toxics"], [{"attributes": {"jitter": 1, "latency": 5}, "name": "latency_downstream",
                                         "type": "latency", "stream": "downstream", "toxicity": 1.0}])
        self.assertEqual(call(self.api + "/proxies/db/toxics")[1], db["toxics"])
        self.assertEqual(call(self.api + "/proxies/db/toxics/latency_downstream")[1], db["toxics"][0])

    def test_a_proxy_made_through_the_api_listens_at_once_and_proxies(self):
        status, p = call(self.api + "/proxies", "POST", {"name": "cache", "listen": "127.0.0.1:0", "upstream": self.up})
        self.assertEqual(status, 201)
        self.assertEqual((p["name"], p["upstream"], p["enabled"], p["toxics"]), ("cache", self.up, True, []))
        self.assertNotEqual(p["listen"], "127.0.0.1:0")
        with connect(self.addr(p["listen"])) as c:
            echo_round_trip(c, b"through an API proxy")
        self.assertEqual(call(self.api + "/proxies/cache")[1], p)
        # faultline's own view has it too
        self.assertIn("cache", [x["name"] for x in call(self.api + "/faultline/v1/proxies")[1]])

    def test_enabled_false_closes_its_connections_and_true_listens_again_on_the_same_port(self):
        _, p = call(self.api + "/proxies", "POST", {"name": "cache", "listen": "127.0.0.1:0", "upstream": self.up})
        c = connect(self.addr(p["listen"]))
        self.addCleanup(c.close)
        echo_round_trip(c)
        status, off = call(self.api + "/proxies/cache", "POST", {"enabled": False})
        self.assertEqual((status, off["enabled"]), (200, False))
        c.settimeout(5)
        self.assertEqual(c.recv(10), b"", "the open connection was not closed")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(self.addr(p["listen"]), timeout=2)
        status, on = call(self.api + "/proxies/cache", "PATCH", {"enabled": True})
        self.assertEqual((status, on["enabled"], on["listen"]), (200, True, p["listen"]))
        with connect(self.addr(p["listen"])) as c2:
            echo_round_trip(c2)

    def test_a_scenario_proxy_on_port_0_keeps_its_port_when_disabled_and_enabled_again(self):
        _, before = call(self.api + "/proxies/db")
        self.assertNotRegex(before["listen"], r":0$")
        status, off = call(self.api + "/proxies/db", "POST", {"enabled": False})
        self.assertEqual((status, off["listen"], off["enabled"]), (200, before["listen"], False))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(self.addr(before["listen"]), timeout=2)
        # a client library sends the listen it was shown back with the change: not a move
        status, on = call(self.api + "/proxies/db", "POST", {"enabled": True, "listen": off["listen"]})
        self.assertEqual((status, on["listen"], on["enabled"]), (200, before["listen"], True))
        socket.create_connection(self.addr(before["listen"]), timeout=2).close()
        call(self.api + "/proxies/db", "POST", {"enabled": False})
        self.assertEqual(call(self.api + "/reset", "POST")[0], 204)
        self.assertEqual(call(self.api + "/proxies/db")[1]["listen"], before["listen"])
        socket.create_connection(self.addr(before["listen"]), timeout=2).close()
        # a new upstream alone moves nothing else: the same port serves it
        status, moved = call(self.api + "/proxies/db", "POST", {"upstream": self.up})
        self.assertEqual((status, moved["listen"], moved["upstream"]), (200, before["listen"], self.up))
        with connect(self.addr(before["listen"])) as c:
            echo_round_trip(c)

    def test_changing_the_upstream_moves_the_proxy_and_reset_re_enables_every_proxy(self):
        other = EchoServer()
        self.addCleanup(other.close)
        _, p = call(self.api + "/proxies", "POST", {"name": "cache", "upstream": self.up})
        status, moved = call(self.api + "/proxies/cache", "POST", {"upstream": f"127.0.0.1:{other.port}"})
        self.assertEqual((status, moved["upstream"]), (200, f"127.0.0.1:{other.port}"))
        with connect(self.addr(moved["listen"])) as c:
            echo_round_trip(c)
        wait_until(lambda: other.accepted() == 1, timeout=5, message="the new upstream to get the connection")
        call(self.api + "/proxies/cache", "POST", {"enabled": False})
        call(self.api + "/proxies/db", "POST", {"enabled": False})
        status, body = call(self.api + "/reset", "POST")
        self.assertEqual((status, body), (204, None))
        _, proxies = call(self.api + "/proxies")
        self.assertTrue(all(p["enabled"] for p in proxies.values()), proxies)
        self.assertEqual(proxies["db"]["toxics"], [], "reset removes toxics")

    def test_populate_creates_keeps_and_replaces(self):
        status, body = call(self.api + "/populate", "POST", [{"name": "a", "upstream": self.up},
                                                             {"name": "b", "upstream": self.up, "enabled": False}])
        self.assertEqual(status, 201)
        self.assertEqual([(p["name"], p["enabled"]) for p in body["proxies"]], [("a", True), ("b", False)])
        a_listen = body["proxies"][0]["listen"]
        status, again = call(self.api + "/populate", "POST", [{"name": "a", "listen": a_listen, "upstream": self.up}])
        self.assertEqual((status, again["proxies"][0]["listen"]), (201, a_listen))
        status, err = call(self.api + "/populate", "POST", [{"name": "c", "upstream": self.up}, {"name": "d"}])
        self.assertEqual((status, err), (400, {"error": "missing required field: upstream at proxy 2", "status": 400}))
        self.assertNotIn("c", call(self.api + "/proxies")[1], "a refused populate created something")

    def test_errors_have_toxiproxys_status_codes_and_bodies(self):
        self.assertEqual(call(self.api + "/proxies/nope"), (404, {"error": "proxy not found", "status": 404}))
        self.assertEqual(call(self.api + "/proxies/db/toxics/nope"), (404, {"error": "toxic not found", "status": 404}))
        body = {"name": "dup", "upstream": self.up}
        self.assertEqual(call(self.api + "/proxies", "POST", body)[0], 201)
        self.assertEqual(call(self.api + "/proxies", "POST", body), (409, {"error": "proxy already exists", "status": 409}))
        self.assertEqual(call(self.api + "/proxies", "POST", {"upstream": self.up}),
                         (400, {"error": "missing required field: name", "status": 400}))
        self.assertEqual(call(self.api + "/proxies", "POST", "{not json")[0], 400)
        self.assertEqual(call(self.api + "/proxies", "POST", {"name": "x", "upstream": "nohost"})[0], 400)
        self.assertEqual(call(self.api + "/proxies/dup", "DELETE"), (204, None))
        self.assertEqual(call(self.api + "/proxies/dup", "DELETE")[0], 404)
        self.assertEqual(call(self.api + "/proxies/web", "POST", {"upstream": self.up})[0], 400)  # an http proxy of the scenario
        self.assertEqual(call(self.api + "/proxies/db/toxics", "POST", {"type": "warp"}),
                         (400, {"error": "invalid toxic type", "status": 400}))
        self.assertEqual(call(self.api + "/proxies/db/toxics", "POST", {"type": "latency", "stream": "sideways"}),
                         (400, {"error": "stream was invalid, can be either upstream or downstream", "status": 400}))
        self.assertEqual(call(self.api + "/proxies/db/toxics", "POST", {"type": "latency"}),
                         (409, {"error": "toxic already exists", "status": 409}))  # latency_downstream, the scenario's
        self.assertEqual(call(self.api + "/proxies/db/toxics", "POST",
                              {"type": "latency", "name": "neg", "attributes": {"latency": -5}})[0], 400)
        self.assertEqual(call(self.api + "/proxies/db/toxics/nope", "DELETE"), (404, {"error": "toxic not found", "status": 404}))
        self.assertEqual(call(self.api + "/proxies", ua="Mozilla/5.0 (X11)"), (403, {"error": "User agent not allowed", "status": 403}))
        self.assertTrue(self.fl.alive())

    def test_toxics_made_changed_and_removed_through_the_api(self):
        _, p = call(self.api + "/proxies", "POST", {"name": "cache", "upstream": self.up})
        addr = self.addr(p["listen"])

        def round_trip_ms():
            with connect(addr) as c:
                return echo_round_trip(c) * 1000
        status, toxic = call(self.api + "/proxies/cache/toxics", "POST",
                             {"type": "latency", "attributes": {"latency": 300}})
        self.assertEqual(status, 200)  # Toxiproxy answers 200 here (201 is for proxies)
        self.assertEqual(toxic, {"attributes": {"jitter": 0, "latency": 300}, "name": "latency_downstream",
                                 "type": "latency", "stream": "downstream", "toxicity": 1.0})
        self.assertGreaterEqual(round_trip_ms(), 300)
        status, changed = call(self.api + "/proxies/cache/toxics/latency_downstream", "PATCH", {"attributes": {"latency": 0}})
        self.assertEqual((status, changed["attributes"]), (200, {"jitter": 0, "latency": 0}))
        self.assertLess(round_trip_ms(), 300)
        _, up = call(self.api + "/proxies/cache/toxics", "POST",
                     {"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 10}})
        self.assertEqual(up["name"], "limit_data_upstream")
        _, listed = call(self.api + "/proxies/cache/toxics")
        self.assertEqual([t["name"] for t in listed], ["limit_data_upstream", "latency_downstream"])  # upstream first
        self.assertEqual(call(self.api + "/proxies/cache/toxics/limit_data_upstream", "DELETE"), (204, None))
        self.assertEqual(call(self.api + "/reset", "POST")[0], 204)
        self.assertEqual(call(self.api + "/proxies/cache/toxics"), (200, []))
        # every toxic made through the API was decided per connection and journaled like the scenario's
        _, report = call(self.api + "/faultline/v1/report")
        self.assertIn({"proxy": "cache", "name": "latency_downstream", "connections": 2}, report["toxics"])

    def test_the_published_client_library_drives_a_suites_workflow(self):
        m = re.search(r"control API on (http://\S+)", self.fl.stderr_text())
        r = subprocess.run(["node", "toxiproxy_steps.mjs", m.group(1), self.up], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        steps = {s["step"]: s["value"] for s in map(json.loads, r.stdout.splitlines())}
        self.assertEqual(steps["echo"], "ping through the proxy")
        self.assertEqual(steps["echo-while-disabled"], "ECONNREFUSED")
        self.assertEqual(steps["echo-after-reset"], "again")
        self.assertEqual(steps["populated"], ["redis_master", "redis_replica"])
        self.assertEqual(steps["after-remove"], ["db", "redis_master", "web"])
        self.assertIn("404", steps["missing"])
        self.assertEqual(steps["toxic"]["attributes"], {"latency": 300, "jitter": 0})
        self.assertTrue(steps["slow-ms-at-least-300"])
        self.assertEqual(steps["updated-latency"], 0)
        self.assertTrue(steps["fast-ms-under-300"])
        self.assertEqual(steps["get-toxic"], {"jitter": 0, "latency": 0})
        self.assertIn("404", steps["toxic-after-remove"])


if __name__ == "__main__":
    unittest.main()
