"""Rules on a protocol = "redis" proxy (SPEC §2.1-2.3) in front of a real redis-server, driven by
redis-py, redis-cli, redis-benchmark and raw RESP3 sockets: injected errors and replies in their
place under pipelining, MULTI/EXEC, pub/sub pushes, CLIENT REPLY, MONITOR, blocking commands, the
generic actions, Cluster redirections, and determinism with key = "key"."""

import json
import socket
import subprocess
import threading
import time
import unittest

from faultline_testlib import (Faultline, RedisServer, check_sanitizers, race, read_journal, wait_until,
                               write_journal)

import redis  # after faultline_testlib, which makes Debian's python3-redis importable


def redis_proxy(name, port, var=None):
    var = var or name
    return (f'local {var} = proxy {{ name = "{name}", listen = "127.0.0.1:0", '
            f'upstream = "127.0.0.1:{port}", protocol = "redis" }}\n')


RULES = r'''
cache:rule { name = "loading", match = { command = "get", key = prefix "loading:" }, key = "key", first = 1,
             action = redis.error "LOADING Redis is loading the dataset in memory" }
cache:rule { name = "pipe-error", match = { command = "INCRBY", key = "pipe:3" }, action = redis.error "ERR injected" }
cache:rule { name = "queued", match = { command = "SET", key = "tx:bad" }, action = redis.error "ERR injected in multi" }
cache:rule { name = "int", match = { command = "GET", key = "reply:int" }, action = redis.reply(42) }
cache:rule { name = "nil", match = { command = "GET", key = "reply:nil" }, action = redis.reply(redis.null) }
cache:rule { name = "list", match = { command = "GET", key = "reply:list" },
             action = redis.reply { "a", 7, redis.null, { "nested" } } }
cache:rule { name = "slow", match = { command = "GET", key = "delay:slow" }, action = delay(200) }
cache:rule { name = "after", match = { command = "SET", key = "drop:after" }, action = drop { after_forward = true } }
cache:rule { name = "before", match = { command = "SET", key = "drop:before" }, action = drop() }
cache:rule { name = "rst", match = { command = "GET", key = "reset:me" }, action = reset() }
cache:rule { name = "hang", match = { command = "GET", key = "hang:me" }, action = hang { ms = 300 } }
cache:rule { name = "moved", match = { command = "GET", key = prefix "moved:" }, key = "key", first = 1,
             action = redis.error("MOVED 3999 127.0.0.1:" .. REAL_PORT) }
cache:rule { name = "auth", match = { command = "AUTH", args = { "journaled" } }, action = redis.error "WRONGPASS invalid username-password pair" }
cache:rule { name = "args", match = { command = "HSET", args = { [2] = "poison" } }, action = redis.error "ERR poisoned field" }
'''


def resp_command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class RespReader:
    """Reads RESP2/RESP3 frames from a socket: returns (type, value); pushes are ('>', [...])."""

    def __init__(self, sock, timeout=5.0):
        self.sock, self.buf = sock, b""
        sock.settimeout(timeout)

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"closed; have {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed mid-frame")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def frame(self):
        line = self._line()
        t, rest = chr(line[0]), line[1:]
        if t in "+-(,":
            return t, rest.decode()
        if t == ":":
            return t, int(rest)
        if t == "#":
            return t, rest == b"t"
        if t == "_":
            return t, None
        if t in "$=!":
            n = int(rest)
            return t, None if n < 0 else self._exactly(n)
        if t in "*~>":
            n = int(rest)
            return t, None if n < 0 else [self.frame()[1] for _ in range(n)]
        if t == "%":
            return t, {self.frame()[1]: self.frame()[1] for _ in range(int(rest))}
        raise AssertionError(f"unexpected RESP type {line!r}")


class RedisRulesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)
        scenario = (f"local REAL_PORT = {cls.redis.port}\n" + redis_proxy("cache", cls.redis.port) + RULES)
        cls.fl = Faultline(scenario, "--journal", "{tmp}/journal.jsonl")
        cls.fl.start()
        cls.addClassCleanup(cls.fl.close)

    @classmethod
    def tearDownClass(cls):
        check_sanitizers(cls.fl)

    def setUp(self):
        self.direct = self.client(self.redis.addr)

    def client(self, addr=None, **kw):
        addr = addr or self.fl.addr("cache")
        c = redis.Redis(host=addr[0], port=addr[1], socket_timeout=10, socket_connect_timeout=10, **kw)
        self.addCleanup(c.close)
        return c

    def raw(self):
        s = socket.create_connection(self.fl.addr("cache"), timeout=10)
        self.addCleanup(s.close)
        return s, RespReader(s)

    def fired(self, rule, count):
        """The journal lines of `rule`, once there are `count` of them (the journal is written behind)."""
        lines = []

        def enough():
            lines[:] = [l for l in read_journal(self.fl.path("journal.jsonl")) if l["rule"] == rule]
            return len(lines) >= count
        wait_until(enough, timeout=5, message=f"{count} journal line(s) of rule {rule}")
        return lines

    # ---------------------------------------------------------------- the cases

    def test_an_injected_loading_raises_busy_loading_error_and_the_retry_succeeds(self):
        self.direct.set("loading:a", "ready")
        c = self.client()
        with self.assertRaises(redis.exceptions.BusyLoadingError):
            c.get("loading:a")
        self.assertEqual(c.get("loading:a"), b"ready")
        lines = self.fired("loading", 1)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["message"], {"command": "GET", "key": "loading:a"})

    def test_a_pipeline_of_five_with_one_injected_error_keeps_every_other_reply_in_place(self):
        self.direct.delete(*[f"pipe:{i}" for i in range(1, 6)])
        pipe = self.client().pipeline(transaction=False)
        for i in range(1, 6):
            pipe.incr(f"pipe:{i}", i * 10)
        results = pipe.execute(raise_on_error=False)
        self.assertEqual([results[0], results[1], results[3], results[4]], [10, 20, 40, 50])
        self.assertIsInstance(results[2], redis.exceptions.ResponseError)
        self.assertIn("injected", str(results[2]))
        self.assertIsNone(self.direct.get("pipe:3"), "the errored command reached the server")
        self.assertEqual(self.direct.get("pipe:5"), b"50")

    def test_multi_exec_with_an_errored_command_aborts_and_the_server_keeps_nothing(self):
        self.direct.delete("tx:a", "tx:bad", "tx:c")
        c = self.client()
        pipe = c.pipeline(transaction=True)
        pipe.set("tx:a", "1")
        pipe.set("tx:bad", "2")
        pipe.set("tx:c", "3")
        with self.assertRaises(redis.exceptions.ResponseError) as caught:
            pipe.execute()
        self.assertIn("injected in multi", str(caught.exception))
        self.assertEqual((self.direct.get("tx:a"), self.direct.get("tx:c")), (None, None),
                         "the server ran a transaction the client saw fail")
        # the connection is not left inside a MULTI on the server
        self.assertTrue(c.set("tx:after", "ok"))
        self.assertEqual(self.direct.get("tx:after"), b"ok")

    def test_a_raw_multi_gets_execabort_as_redis_would_answer_it(self):
        s, r = self.raw()
        s.sendall(resp_command("MULTI") + resp_command("SET", "tx:raw", "1") + resp_command("SET", "tx:bad", "x")
                  + resp_command("EXEC") + resp_command("GET", "tx:raw"))
        self.assertEqual(r.frame(), ("+", "OK"))
        self.assertEqual(r.frame(), ("+", "QUEUED"))
        self.assertEqual(r.frame(), ("-", "ERR injected in multi"))
        self.assertEqual(r.frame(), ("-", "EXECABORT Transaction discarded because of previous errors."))
        self.assertEqual(r.frame(), ("$", None))

    def test_a_reply_given_to_a_queued_command_takes_its_place_in_the_exec_array(self):
        self.direct.set("tx:real", "R")
        pipe = self.client().pipeline(transaction=True)
        pipe.get("tx:real")
        pipe.get("reply:int")
        pipe.incr("tx:counter")
        self.direct.delete("tx:counter")
        self.assertEqual(pipe.execute(), [b"R", 42, 1])

    def test_injected_replies_of_every_kind(self):
        c = self.client()
        self.assertEqual(c.get("reply:int"), 42)
        self.assertIsNone(c.get("reply:nil"))
        self.assertEqual(c.execute_command("GET", "reply:list"), [b"a", 7, None, [b"nested"]])

    def test_args_matches_an_argument_by_position(self):
        c = self.client()
        with self.assertRaises(redis.exceptions.ResponseError):
            c.hset("h:args", "poison", "1")
        self.assertEqual(c.hset("h:args", "fine", "1"), 1)
        self.assertIsNone(self.direct.hget("h:args", "poison"))

    def test_resp3_subscriber_receives_pushes_beside_injected_replies(self):
        s, r = self.raw()
        s.sendall(resp_command("HELLO", "3"))
        t, hello = r.frame()
        self.assertEqual(t, "%")
        self.assertEqual(hello[b"proto"], 3)
        s.sendall(resp_command("SUBSCRIBE", "news"))
        self.assertEqual(r.frame(), (">", [b"subscribe", b"news", 1]))
        publisher = self.client()
        for i in range(3):
            self.assertEqual(publisher.publish("news", f"m{i}"), 1)
        s.sendall(resp_command("GET", "reply:nil") + resp_command("GET", "reply:int") + resp_command("PING"))
        frames = [r.frame() for _ in range(6)]
        pushes = [f for f in frames if f[0] == ">"]
        replies = [f for f in frames if f[0] != ">"]
        self.assertEqual(pushes, [(">", [b"message", b"news", f"m{i}".encode()]) for i in range(3)])
        self.assertEqual(replies, [("_", None), (":", 42), ("+", "PONG")])

    def test_resp2_pubsub_through_redis_py_with_rules_in_force(self):
        c = self.client()
        ps = c.pubsub()
        self.addCleanup(ps.close)
        ps.subscribe("chan")
        first = ps.get_message(timeout=5)
        self.assertEqual(first["type"], "subscribe")
        self.client().publish("chan", "hello")
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = ps.get_message(timeout=1)
        self.assertEqual((msg["type"], msg["data"]), ("message", b"hello"))
        ps.unsubscribe("chan")
        self.assertEqual(ps.get_message(timeout=5)["type"], "unsubscribe")
        # the same connection answers ordinary commands in order again
        self.assertEqual(c.get("reply:int"), 42)

    def test_client_reply_off_and_skip_take_no_reply_slot(self):
        s, r = self.raw()
        s.sendall(resp_command("CLIENT", "REPLY", "OFF") + resp_command("SET", "cr:a", "1")
                  + resp_command("GET", "reply:int") + resp_command("CLIENT", "REPLY", "ON")
                  + resp_command("CLIENT", "REPLY", "SKIP") + resp_command("GET", "cr:a")
                  + resp_command("GET", "cr:a"))
        self.assertEqual(r.frame(), ("+", "OK"))  # CLIENT REPLY ON
        self.assertEqual(r.frame(), ("$", b"1"))  # the second GET; the first was skipped
        self.assertEqual(self.direct.get("cr:a"), b"1")

    def test_monitor_lines_are_passed_on(self):
        s, r = self.raw()
        s.sendall(resp_command("MONITOR"))
        self.assertEqual(r.frame(), ("+", "OK"))
        self.direct.set("mon:key", "v")
        t, line = r.frame()
        while "mon:key" not in line:
            t, line = r.frame()
        self.assertEqual(t, "+")

    def test_blocking_commands_time_out_and_are_woken_through_the_proxy(self):
        c = self.client()
        self.direct.delete("bl:list")
        t0 = time.monotonic()
        self.assertIsNone(c.blpop("bl:list", timeout=1))
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        threading.Timer(0.2, lambda: self.client(self.redis.addr).rpush("bl:list", "x")).start()
        self.assertEqual(c.blpop("bl:list", timeout=5), (b"bl:list", b"x"))

    def test_select_and_auth_errors_pass_through(self):
        c = self.client(db=3)
        c.set("db:three", "3")
        self.assertEqual(self.client(self.redis.addr, db=3).get("db:three"), b"3")
        self.assertIsNone(self.direct.get("db:three"))
        with self.assertRaises(redis.exceptions.ResponseError):
            self.client().execute_command("AUTH", "nobody", "wrong")  # the server's own answer
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "WRONGPASS"):
            self.client().execute_command("AUTH", "journaled", "hunter2")  # a rule's
        line = self.fired("auth", 1)[0]
        self.assertEqual(line["message"], {"command": "AUTH"})
        self.assertNotIn("hunter2", json.dumps(line))

    # ---------------------------------------------------------------- generic actions

    def test_delay_holds_a_command_and_keeps_the_pipeline_in_order(self):
        self.direct.set("delay:slow", "late")
        self.direct.delete("delay:n")
        pipe = self.client().pipeline(transaction=False)
        pipe.get("delay:slow")
        pipe.incr("delay:n")
        pipe.get("reply:int")
        t0 = time.monotonic()
        self.assertEqual(pipe.execute(), [b"late", 1, 42])
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)

    def test_drop_after_forward_lets_the_write_happen_but_the_client_never_hears(self):
        self.direct.delete("drop:after")
        with self.assertRaises(redis.exceptions.ConnectionError):
            self.client(retry_on_timeout=False).set("drop:after", "written")
        deadline = time.monotonic() + 5
        while self.direct.get("drop:after") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.direct.get("drop:after"), b"written")

    def test_drop_closes_before_the_write_reaches_the_server(self):
        self.direct.delete("drop:before")
        with self.assertRaises(redis.exceptions.ConnectionError):
            self.client().set("drop:before", "never")
        self.assertIsNone(self.direct.get("drop:before"))

    def test_reset_resets_the_connection_after_earlier_replies(self):
        s, r = self.raw()
        s.sendall(resp_command("GET", "reply:int") + resp_command("GET", "reset:me"))
        self.assertEqual(r.frame(), (":", 42))
        with self.assertRaises((ConnectionResetError, EOFError)):
            r.frame()

    def test_hang_with_ms_closes_after_holding(self):
        s, r = self.raw()
        t0 = time.monotonic()
        s.sendall(resp_command("GET", "hang:me"))
        with self.assertRaises(EOFError):
            r.frame()
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)

    # ---------------------------------------------------------------- clients and tools

    def test_redis_cli_in_cluster_mode_follows_an_injected_moved(self):
        self.direct.set("moved:k", "found on the other node")
        host, port = self.fl.addr("cache")
        out = subprocess.run(["redis-cli", "-c", "-h", host, "-p", str(port), "GET", "moved:k"],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(out.stdout.strip(), "found on the other node", out.stdout + out.stderr)
        self.assertEqual(len(self.fired("moved", 1)), 1)

    def test_redis_benchmark_with_rules_in_force_pipelined_and_not(self):
        host, port = self.fl.addr("cache")
        for pipeline in ("1", "16"):
            out = subprocess.run(["redis-benchmark", "-h", host, "-p", str(port), "-q", "-n", "20000",
                                  "-c", "20", "-P", pipeline, "-t", "set,get,incr,lpush,lrange_100"],
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            text = out.stdout.replace("\r", "\n")
            for name in ("SET", "GET", "INCR", "LPUSH"):
                self.assertRegex(text, name + r": [\d.]+ requests per second")
        self.assertTrue(self.fl.alive())

    def test_a_malformed_command_gets_redis_protocol_error_then_close(self):
        s, r = self.raw()
        s.sendall(b"*1\r\n$4\r\nPING\r\n*x\r\n")
        self.assertEqual(r.frame(), ("+", "PONG"))
        t, text = r.frame()
        self.assertEqual(t, "-")
        self.assertIn("Protocol error", text)
        with self.assertRaises(EOFError):
            r.frame()
        self.assertTrue(self.fl.alive())

    def test_a_large_pipeline_in_one_write_is_answered_in_order(self):
        s, r = self.raw()
        n = 10000
        s.sendall(b"".join(resp_command("ECHO", f"e{i}") for i in range(n)))
        for i in range(n):
            self.assertEqual(r.frame(), ("$", f"e{i}".encode()))


class RedisDeterminismTest(unittest.TestCase):
    """SPEC §3: with key = "key", each key's fires depend only on the seed, however clients race."""

    SCENARIO = r'''
cache:rule { name = "flaky", match = { command = "GET" }, key = "key", probability = 0.5,
             action = redis.error "LOADING flaky" }
'''

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)

    def run_once(self, *args):
        fl = Faultline(redis_proxy("cache", self.redis.port) + self.SCENARIO, "--journal", "{tmp}/j.jsonl", *args)
        self.addCleanup(fl.close)
        fl.start()
        outcomes = {}

        def worker(k):
            c = redis.Redis(*fl.addr("cache"), socket_timeout=10)
            got = []
            for _ in range(20):
                try:
                    c.get(f"det:{k}")
                    got.append(".")
                except redis.exceptions.BusyLoadingError:
                    got.append("1")
            c.close()
            outcomes[k] = "".join(got)

        race(worker, range(6))
        fl.stop()
        return outcomes, read_journal(fl.path("j.jsonl"))

    def test_racing_clients_get_the_same_faults_per_key_on_every_run_and_replay_repeats_them(self):
        a, journal = self.run_once("--seed", "11")
        b, _ = self.run_once("--seed", "11")
        self.assertEqual(a, b)
        self.assertTrue(any("1" in v for v in a.values()) and any("." in v for v in a.values()))
        self.assertEqual(sorted({l["key"] for l in journal}), sorted(f"det:{k}" for k in a if "1" in a[k]))
        c, _ = self.run_once("--seed", "12")
        self.assertNotEqual(a, c)
        path = write_journal(self, journal)
        replayed, _ = self.run_once("--seed", "99", "--replay", path)
        self.assertEqual(replayed, a)


class RedisEdgesTest(unittest.TestCase):
    """What a protocol-aware redis proxy does at the edges: an unreachable server, clients that vanish
    mid-command, and toxics together with rules on the same connection."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)

    def start(self, scenario):
        fl = Faultline(scenario)
        self.addCleanup(fl.close)
        fl.start()
        self.addCleanup(check_sanitizers, fl)
        return fl

    def test_an_unreachable_server_gets_an_error_reply_naming_it(self):
        from faultline_testlib import refused_port
        holder, port = refused_port()
        self.addCleanup(holder.close)
        fl = self.start(redis_proxy("cache", port) + 'cache:rule { match = { command = "NEVER" }, action = redis.error "ERR x" }\n')
        s = socket.create_connection(fl.addr("cache"), timeout=10)
        self.addCleanup(s.close)
        s.sendall(resp_command("PING"))
        t, text = RespReader(s).frame()
        self.assertEqual(t, "-")
        self.assertIn("unreachable", text)
        self.assertIn(f"127.0.0.1:{port}", text)
        self.assertTrue(fl.alive())

    def test_clients_vanishing_mid_command_leave_the_proxy_serving(self):
        fl = self.start(redis_proxy("cache", self.redis.port) + 'cache:rule { match = { command = "GET", key = "x" }, action = delay(100) }\n')
        for partial in (b"*3\r\n$3\r\nSET\r\n$1\r\nk", b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n", b"*1\r\n$9999999\r\nab"):
            s = socket.create_connection(fl.addr("cache"), timeout=10)
            s.sendall(partial)
            s.close()
        c = redis.Redis(*fl.addr("cache"), socket_timeout=10)
        self.addCleanup(c.close)
        self.assertTrue(c.ping())
        self.assertTrue(fl.alive())

    def test_a_server_that_answers_garbage_closes_the_connection_and_is_logged(self):
        from faultline_testlib import TcpServer

        def garbage(conn, record):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            conn.recv(65536)
        up = TcpServer(garbage)
        self.addCleanup(up.close)
        fl = self.start(redis_proxy("cache", up.port) + 'cache:rule { match = { command = "NEVER" }, action = redis.error "ERR x" }\n')
        s = socket.create_connection(fl.addr("cache"), timeout=10)
        self.addCleanup(s.close)
        s.sendall(resp_command("PING"))
        with self.assertRaises((EOFError, ConnectionResetError)):
            RespReader(s).frame()
        fl.wait_for_log(r"bad reply from upstream .*type byte")
        self.assertTrue(fl.alive())

    def test_earlier_replies_arrive_before_a_drop_after_forward_and_a_delay_before_it_keeps_order(self):
        fl = self.start(redis_proxy("cache", self.redis.port)
                        + 'cache:rule { match = { command = "GET", key = "o:slow" }, action = delay(100) }\n'
                        + 'cache:rule { match = { command = "SET", key = "o:lost" }, action = drop { after_forward = true } }\n')
        direct = redis.Redis(*self.redis.addr)
        self.addCleanup(direct.close)
        direct.set("o:slow", "s")
        direct.delete("o:lost")
        s = socket.create_connection(fl.addr("cache"), timeout=10)
        self.addCleanup(s.close)
        s.sendall(resp_command("GET", "o:slow") + resp_command("ECHO", "two") + resp_command("SET", "o:lost", "v")
                  + resp_command("ECHO", "never"))
        r = RespReader(s)
        self.assertEqual(r.frame(), ("$", b"s"))
        self.assertEqual(r.frame(), ("$", b"two"))
        with self.assertRaises((EOFError, ConnectionResetError)):
            r.frame()
        wait_until(lambda: direct.get("o:lost") == b"v", timeout=5, message="the forwarded SET")

    def test_many_pipelining_clients_each_get_every_reply_in_its_place(self):
        fl = self.start(redis_proxy("cache", self.redis.port)
                        + 'cache:rule { match = { command = "GET", key = prefix "e:" }, probability = 0.3, action = redis.error "ERR e" }\n'
                        + 'cache:rule { match = { command = "ECHO", args = { prefix "d:" } }, probability = 0.2, action = delay(3) }\n'
                        + 'cache:rule { match = { command = "GET", key = prefix "r:" }, probability = 0.3, action = redis.reply(7) }\n')
        failures = []

        def client(n):
            try:
                c = redis.Redis(*fl.addr("cache"), socket_timeout=20)
                for round_ in range(5):
                    pipe = c.pipeline(transaction=False)
                    expected = []
                    for i in range(60):
                        kind = i % 4
                        if kind == 0:
                            pipe.set(f"e:{n}:{i}", f"v{i}")
                            expected.append(("eq", True))
                        elif kind == 1:
                            pipe.get(f"e:{n}:{i - 1}")
                            expected.append(("or-error", f"v{i - 1}".encode()))
                        elif kind == 2:
                            pipe.echo(f"d:{n}:{round_}:{i}")
                            expected.append(("eq", f"d:{n}:{round_}:{i}".encode()))
                        else:
                            pipe.get(f"r:{n}:{i}")
                            expected.append(("or-seven", None))
                    got = pipe.execute(raise_on_error=False)
                    for (how, want), have in zip(expected, got):
                        ok = (have == want if how == "eq" else
                              have == want or (isinstance(have, redis.exceptions.ResponseError) and str(have) == "e")
                              if how == "or-error" else have in (None, 7))
                        if not ok:
                            failures.append((n, round_, how, want, have))
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append((n, repr(e)))

        race(client, range(16))
        self.assertEqual(failures, [])
        self.assertTrue(fl.alive())

    def test_toxics_and_rules_on_the_same_connection(self):
        fl = self.start(redis_proxy("cache", self.redis.port)
                        + 'cache:toxic { type = "latency", stream = "downstream", latency = 20 }\n'
                        + 'cache:toxic { type = "slicer", stream = "upstream", average_size = 3, delay = 0 }\n'
                        + 'cache:toxic { type = "slicer", stream = "downstream", average_size = 2, delay = 0 }\n'
                        + 'cache:rule { match = { command = "GET", key = "t:err" }, action = redis.error "ERR injected" }\n'
                        + 'cache:rule { match = { command = "GET", key = "t:slow" }, action = delay(50) }\n')
        c = redis.Redis(*fl.addr("cache"), socket_timeout=10)
        self.addCleanup(c.close)
        big = bytes(range(256)) * 1024
        c.set("t:big", big)
        pipe = c.pipeline(transaction=False)
        pipe.get("t:big")
        pipe.get("t:err")
        pipe.get("t:slow")
        pipe.get("t:big")
        got = pipe.execute(raise_on_error=False)
        self.assertEqual(got[0], big)
        self.assertIsInstance(got[1], redis.exceptions.ResponseError)
        self.assertIsNone(got[2])
        self.assertEqual(got[3], big)


if __name__ == "__main__":
    unittest.main(verbosity=2)
