// The HTTP codec: realistic and hostile messages, fed whole, split at every byte and byte by byte.
#include <catch2/catch.hpp>

#include "proxy/http/codec.h"
#include "proxy/http/sse.h"
#include "proxy_http_harness.h"

using namespace faultline::proxy::http;
using namespace faultline::proxy::http::test;

namespace {

const std::string kChatJson =
    R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"stream":false})";

std::string chat_request() {
  return "POST /v1/chat/completions HTTP/1.1\r\n"
         "Host: api.openai.com\r\n"
         "Authorization: Bearer sk-test\r\n"
         "Content-Type: application/json\r\n"
         "Content-Length: " +
         std::to_string(kChatJson.size()) + "\r\n\r\n" + kChatJson;
}

}  // namespace

TEST_CASE("a POST with a JSON body and Content-Length parses the same however it is split") {
  std::string input = chat_request();
  Transcript t = requests(input, {"head POST /v1/chat/completions HTTP/1.1", "body " + kChatJson, "end"});
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(input, events) == input.size());
  const RequestHead& h = p.head();
  CHECK(h.path() == "/v1/chat/completions");
  CHECK(h.content_length == kChatJson.size());
  CHECK(h.keep_alive);
  CHECK_FALSE(h.chunked);
  CHECK_FALSE(h.upgrade);
  CHECK(h.header("content-type") == "application/json");
  CHECK(h.header("AUTHORIZATION") == "Bearer sk-test");
  CHECK(h.host() == "api.openai.com");
  CHECK(serialize_request_head(h) == t.raw_heads.at(0));
}

TEST_CASE("a chunked request with trailers yields the decoded body and keeps the framing in raw ranges") {
  std::string input =
      "POST /upload HTTP/1.1\r\n"
      "Host: example.test\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Trailer: X-Checksum\r\n"
      "\r\n"
      "5\r\nhello\r\n"
      "7;name=value\r\n, world\r\n"
      "0\r\n"
      "X-Checksum: abc123\r\n"
      "\r\n";
  requests(input, {"head POST /upload HTTP/1.1", "body hello, world", "end"});
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(input, events) == input.size());
  CHECK(p.head().chunked);
  CHECK_FALSE(p.head().content_length);
  CHECK(p.head().headers.size() == 3);  // trailers are not mixed into the head
  REQUIRE(p.trailers().size() == 1);
  CHECK(p.trailers()[0].name == "X-Checksum");
  CHECK(p.trailers()[0].value == "abc123");
}

TEST_CASE("a GET with query parameters exposes path and percent-decoded query") {
  std::string input =
      "GET /v1/models/search?q=fault%20line&lang=en&flag&sum=a+b%2Bc&bad=%zz HTTP/1.1\r\nHost: h\r\n\r\n";
  Transcript t =
      requests(input, {"head GET /v1/models/search?q=fault%20line&lang=en&flag&sum=a+b%2Bc&bad=%zz HTTP/1.1", "end"});
  RequestParser p;
  std::vector<Event> events;
  p.feed(input, events);
  CHECK(p.head().path() == "/v1/models/search");
  using Q = std::vector<std::pair<std::string, std::string>>;
  CHECK(p.head().query() == Q{{"q", "fault line"}, {"lang", "en"}, {"flag", ""}, {"sum", "a b+c"}, {"bad", "%zz"}});
  CHECK_FALSE(p.head().content_length);
  CHECK(serialize_request_head(p.head()) == t.raw_heads.at(0));
}

TEST_CASE("an HTTP/1.0 request without keep-alive is not kept alive") {
  std::string input = "GET /legacy HTTP/1.0\r\nHost: old.test\r\n\r\n";
  Transcript t = requests(input, {"head GET /legacy HTTP/1.0", "end"});
  RequestParser p;
  std::vector<Event> events;
  p.feed(input, events);
  CHECK_FALSE(p.head().keep_alive);
  CHECK(p.head().version_minor == 0);
  CHECK(serialize_request_head(p.head()) == t.raw_heads.at(0));

  RequestParser ka;
  std::string kept = "GET /legacy HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  ka.feed(kept, events);
  CHECK(ka.head().keep_alive);
}

