"""Shared helpers for faultline's integration and e2e tests: the binary, servers, polling."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAULTLINE_BIN = os.environ.get("FAULTLINE_BIN") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build", "faultline"))

LISTENING_RE = re.compile(r"proxy '([^']+)' listening on (\S+):(\d+)")
READY_TEXT = "faultline ready"


class FaultlineError(Exception):
    """faultline did not start, or did not stop, as it should have."""


# ---------------------------------------------------------------- polling

def wait_until(predicate, timeout=5.0, interval=0.005, message="condition"):
    """Polls predicate() until it is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


def wait_for_process(proc, timeout):
    """Waits for proc to exit; returns its exit code or None if it is still running."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# ---------------------------------------------------------------- sockets

def free_port():
    """A port the kernel just handed out; for servers other than faultline only."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_port():
    """(socket, port): a bound but not listening socket, so connects to port are refused
    and nobody else can take the port while the socket is kept open."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def connect(addr, timeout=5.0):
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(sock, n, timeout=5.0):
    """Reads exactly n bytes; raises AssertionError on EOF or deadline."""
    deadline = time.monotonic() + timeout
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {got} of {n} bytes")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_closed(sock, timeout=5.0, bufsize=65536):
    """Reads until the peer closes. Returns (data, how, t_end) where how is 'eof',
    'reset' or 'timeout' and t_end is time.monotonic() when that was seen."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout", time.monotonic()
        sock.settimeout(left)
        try:
            chunk = sock.recv(bufsize)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return b"".join(chunks), "reset", time.monotonic()
        if not chunk:
            return b"".join(chunks), "eof", time.monotonic()
        chunks.append(chunk)


def reset_close(sock):
    """Closes with RST (SO_LINGER 0), as a crashing client would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def echo_round_trip(sock, payload=b"ping", timeout=5.0):
    """Seconds from sending payload until its echo is back in full."""
    t0 = time.monotonic()
    sock.sendall(payload)
    got = recv_exactly(sock, len(payload), timeout)
    elapsed = time.monotonic() - t0
    if got != payload:
        raise AssertionError(f"echo returned {got!r}, sent {payload!r}")
    return elapsed


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- scenarios

def tcp_proxy(name, upstream_port, var=None, listen="127.0.0.1:0"):
    """Lua that declares one tcp proxy, bound to local `var` (default: the name)."""
    var = var or name.replace("-", "_")
    return (f'local {var} = proxy {{ name = "{name}", listen = "{listen}", '
            f'upstream = "127.0.0.1:{upstream_port}", protocol = "tcp" }}\n')


def toxic(var, type_, stream="downstream", **attrs):
    fields = [f'type = "{type_}"', f'stream = "{stream}"']
    for key, value in attrs.items():
        fields.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return f"{var}:toxic {{ {', '.join(fields)} }}\n"


def write_journal(testcase, lines):
    """`lines` (dicts) as a journal file for --replay, removed when the test ends; returns its path."""
    fd, path = tempfile.mkstemp(prefix="faultline-replay-", suffix=".jsonl")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    testcase.addCleanup(os.unlink, path)
    return path


def race(worker, args):
    """Runs worker(arg) for every arg in its own thread, all at once; returns when all are done."""
    threads = [threading.Thread(target=worker, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def read_journal(path):
    """The journal's lines parsed, keys in file order (dicts keep insertion order)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- faultline itself

