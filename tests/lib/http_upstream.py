"""A small HTTP/1.1 upstream on raw sockets for the http proxy tests: keep-alive, pipelining,
chunked and Content-Length bodies both ways, `Expect: 100-continue`, and a few misbehaviours,
chosen by the request path. Every request is recorded (in arrival order) in .requests.

The first path segment chooses (/bytes/x is /bytes; anything not listed is /echo):
  /echo                   200 JSON of the request: method, target, version, headers (pairs as
                          received), body_len, body_sha256, body (latin-1 text when <= 64 KiB),
                          framing ("length" | "chunked" | "none"); ?chunked=1 sends it chunked
  /bytes?n=N[&chunked=1]  N deterministic bytes (payload(N)), application/octet-stream
  /sse?events=N[&interval_ms=M]
                          text/event-stream, chunked, one chunk per event "id: i\\ndata: event-i\\n\\n";
                          with &length=1 all events in one Content-Length body, in one write
  /hang                   reads the request and never answers (until the client goes away)
  /close-early            reads the request and closes without answering
  /reset-early            reads the request and resets the connection without answering
  /garbage                answers bytes that are not HTTP, then closes
  /cut?n=N&send=M         Content-Length N but only M body bytes, then closes
  /upgrade                with an Upgrade header: 101, then echoes bytes until EOF
  /close                  200 with Connection: close, then closes
  ...?then=close          (/echo, /bytes) answers as keep-alive, then closes the connection anyway
HEAD gets the head GET would get. HTTP/1.0 and Connection: close requests are answered, then the
connection is closed.
"""

import hashlib
import json
import random
import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

from faultline_testlib import TcpServer

_PAYLOADS = {}
_PAYLOAD_LOCK = threading.Lock()


def payload(n):
    """n bytes, the same on every call (random-looking, so a shifted or dropped byte shows)."""
    with _PAYLOAD_LOCK:
        if n not in _PAYLOADS:
            _PAYLOADS[n] = random.Random(n).randbytes(n)
        return _PAYLOADS[n]


def sse_event(i):
    return f"id: {i}\ndata: event-{i}\n\n".encode()


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise EOFError
        self.buf += data

    def line(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self):
        out = bytes(self.buf)
        self.buf.clear()
        return out