TEST_CASE("Connection close on HTTP/1.1 is reported as not keep-alive") {
  RequestParser p;
  std::vector<Event> events;
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  REQUIRE(p.feed(input, events) == input.size());
  CHECK_FALSE(p.head().keep_alive);
}

TEST_CASE("Expect 100-continue is reported with the head before any body byte arrives") {
  std::string head = "PUT /files/big HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
  std::string input = head + "0123456789";
  requests(input, {"head PUT /files/big HTTP/1.1", "body 0123456789", "end"});
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(head, events) == head.size());
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == EventKind::head);
  CHECK(p.head().expect_continue);
  CHECK(p.head().content_length == 10);
}

TEST_CASE("a WebSocket upgrade request stops after its head and then passes frame bytes as tunnel") {
  std::string frames("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  std::string head =
      "GET /realtime HTTP/1.1\r\n"
      "Host: api.openai.com\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n"
      "\r\n";
  Transcript t = requests(head + frames, {"head GET /realtime HTTP/1.1", "end", "upgrade", "tunnel " + frames});

  RequestParser p;
  std::vector<Event> events;
  std::string input = head + frames;
  REQUIRE(p.feed(input, events) == head.size());
  CHECK(serialize_request_head(p.head()) == t.raw_heads.at(0));
  CHECK(p.head().upgrade);
  CHECK(p.in_tunnel());
  REQUIRE(events.size() == 3);
  CHECK(events[2].kind == EventKind::upgrade);
  CHECK(events[2].raw_size() == 0);
  events.clear();
  REQUIRE(p.feed(std::string_view(input).substr(head.size()), events) == frames.size());
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == EventKind::upgrade);
  CHECK(events[0].data == frames);
}

TEST_CASE("a refused upgrade lets the request stream continue as HTTP") {
  std::string first = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  std::string second = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(first, events) == first.size());
  REQUIRE(p.in_tunnel());
  p.cancel_upgrade();
  CHECK_FALSE(p.in_tunnel());
  events.clear();
  REQUIRE(p.feed(second, events) == second.size());
  REQUIRE(events.size() == 2);
  CHECK(events[0].kind == EventKind::head);
  CHECK(p.head().target == "/next");
  CHECK_FALSE(p.head().upgrade);
}

TEST_CASE("a CONNECT request becomes a tunnel after its head") {
  std::string tls("\x16\x03\x01\x00\x05hello", 10);
  std::string head = "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n";
  requests(head + tls, {"head CONNECT api.openai.com:443 HTTP/1.1", "end", "upgrade", "tunnel " + tls});
  RequestParser p;
  std::vector<Event> events;
  p.feed(head, events);
  CHECK(p.head().upgrade);
  CHECK(p.head().path() == "api.openai.com:443");
  CHECK(p.head().host() == "api.openai.com:443");
}

TEST_CASE("two pipelined requests in one buffer come out one at a time") {
  std::string a = "GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n";
  std::string b = "POST /v1/embeddings HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd";
  std::string input = a + b;
  Transcript t =
      requests(input, {"head GET /v1/models HTTP/1.1", "end", "head POST /v1/embeddings HTTP/1.1", "body abcd", "end"});
  REQUIRE(t.raw_heads.size() == 2);
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(input, events) == a.size());  // stops after the first so the proxy can act on it
  CHECK(p.head().target == "/v1/models");
  events.clear();
  REQUIRE(p.feed(std::string_view(input).substr(a.size()), events) == b.size());
  CHECK(p.head().target == "/v1/embeddings");
}

TEST_CASE("an absolute-form target has its path without scheme and authority") {
  RequestParser p;
  std::vector<Event> events;
  std::string input = "GET http://example.test:8080/a/b?x=1 HTTP/1.1\r\nHost: ignored.test\r\n\r\n";
  REQUIRE(p.feed(input, events) == input.size());
  CHECK(p.head().path() == "/a/b");
  CHECK(p.head().host() == "example.test:8080");
  CHECK(p.head().query().size() == 1);
}