class Faultline:
    """Runs `faultline SCENARIO.lua ARGS...` for the duration of a with-block.

    The scenario is written to a fresh temp dir; "{tmp}" in ARGS stands for that dir
    (e.g. "--journal", "{tmp}/j.jsonl"; read it back with path("j.jsonl")).
    Entering waits for `faultline ready`; addr(name) is read from the log's
    `proxy 'NAME' listening on HOST:PORT` lines.
    """

    def __init__(self, scenario_text, *args, ready_timeout=10.0, env=None):
        self.scenario_text = scenario_text
        self.ready_timeout = ready_timeout
        self.env = env
        self.tmpdir = tempfile.mkdtemp(prefix="faultline-test-")
        self.args = [str(a).replace("{tmp}", self.tmpdir) for a in args]
        self.scenario_path = os.path.join(self.tmpdir, "scenario.lua")
        with open(self.scenario_path, "w", encoding="utf-8") as f:
            f.write(scenario_text)
        self.proc = None
        self.returncode = None
        self._lines = []
        self._stdout = []
        self._lock = threading.Lock()
        self._readers = []
        self._addrs = {}

    # -- lifecycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def start(self):
        self.proc = subprocess.Popen(
            [FAULTLINE_BIN, self.scenario_path, *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout), daemon=True),
        ]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if READY_TEXT in self.stderr_text():
                break
            if self.proc.poll() is not None:
                for t in self._readers:
                    t.join(timeout=2)
                code = self.proc.returncode
                self.close()
                raise FaultlineError(
                    f"faultline exited with {code} before '{READY_TEXT}':\n{self.stderr_text()}")
            if time.monotonic() >= deadline:
                text = self.stderr_text()
                self.close()
                raise FaultlineError(
                    f"no '{READY_TEXT}' within {self.ready_timeout}s; stderr so far:\n{text}")
            time.sleep(0.005)
        for m in LISTENING_RE.finditer(self.stderr_text()):
            host = m.group(2).strip("[]")
            self._addrs[m.group(1)] = (host, int(m.group(3)))
        return self

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._lock:
                sink.append(raw.decode("utf-8", "replace"))
        stream.close()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig, waits up to timeout; returns the exit code. A process that does not
        exit in time is killed and FaultlineError raised."""
        if self.proc is None:
            return self.returncode
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = wait_for_process(self.proc, timeout)
        if code is None:
            self.proc.kill()
            self.proc.wait()
            self._finish()
            raise FaultlineError(f"faultline did not exit within {timeout}s"
                                 + (f" of {sig.name}" if sig is not None else ""))
        self._finish()
        return code

    def wait(self, timeout=10.0):
        """Waits for faultline to exit on its own (no signal); returns the exit code.
        A process still running at the deadline is killed and FaultlineError raised."""
        return self.stop(sig=None, timeout=timeout)

    def _finish(self):
        for t in self._readers:
            t.join(timeout=5)
        self.returncode = self.proc.returncode
        self.proc = None

    def close(self):
        """Stops (killing if need be) and removes the temp dir; safe to call twice."""
        if self.proc is not None:
            try:
                self.stop(timeout=5.0)
            except FaultlineError:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- what it said
    def addr(self, name):
        if name not in self._addrs:
            raise AssertionError(f"no 'proxy '{name}' listening on' line; stderr:\n{self.stderr_text()}")
        return self._addrs[name]

    def stderr_text(self):
        with self._lock:
            return "".join(self._lines)

    def stdout_text(self):
        with self._lock:
            return "".join(self._stdout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sanitizer_reports(self):
        """Lines where ASan/UBSan/LSan reported something (empty on a clean run or a plain build)."""
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                 "WARNING: AddressSanitizer")
        return [line for line in self.stderr_text().splitlines() if any(m in line for m in marks)]

    def wait_for_log(self, pattern, timeout=5.0):
        """Polls stderr until regex pattern matches; returns the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.stderr_text()), timeout,
                          message=f"log line matching {pattern!r}")


def check_sanitizers(fl):
    """Raises AssertionError if faultline's stderr holds a sanitizer report; call after it stopped."""
    reports = fl.sanitizer_reports()
    if reports:
        raise AssertionError("sanitizer report(s) from faultline:\n" + "\n".join(reports[:20]))