class HttpUpstream(TcpServer):
    """HttpUpstream() as a context manager; .port, .requests (dicts), .wait_requests(n)."""

    def __init__(self):
        self.requests = []
        self._req_lock = threading.Lock()
        super().__init__(self._serve_conn)

    def request_count(self):
        with self._req_lock:
            return len(self.requests)

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._req_lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.005)
        raise AssertionError(f"the upstream got {self.request_count()} request(s), expected {n}")

    # ------------------------------------------------------------ one connection
    def _serve_conn(self, conn, record):
        reader = _Reader(conn)
        record["requests"] = 0
        while True:
            try:
                req = self._read_request(conn, reader, record)
            except EOFError:
                record["eof_at"] = time.monotonic()
                return
            record["requests"] += 1
            keep = self._respond(conn, reader, req)
            if not keep:
                return

    def _read_request(self, conn, reader, record):
        line = reader.line()
        while line == b"":  # tolerate stray CRLF between requests
            line = reader.line()
        head_at = time.monotonic()
        method, target, version = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            h = reader.line()
            if h == b"":
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        lower = {k.lower(): v for k, v in headers}
        req = {"method": method, "target": target, "version": version, "headers": headers,
               "h": lower, "conn": len(self.records), "head_at": head_at}
        parts = urlsplit(target)
        req["path"] = parts.path
        req["query"] = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if lower.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        h = hashlib.sha256()
        body = []
        if "chunked" in lower.get("transfer-encoding", "").lower():
            req["framing"] = "chunked"
            while True:
                size = int(reader.line().split(b";")[0], 16)
                if size == 0:
                    while reader.line() != b"":
                        pass
                    break
                data = reader.exactly(size)
                h.update(data)
                body.append(data)
                if reader.line() != b"":
                    raise ValueError("bad chunk framing")
        elif "content-length" in lower:
            req["framing"] = "length"
            n = int(lower["content-length"])
            data = reader.exactly(n)
            h.update(data)
            body.append(data)
        else:
            req["framing"] = "none"
        req["body"] = b"".join(body)
        req["body_sha256"] = h.hexdigest()
        req["at"] = time.monotonic()
        with self._req_lock:
            self.requests.append(req)
        return req

    # ------------------------------------------------------------ answers
    def _respond(self, conn, reader, req):
        h = req["h"]
        closing = (req["version"] == "HTTP/1.0" or h.get("connection", "").lower() == "close")
        q, method = req["query"], req["method"]
        path = "/" + req["path"].split("/")[1] if req["path"].startswith("/") else req["path"]
        head_only = method == "HEAD"

        if path == "/hang":
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            return False
        if path == "/close-early":
            return False
        if path == "/reset-early":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return False
        if path == "/garbage":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2 this is not http\r\n\x00\x01\x02\r\n\r\n")
            return False
        if path == "/upgrade" and "upgrade" in h:
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + h["upgrade"].encode()
                         + b"\r\nConnection: Upgrade\r\n\r\n")
            early = reader.rest()
            if early:
                conn.sendall(early)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            return False
        if path == "/cut":
            n, send = int(q.get("n", 1000)), int(q.get("send", 100))
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                         b"content-length: %d\r\n\r\n" % n + payload(n)[:send])
            return False
        if path == "/sse" and q.get("length") == "1":  # all events in one Content-Length body, one write
            body = b"".join(sse_event(i) for i in range(1, int(q.get("events", 5)) + 1))
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"content-length: %d\r\n\r\n" % len(body) + (b"" if head_only else body))
            return not closing
        if path == "/sse":
            events = int(q.get("events", 5))
            interval = int(q.get("interval_ms", 0)) / 1000.0
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                         + (b"connection: close\r\n" if closing else b"") + b"\r\n")
            if head_only:
                return not closing
            for i in range(1, events + 1):
                ev = sse_event(i)
                conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                if interval and i < events:
                    time.sleep(interval)  # the upstream's own pacing, not test synchronisation
            conn.sendall(b"0\r\n\r\n")
            return not closing
        if path == "/bytes":
            body, ctype = payload(int(q.get("n", 0))), b"application/octet-stream"
        else:
            closing = closing or path == "/close"
            echo = {"method": method, "target": req["target"], "version": req["version"],
                    "headers": req["headers"], "body_len": len(req["body"]),
                    "body_sha256": req["body_sha256"], "framing": req["framing"],
                    "body": req["body"].decode("latin-1") if len(req["body"]) <= 65536 else None}
            body, ctype = json.dumps(echo).encode(), b"application/json"
        status = int(q.get("status", 200))
        head = b"HTTP/1.1 %d Whatever\r\ncontent-type: %s\r\n" % (status, ctype)
        if closing:
            head += b"connection: close\r\n"
        if q.get("chunked") == "1":
            head += b"transfer-encoding: chunked\r\n\r\n"
            if head_only:
                conn.sendall(head)
            else:
                out = [head]
                step = 64 * 1024
                for i in range(0, len(body), step):
                    part = body[i:i + step]
                    out.append(b"%x\r\n%s\r\n" % (len(part), part))
                out.append(b"0\r\n\r\n")
                conn.sendall(b"".join(out))
        else:
            head += b"content-length: %d\r\n\r\n" % len(body)
            conn.sendall(head if head_only else head + body)
        if q.get("then") == "close":  # keep-alive promised, then closed anyway (an idle timeout at the worst moment)
            return False
        if closing:
            conn.shutdown(socket.SHUT_WR)
            try:
                conn.settimeout(2)
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            return False
        return True