TEST_CASE("a response with Content-Length parses the same however it is split") {
  std::string body = R"({"id":"chatcmpl-1","object":"chat.completion","choices":[]})";
  std::string input =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nx-request-id: req_1\r\n\r\n" + body;
  responses(input, {"head 200 OK", "body " + body, "end"}, {"POST"});
  ResponseParser p;
  std::vector<Event> events;
  p.feed(input, events);
  CHECK(p.head().status == 200);
  CHECK(p.head().content_length == body.size());
  CHECK(p.head().keep_alive);
  CHECK_FALSE(p.head().event_stream);
  CHECK(p.head().header("X-Request-Id") == "req_1");
}

TEST_CASE("a chunked response yields the decoded body") {
  std::string input =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
  responses(input, {"head 200 OK", "body Wikipedia in\r\n\r\nchunks.", "end"});
}

TEST_CASE("an SSE stream split across chunks gives body bytes whose events the splitter finds") {
  std::string e1 = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
  std::string e2 = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n";
  std::string e3 = "data: [DONE]\n\n";
  std::string stream = e1 + e2 + e3;
  // Chunk boundaries deliberately fall inside events and inside the blank line.
  std::vector<std::string> chunks = {stream.substr(0, 20), stream.substr(20, e1.size() - 21),
                                     stream.substr(e1.size() - 1, 30), stream.substr(e1.size() + 29)};
  std::string input =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const auto& c : chunks) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx", c.size());
    input += std::string(size) + "\r\n" + c + "\r\n";
  }
  input += "0\r\n\r\n";
  responses(input, {"head 200 OK", "body " + stream, "end"}, {"POST"});

  // Event ends located within raw ranges, however the bytes arrive.
  for (size_t cut = 1; cut < input.size(); ++cut) {
    ResponseParser p;
    p.expect_response_to("POST");
    SseSplitter sse;
    std::vector<size_t> event_ends;  // offsets in the decoded stream
    size_t decoded = 0;
    std::string pending;
    for (std::string_view piece : {std::string_view(input).substr(0, cut), std::string_view(input).substr(cut)}) {
      pending += piece;
      std::vector<Event> events;
      size_t consumed = p.feed(pending, events);
      for (const Event& e : events) {
        if (e.kind != EventKind::body) continue;
        for (size_t off : sse.feed(e.data)) event_ends.push_back(decoded + off);
        decoded += e.data.size();
      }
      pending.erase(0, consumed);
    }
    CHECK(p.head().event_stream);
    REQUIRE(sse.events() == 3);
    REQUIRE(event_ends == std::vector<size_t>{e1.size(), e1.size() + e2.size(), stream.size()});
  }
}

TEST_CASE("a 204 response has no body") {
  std::string input = "HTTP/1.1 204 No Content\r\nx-request-id: r\r\n\r\n";
  responses(input, {"head 204 No Content", "end"}, {"DELETE"});
}

TEST_CASE("a 304 response with Content-Length has no body and the next response follows") {
  std::string input =
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  responses(input, {"head 304 Not Modified", "end", "head 200 OK", "body ok", "end"}, {"GET", "GET"});
}

TEST_CASE("a response to HEAD with a Content-Length header has no body") {
  std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n";
  std::string next = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  responses(head + next, {"head 200 OK", "end", "head 200 OK", "body hello", "end"}, {"HEAD", "GET"});
  ResponseParser p;
  p.expect_response_to("HEAD");
  std::vector<Event> events;
  REQUIRE(p.feed(head, events) == head.size());
  REQUIRE(events.size() == 2);
  CHECK(events[1].kind == EventKind::end);
  CHECK(p.head().no_body);
  CHECK(p.head().content_length == 1234);
  CHECK(p.idle());
}

TEST_CASE("100 Continue is an interim response before the real one") {
  std::string input = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  // One request, two responses: the interim one does not take the request's place in the queue.
  responses(input, {"head 100 Continue", "end", "head 200 OK", "body ok", "end"}, {"PUT"});
  ResponseParser p;
  p.expect_response_to("HEAD");
  std::vector<Event> events;
  size_t first = p.feed(input, events);
  CHECK(p.head().status == 100);
  events.clear();
  p.feed(std::string_view(input).substr(first), events);
  CHECK(p.head().no_body);  // the 200 answered HEAD
  REQUIRE(events.size() == 2);
}

TEST_CASE("an HTTP/1.0 response without length ends when the upstream closes") {
  std::string input = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close";
  responses(input, {"head 200 OK", "body hello until close", "end"}, {}, true);
  ResponseParser p;
  std::vector<Event> events;
  p.feed(input, events);
  CHECK(p.head().body_until_eof);
  CHECK_FALSE(p.head().keep_alive);
}

