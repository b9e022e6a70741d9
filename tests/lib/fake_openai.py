"""A stand-in for the OpenAI API on loopback: chat completions, plain and streamed (SSE), with
HTTP/1.1 keep-alive, recording every request. The e2e tests put faultline between it and the real
openai SDK."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion_body(content, model):
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


def chunk_event(piece, model, finish=None):
    delta = {} if piece is None else {"content": piece}
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return ("data: " + json.dumps(body) + "\n\n").encode()


class FakeOpenAI:
    """FakeOpenAI(content="Hello there", chunks=["Hel", "lo"]) as a context manager; .port, .requests.
    Streams send one HTTP chunk per event, flushed; with coalesce=True all events go in one HTTP chunk
    and one write (as a busy server's events often share a TCP segment)."""

    def __init__(self, content="Hello from the fake API", chunks=("Hel", "lo", " wor", "ld"), coalesce=False):
        self.content = content
        self.chunks = list(chunks)
        self.coalesce = coalesce
        self.requests = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Fixed: response sizes then do not depend on the Python version (tests cut at byte counts).
            server_version = "fake-openai"
            sys_version = ""

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer._record(self, b"")
                if self.path.startswith("/v1/models"):
                    self._json(200, {"object": "list", "data": [{"id": "gpt-fake", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error",
                                               "param": None, "code": None}})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                outer._record(self, raw)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "bad json", "type": "invalid_request_error",
                                               "param": None, "code": None}})
                    return
                model = body.get("model", "gpt-fake")
                if not self.path.startswith("/v1/chat/completions"):
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error",
                                               "param": None, "code": None}})
                elif body.get("stream"):
                    self._stream(model)
                else:
                    self._json(200, completion_body(outer.content, model))

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-request-id", "req_fake")
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                events = [chunk_event(p, model) for p in outer.chunks]
                events.append(chunk_event(None, model, "stop"))
                events.append(b"data: [DONE]\n\n")
                if outer.coalesce:
                    events = [b"".join(events)]
                for ev in events:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, handler, raw):
        with self._lock:
            self.requests.append({"method": handler.command, "path": handler.path,
                                  "headers": {k.lower(): v for k, v in handler.headers.items()}, "body": raw})

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        return False

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"