def started_faultline(testcase, scenario_text, *args, **kwargs):
    """A started Faultline that testcase stops at cleanup, then checks for sanitizer reports."""
    fl = Faultline(scenario_text, *args, **kwargs)
    testcase.addCleanup(check_sanitizers, fl)
    testcase.addCleanup(fl.close)
    fl.start()
    return fl


def run_faultline(args, timeout=20.0, cwd=None):
    """Runs faultline to completion; CompletedProcess with text stdout/stderr."""
    return subprocess.run([FAULTLINE_BIN, *[str(a) for a in args]], cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


def run_check(scenario_text, *args, filename="scenario.lua", timeout=20.0):
    """Writes scenario_text to a temp dir as filename and runs `faultline check filename`
    there (the path is passed relative, as a user would type it). Returns
    (CompletedProcess, filename)."""
    tmpdir = tempfile.mkdtemp(prefix="faultline-check-")
    try:
        path = os.path.join(tmpdir, filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(scenario_text)
        return run_faultline(["check", filename, *args], timeout=timeout, cwd=tmpdir), filename
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------- upstream servers

class TcpServer:
    """A threaded TCP server on 127.0.0.1, port 0; handler(conn, record) runs per connection
    in its own thread. `record` is a dict the handler may fill; records are kept in
    accept order in self.records. close() closes everything and joins the threads."""

    def __init__(self, handler=None):
        self._handler = handler or (lambda conn, record: None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.records = []
        self.errors = []
        self._conns = []
        self._threads = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def accepted(self):
        with self._lock:
            return len(self.records)

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = {"accepted_at": time.monotonic()}
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.records.append(record)
                self._conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, conn, record):
        try:
            self._handler(conn, record)
        except OSError as e:
            record["error"] = e
        except Exception as e:  # noqa: BLE001 - a test must see a handler bug
            self.errors.append(e)
            record["error"] = e
        finally:
            record.setdefault("closed_at", time.monotonic())
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)


def _echo(conn, record):
    received = 0
    while True:
        data = conn.recv(1 << 18)
        if not data:
            record["eof_at"] = time.monotonic()
            break
        received += len(data)
        record["received"] = received
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


class EchoServer(TcpServer):
    """Echoes every byte; on the client's EOF it half-closes back."""

    def __init__(self):
        super().__init__(_echo)


class SinkServer(TcpServer):
    """Reads until EOF; each record gets 'received' (bytes count) and 'sha256'."""

    def __init__(self):
        def sink(conn, record):
            h, n = hashlib.sha256(), 0
            while True:
                data = conn.recv(1 << 18)
                if not data:
                    break
                h.update(data)
                n += len(data)
                record["received"] = n
            record["sha256"] = h.hexdigest()
            record["eof_at"] = time.monotonic()
        super().__init__(sink)


class SourceServer(TcpServer):
    """Sends payload on accept; then, by `then`: 'close' (record 'closing_at' just before
    close()), 'shutdown' (half-close, keep reading until EOF) or 'hold' (stay open,
    reading, until the client goes away or the server closes)."""

    def __init__(self, payload, then="close"):
        def source(conn, record):
            conn.sendall(payload)
            record["sent_at"] = time.monotonic()
            if then == "close":
                record["closing_at"] = time.monotonic()
                conn.close()
                record["closed_at"] = time.monotonic()
                return
            if then == "shutdown":
                conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            record["eof_at"] = time.monotonic()
        super().__init__(source)


# ---------------------------------------------------------------- real servers

def _terminate(proc, timeout=10.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    if wait_for_process(proc, timeout) is None:
        proc.kill()
        proc.wait()


class _RealServer:
    """What the real-server fixtures share: a temp dir with a log file, and stop() on exit."""

    logfile = None

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def log_text(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class RedisServer(_RealServer):
    """redis-server on 127.0.0.1 on a free port (retried on collision), no persistence."""

    def __init__(self, start_timeout=10.0):
        self.tmpdir = tempfile.mkdtemp(prefix="faultline-redis-")
        self.logfile = os.path.join(self.tmpdir, "redis.log")
        self.proc = None
        self.port = None
        for _ in range(5):
            port = free_port()
            log = open(self.logfile, "ab")
            proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", self.tmpdir, "--daemonize", "no",
                 "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_ready(proc, port, start_timeout):
                self.proc, self.port = proc, port
                return
            _terminate(proc)
        self.stop()
        raise RuntimeError("redis-server did not start:\n" + self.log_text())

    def _wait_ready(self, proc, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # port collision or bad config: the caller retries
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self):
        _terminate(self.proc)
        self.proc = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def postgres_bindir():
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        d = out.stdout.strip()
        if out.returncode == 0 and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    except (OSError, subprocess.TimeoutExpired):
        pass
    base = "/usr/lib/postgresql"
    if os.path.isdir(base):
        for v in sorted(os.listdir(base), key=lambda s: [int(x) for x in re.findall(r"\d+", s)],
                        reverse=True):
            d = os.path.join(base, v, "bin")
            if os.path.exists(os.path.join(d, "pg_ctl")):
                return d
    raise RuntimeError("no PostgreSQL binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)")


class PostgresServer(_RealServer):
    """A throwaway PostgreSQL cluster on 127.0.0.1 on a free port, trust auth, superuser
    'postgres'. As root, initdb and postgres run as the postgres user (runuser)."""

    def __init__(self, start_timeout=30.0, ssl=False):
        self.bindir = postgres_bindir()
        self.tmpdir = tempfile.mkdtemp(prefix="faultline-pg-")
        self.ssl_cert = None
        self.datadir = os.path.join(self.tmpdir, "data")
        self.logfile = os.path.join(self.tmpdir, "postgres.log")
        self.port = None
        self._as_user = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        try:
            self._run("initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8", "--locale=C", timeout=120)
            ssl_opts = self._make_ssl_files() if ssl else ""
            for _ in range(5):
                port = free_port()
                opts = (f"-p {port} -k {self.tmpdir} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off" + ssl_opts)
                started = self._run("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-o", opts,
                                    "-w", "-t", str(int(start_timeout)), "start",
                                    check=False, timeout=start_timeout + 10)
                if started.returncode == 0 and self._wait_ready(port, start_timeout):
                    self.port = port
                    return
                self._pg_stop()
            raise RuntimeError("postgres did not start:\n" + self.log_text())
        except BaseException:
            self.stop()
            raise

    def _make_ssl_files(self):
        """ssl = on with a self-signed certificate for localhost and 127.0.0.1, minted now in the
        cluster's temp dir (never committed); its .pem is the CA a client trusts (self.ssl_cert)."""
        cert = os.path.join(self.tmpdir, "server.pem")
        key = os.path.join(self.tmpdir, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        if self._as_user:
            import pwd
            pw = pwd.getpwnam("postgres")
            for f in (cert, key):
                os.chown(f, pw.pw_uid, pw.pw_gid)
        self.ssl_cert = cert
        return f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"

    def _run(self, tool, *args, check=True, timeout=60):
        cmd = [*self._as_user, os.path.join(self.bindir, tool), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, cwd=self.tmpdir)
        if check and out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def _wait_ready(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1",
                                  "-p", str(port), "-t", "2"], capture_output=True, timeout=10)
            if out.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _pg_stop(self):
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            out = self._run("pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "-t", "30", "stop",
                            check=False, timeout=60)
            if out.returncode != 0:
                self._kill_postmaster()

    def _kill_postmaster(self):
        try:
            with open(os.path.join(self.datadir, "postmaster.pid"), encoding="utf-8") as f:
                pid = int(f.readline())
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not _pid_alive(pid), timeout=10, message=f"postgres {pid} to exit")
        except (OSError, ValueError, AssertionError):
            pass

    def add_scram_user(self, name, password):
        """A login role that must authenticate with SCRAM-SHA-256 over TCP (the rest stays trust)."""
        quoted = password.replace("'", "''")
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-X",
                  "-v", "ON_ERROR_STOP=1", "-c", f"DROP ROLE IF EXISTS {name}",
                  "-c", f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {name} LOGIN PASSWORD '{quoted}'")
        hba = os.path.join(self.datadir, "pg_hba.conf")
        with open(hba, encoding="utf-8") as f:
            rules = f.read()
        with open(hba, "w", encoding="utf-8") as f:
            f.write(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + rules)
        self._run("pg_ctl", "-D", self.datadir, "reload")

        def asks_for_password():
            out = subprocess.run([os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                                  "-U", name, "-d", "postgres", "-X", "-w", "-c", "SELECT 1"],
                                 capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PGPASSWORD=""))
            return out.returncode != 0 and "password" in out.stderr
        wait_until(asks_for_password, timeout=10, message="pg_hba.conf to be reloaded")

    def dsn(self, addr=None):
        host, port = addr or self.addr
        return f"host={host} port={port} user=postgres dbname=postgres connect_timeout=10"

    def stop(self):
        if os.path.isdir(self.datadir):
            self._pg_stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.port = None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is gone for our purposes once reaped elsewhere.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- http

def http_proxy(name, upstream, var=None, listen="127.0.0.1:0", **fields):
    """Lua that declares one http proxy. upstream: a port (-> http://127.0.0.1:PORT), "mock", or
    any upstream string. Extra fields are added as Lua values (strings quoted)."""
    var = var or name.replace("-", "_")
    if isinstance(upstream, int):
        upstream = f"http://127.0.0.1:{upstream}"
    extra = "".join(f', {k} = "{v}"' if isinstance(v, str) else f", {k} = {v}"
                    for k, v in fields.items())
    return (f'local {var} = proxy {{ name = "{name}", listen = "{listen}", '
            f'upstream = "{upstream}", protocol = "http"{extra} }}\n')


def http_request(method, target, headers=(), body=None, version="HTTP/1.1", host="faultline.test"):
    """The bytes of one request. Content-Length is added for a body unless headers set
    Transfer-Encoding or Content-Length; Host is added unless headers carry one."""
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {target} {version}"]
    if "host" not in names and host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(body, size=4096):
    """body in chunked framing."""
    out = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(out) + b"0\r\n\r\n"


class _Answer:
    """What HttpResponse and CurlResult share: headers as (name, value) pairs and a body."""

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)