TEST_CASE("a 101 Switching Protocols response turns the rest into tunnel bytes") {
  std::string frames("\x81\x02hi", 4);
  std::string input =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" +
      frames;
  responses(input, {"head 101 Switching Protocols", "end", "upgrade", "tunnel " + frames}, {"GET"});
}

TEST_CASE("a 2xx to CONNECT is a tunnel and a 407 to CONNECT is not") {
  std::string tls("\x16\x03\x03\x00\x02ok", 7);
  responses("HTTP/1.1 200 Connection Established\r\n\r\n" + tls,
            {"head 200 Connection Established", "end", "upgrade", "tunnel " + tls}, {"CONNECT"});
  responses("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno",
            {"head 407 Proxy Authentication Required", "body no", "end"}, {"CONNECT"});
}

TEST_CASE("a header block over 64 KiB is refused with 431 however it arrives") {
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n";
  std::vector<std::vector<size_t>> ways = {{}, every_byte(input.size())};
  std::vector<size_t> reads;
  for (size_t at = 4096; at < input.size(); at += 4096) reads.push_back(at);
  ways.push_back(reads);
  for (const auto& cuts : ways) {
    RequestParser p;
    Transcript t = run(p, input, cuts);
    REQUIRE(t.lines == std::vector<std::string>{"error 431 header too large"});
    CHECK(t.raw == input);
    CHECK(p.error().kind == ErrorKind::header_too_large);
  }
}

TEST_CASE("the header size limit is configurable") {
  RequestParser p(Limits{.max_head_bytes = 64, .max_headers = 100});
  std::vector<Event> events;
  std::string ok = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  REQUIRE(p.feed(ok, events) == ok.size());
  events.clear();
  std::string big = "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + std::string(40, 'x') + "\r\n\r\n";
  p.feed(big, events);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == EventKind::error);
  CHECK(p.error().status == 431);
}

TEST_CASE("more than 100 headers are refused with 431") {
  std::string input = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i) input += "X-H" + std::to_string(i) + ": v\r\n";
  input += "\r\n";
  RequestParser p;
  Transcript t = run(p, input, {});
  CHECK(t.lines == std::vector<std::string>{"error 431 too many headers"});

  std::string fine = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 100; ++i) fine += "X-H" + std::to_string(i) + ": v\r\n";
  fine += "\r\n";
  RequestParser q;
  CHECK(run(q, fine, {}).lines == std::vector<std::string>{"head GET / HTTP/1.1", "end"});
}

TEST_CASE("a bad method is refused with 400 and llhttp's reason") {
  requests("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", {"error 400 Invalid method encountered"});
}

TEST_CASE("Content-Length together with Transfer-Encoding is refused as request smuggling") {
  std::string input = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  Transcript t = requests(input, {"error 400 Content-Length can't be present with Transfer-Encoding"});
  RequestParser p;
  std::vector<Event> events;
  p.feed(input, events);
  CHECK(p.error().kind == ErrorKind::malformed);
}

TEST_CASE("a Content-Length above 2^53 is refused with 400") {
  requests("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9007199254740993\r\n\r\n",
           {"error 400 Content-Length too large"});
  requests("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
           {"error 400 Content-Length overflow"});
  // 2^53 itself is a length we can count to.
  RequestParser p;
  std::vector<Event> events;
  p.feed("POST / HTTP/1.1\r\nContent-Length: 9007199254740992\r\n\r\n", events);
  CHECK_FALSE(p.error());
}

TEST_CASE("garbage bytes are refused and the error is sticky") {
  std::string garbage("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  Transcript t = requests(garbage, {"error 400 Invalid method encountered"});
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(garbage, events) == garbage.size());
  events.clear();
  REQUIRE(p.feed("GET / HTTP/1.1\r\n\r\n", events) == 18);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == EventKind::error);
  CHECK(events[0].data == "Invalid method encountered");
}

TEST_CASE("bytes after a complete request that are not HTTP are an error of the next message") {
  requests("GET / HTTP/1.1\r\nHost: h\r\n\r\n\x01garbage",
           {"head GET / HTTP/1.1", "end", "error 400 Invalid method encountered"});
}

