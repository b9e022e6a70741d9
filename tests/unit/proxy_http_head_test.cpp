// Request heads: serialisation round-trips what the parser accepted, and header edits behave.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/http/codec.h"
#include "proxy/http/head.h"

using namespace faultline::proxy::http;

namespace {

RequestHead parse(const std::string& head) {
  RequestParser p;
  std::vector<Event> events;
  REQUIRE(p.feed(head, events) == head.size());
  REQUIRE(!events.empty());
  REQUIRE(events[0].kind == EventKind::head);
  REQUIRE(events[0].raw_end == head.size());
  return p.head();
}

}  // namespace

TEST_CASE("serialize_request_head reproduces a canonical head byte for byte") {
  for (std::string head : {
           std::string("GET / HTTP/1.1\r\n\r\n"),
           std::string("GET /v1/models?limit=5&after=x%20y HTTP/1.1\r\nHost: api.openai.com\r\nAccept: */*\r\n\r\n"),
           std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Empty: \r\n\r\n"),
           std::string("OPTIONS * HTTP/1.0\r\nUser-Agent: curl/8.0\r\n\r\n"),
           std::string("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: Basic YTpi\r\n\r\n"),
           std::string("DELETE http://h/x HTTP/1.1\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"),
       }) {
    INFO(head);
    CHECK(serialize_request_head(parse(head)) == head);
  }
}

TEST_CASE("serialize_request_head canonicalises whitespace around header values") {
  RequestHead h = parse("GET / HTTP/1.1\r\nHost:   h  \r\nX-Tab:\tv\t\r\n\r\n");
  CHECK(h.header("host") == "h");
  CHECK(serialize_request_head(h) == "GET / HTTP/1.1\r\nHost: h\r\nX-Tab: v\r\n\r\n");
  // What the serialiser writes parses back to the same head.
  RequestHead again = parse(serialize_request_head(h));
  CHECK(again.headers.size() == h.headers.size());
  CHECK(serialize_request_head(again) == serialize_request_head(h));
}

TEST_CASE("set_header replaces every occurrence case-insensitively or appends") {
  RequestHead h = parse("GET / HTTP/1.1\r\nHost: old\r\nX-A: 1\r\nhost: older\r\n\r\n");
  set_header(h.headers, "Host", "upstream:8080");
  append_header(h.headers, "X-Forwarded-For", "127.0.0.1");
  set_header(h.headers, "X-New", "n");
  CHECK(serialize_request_head(h) ==
        "GET / HTTP/1.1\r\nHost: upstream:8080\r\nX-A: 1\r\nX-Forwarded-For: 127.0.0.1\r\nX-New: n\r\n\r\n");
  CHECK(remove_header(h.headers, "x-a") == 1);
  CHECK_FALSE(h.header("X-A"));
}

TEST_CASE("serialize_request_head cannot be made to inject a line") {
  RequestHead h;
  h.method = "GET";
  h.target = "/";
  append_header(h.headers, "X-Evil", "a\r\nInjected: yes");
  CHECK(serialize_request_head(h) == "GET / HTTP/1.1\r\nX-Evil: a  Injected: yes\r\n\r\n");
}

TEST_CASE("percent_decode decodes escapes and plus signs and keeps malformed escapes") {
  CHECK(percent_decode("a%20b+c%2B%41") == "a b c+A");
  CHECK(percent_decode("%") == "%");
  CHECK(percent_decode("%4") == "%4");
  CHECK(percent_decode("100%") == "100%");
}

TEST_CASE("a forwarded head gets the upstream's Host, the client in X-Forwarded-For, and loses Expect on request") {
  RequestHead h;
  h.method = "POST";
  h.target = "/v1/chat/completions";
  h.headers = {{"Host", "127.0.0.1:9000"},   {"X-Forwarded-For", "10.0.0.1"}, {"Expect", "100-continue"},
               {"host", "evil.example"},     {"x-forwarded-for", "10.0.0.2"}, {"Content-Length", "2"}};
  ForwardEdits edits;
  edits.host = "api.openai.com";
  edits.client = "127.0.0.1";
  CHECK(serialize_forwarded_head(h, edits) ==
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "Expect: 100-continue\r\nx-forwarded-for: 10.0.0.2, 127.0.0.1\r\nContent-Length: 2\r\n\r\n");
  edits.drop_expect = true;
  CHECK(serialize_forwarded_head(h, edits).find("Expect") == std::string::npos);

  RequestHead bare;
  bare.method = "GET";
  bare.target = "/";
  bare.version_minor = 0;
  CHECK(serialize_forwarded_head(bare, edits) == "GET / HTTP/1.0\r\nHost: api.openai.com\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n");
  CHECK(serialize_forwarded_head(bare, {}) == serialize_request_head(bare));
}