class HttpResponse(_Answer):
    def __init__(self, version, status, reason, headers, body, framing):
        self.version, self.status, self.reason = version, status, reason
        self.headers, self.body, self.framing = headers, body, framing

    def __repr__(self):
        return f"<HttpResponse {self.status} {self.headers} {self.body[:200]!r}>"


class HttpReader:
    """Reads responses one after another from a socket (pipelining-safe: keeps what follows)."""

    def __init__(self, sock, timeout=5.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out reading a response; have {bytes(self.buf[:300])!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            return
        if not data:
            self.eof = True
            raise EOFError(f"connection closed; have {bytes(self.buf[:300])!r}")
        self.buf += data

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b"\r\n")
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    def _exactly(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self, timeout=None):
        """The next response head (1xx included): (status, headers)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        status_line = self._line(deadline).decode("latin-1")
        headers = []
        while True:
            line = self._line(deadline)
            if line == b"":
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        return int(status_line.split(" ")[1]), headers

    def chunk(self, timeout=None):
        """The next chunk's data of a chunked body after head(); b"" at its end."""
        deadline = time.monotonic() + (timeout or self.timeout)
        size = int(self._line(deadline).split(b";")[0], 16)
        if size == 0:
            while self._line(deadline) != b"":
                pass
            return b""
        data = self._exactly(size, deadline)
        self._line(deadline)
        return data

    def response(self, head_only=False, informational=False, timeout=None):
        """The next response. 1xx responses are skipped unless informational=True. Raises
        EOFError if the connection closes first (or mid-response)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            status_line = self._line(deadline).decode("latin-1")
            version, status, reason = (status_line.split(" ", 2) + [""])[:3]
            headers = []
            while True:
                line = self._line(deadline)
                if line == b"":
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers.append((k.strip(), v.strip()))
            status = int(status)
            if 100 <= status < 200 and status != 101 and not informational:
                continue
            break
        lower = {k.lower(): v for k, v in headers}
        if head_only or status in (101, 204, 304) or 100 <= status < 200:
            return HttpResponse(version, status, reason, headers, b"", "none")
        if "chunked" in lower.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self._line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._line(deadline) != b"":
                        pass
                    break
                parts.append(self._exactly(size, deadline))
                self._line(deadline)
            return HttpResponse(version, status, reason, headers, b"".join(parts), "chunked")
        if "content-length" in lower:
            body = self._exactly(int(lower["content-length"]), deadline)
            return HttpResponse(version, status, reason, headers, body, "length")
        while not self.eof:  # delimited by close
            try:
                self._fill(deadline)
            except EOFError:
                break
        body = bytes(self.buf)
        self.buf.clear()
        return HttpResponse(version, status, reason, headers, body, "close")

    def closed(self, timeout=5.0):
        """Waits for the peer to close: 'eof', 'reset' or 'timeout' (extra bytes are an error)."""
        if self.eof:
            return "eof"
        data, how, _ = recv_until_closed(self.sock, timeout)
        if data or self.buf:
            raise AssertionError(f"unexpected bytes before close: {bytes(self.buf) + data!r}")
        return how


def http_exchange(addr, request_bytes, timeout=5.0, head_only=False):
    """One request on a new connection; returns the HttpResponse."""
    with connect(addr, timeout) as s:
        s.sendall(request_bytes)
        return HttpReader(s, timeout).response(head_only=head_only)


class CurlResult(_Answer):
    def __init__(self, exit, status, headers, body, elapsed, stderr):
        self.exit, self.status, self.headers = exit, status, headers
        self.body, self.elapsed, self.stderr = body, elapsed, stderr

    def __repr__(self):
        return (f"<curl exit {self.exit} status {self.status} after {self.elapsed:.2f}s "
                f"headers {self.headers} body {self.body[:300]!r} stderr {self.stderr[-500:]!r}>")


def curl(url, *args, max_time=8, timeout=30.0):
    """Runs `curl -sS URL ARGS...` (no proxy from the environment, no `Expect: 100-continue`
    unless ARGS set it, --max-time max_time unless ARGS set it); returns CurlResult with curl's
    exit code, %{http_code}, the last header block, the body and the wall time."""
    tmpdir = tempfile.mkdtemp(prefix="faultline-curl-")
    try:
        body_path = os.path.join(tmpdir, "body")
        head_path = os.path.join(tmpdir, "head")
        extra = [str(a) for a in args]
        if not any(a.lower().startswith("expect:") for a in extra):
            extra = ["-H", "Expect:"] + extra
        if "--max-time" not in extra and "-m" not in extra:
            extra = ["--max-time", str(max_time)] + extra
        cmd = ["curl", "-sS", "--noproxy", "*", "-o", body_path, "-D", head_path,
               "-w", "%{http_code}", url, *extra]
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        body = b""
        if os.path.exists(body_path):
            with open(body_path, "rb") as f:
                body = f.read()
        headers = []
        if os.path.exists(head_path):
            with open(head_path, "rb") as f:
                blocks = [b for b in f.read().decode("latin-1").split("\r\n\r\n") if b.strip()]
            if blocks:
                for line in blocks[-1].split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    headers.append((k.strip(), v.strip()))
        try:
            status = int(out.stdout.decode() or 0)
        except ValueError:
            status = 0
        return CurlResult(out.returncode, status, headers, body, elapsed,
                          out.stderr.decode("utf-8", "replace"))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