TEST_CASE("a bad header value character is refused with 400") {
  requests(std::string("GET / HTTP/1.1\r\nX-A: b\x01c\r\n\r\n"), {"error 400 Invalid header value char"});
}

TEST_CASE("a response cut mid-body ends in an error when the upstream closes") {
  std::string input = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
  responses(input, {"head 200 OK", "body partial", "error 502 upstream closed mid-response"}, {}, true);
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
  responses(chunked, {"head 200 OK", "body hel", "error 502 upstream closed mid-response"}, {}, true);
  responses("HTTP/1.1 200 OK\r\nContent-Le", {"error 502 upstream closed mid-response"}, {}, true);
}

TEST_CASE("an upstream that closes between responses is no error") {
  ResponseParser p;
  std::vector<Event> events;
  p.feed_eof(events);
  CHECK(events.empty());
  responses("HTTP/1.1 204 No Content\r\n\r\n", {"head 204 No Content", "end"}, {}, true);
}

TEST_CASE("a malformed response is reported as one the proxy answers with 502") {
  responses("HTTP/1.1 2x0 OK\r\n\r\n", {"error 502 upstream sent malformed HTTP: Invalid response status"});
  responses("HTTP/1.1 200 OK\r\nContent-Length: 9007199254740993\r\n\r\n",
            {"error 502 upstream sent malformed HTTP: Content-Length too large"});
  ResponseParser p;
  std::vector<Event> events;
  p.feed("SSH-2.0-OpenSSH_9.2\r\n", events);
  CHECK(p.error().status == 502);
}

TEST_CASE("a client that closes mid-request gets an error, one that closes between requests does not") {
  RequestParser p;
  std::vector<Event> events;
  p.feed("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", events);
  events.clear();
  p.feed_eof(events);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == EventKind::error);
  CHECK(p.error().kind == ErrorKind::closed_mid_message);

  RequestParser q;
  events.clear();
  q.feed("GET / HTTP/1.1\r\n\r\n", events);
  events.clear();
  q.feed_eof(events);
  CHECK(events.empty());
}

TEST_CASE("a partial head is not consumed until it is whole") {
  RequestParser p;
  std::vector<Event> events;
  std::string input = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK(p.feed(std::string_view(input).substr(0, 10), events) == 0);
  CHECK(events.empty());
  CHECK_FALSE(p.idle());
  CHECK(p.feed(std::string_view(input).substr(0, 10), events) == 0);  // nothing new: still waiting
  CHECK(p.feed(input, events) == input.size());
  REQUIRE(events.size() == 2);
  CHECK(events[0].raw_begin == 0);
  CHECK(events[0].raw_end == input.size());
  CHECK(p.idle());
}

TEST_CASE("obs-fold in a header value is replaced by a space so a re-serialised head stays one line per header") {
  RequestParser p;
  std::vector<Event> events;
  std::string input = "GET / HTTP/1.1\r\nX-Long: first\r\n  second\r\nHost: h\r\n\r\n";
  p.feed(input, events);
  if (!p.error()) {
    auto v = p.head().header("x-long");
    REQUIRE(v);
    CHECK(v->find('\r') == std::string_view::npos);
    CHECK(v->find('\n') == std::string_view::npos);
  }
}

TEST_CASE("bytes after a request with Connection close are an error, not silently dropped") {
  requests("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
           {"head GET / HTTP/1.1", "end", "error 400 Data after `Connection: close`"});
  requests("GET / HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
           {"head GET / HTTP/1.0", "end", "error 400 Data after `Connection: close`"});
  RequestParser p;
  std::vector<Event> events;
  p.feed("GET / HTTP/1.0\r\n\r\n", events);
  CHECK(p.idle());
  events.clear();
  p.feed_eof(events);
  CHECK(events.empty());
}

TEST_CASE("an interim response on HTTP/1.0 does not end the connection") {
  responses("HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            {"head 100 Continue", "end", "head 200 OK", "body ok", "end"}, {"POST"});
}

TEST_CASE("an HTTP/2 connection preface is refused with a clear reason") {
  requests("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {"error 400 HTTP/2 connection preface; only HTTP/1.x is spoken here"});
}
