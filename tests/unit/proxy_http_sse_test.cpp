// The SSE splitter: every blank-line form, found at the same offsets however the body is split.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/http/sse.h"

using faultline::proxy::http::SseSplitter;

namespace {

struct Found {
  std::vector<size_t> ends;  // absolute offsets just after each event
  size_t events = 0;
};

Found split(const std::string& stream, const std::vector<size_t>& cuts, bool finish = true) {
  SseSplitter sse;
  Found f;
  size_t from = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    size_t to = i < cuts.size() ? cuts[i] : stream.size();
    for (size_t off : sse.feed(std::string_view(stream).substr(from, to - from))) f.ends.push_back(from + off);
    from = to;
  }
  if (finish && sse.finish()) f.ends.push_back(stream.size());
  f.events = sse.events();
  return f;
}

// Whole, cut once at every position, and byte by byte: always the expected ends.
void check(const std::string& stream, const std::vector<size_t>& expected) {
  INFO("stream: " << stream);
  CHECK(split(stream, {}).ends == expected);
  std::vector<size_t> bytes;
  for (size_t k = 1; k < stream.size(); ++k) {
    INFO("cut at " << k);
    REQUIRE(split(stream, {k}).ends == expected);
    bytes.push_back(k);
  }
  Found f = split(stream, bytes);
  CHECK(f.ends == expected);
  CHECK(f.events == expected.size());
}

}  // namespace

TEST_CASE("SSE events end at LF LF") { check("data: a\n\ndata: b\n\n", {9, 18}); }

TEST_CASE("SSE events end at CRLF CRLF") { check("data: a\r\n\r\ndata: b\r\n\r\n", {11, 22}); }

TEST_CASE("SSE events end at CR CR") { check("data: a\r\rdata: b\r\r", {9, 18}); }

TEST_CASE("SSE events end at mixed line ends") {
  check("data: a\r\n\ndata: b\n\r\ndata: c\r\r\ndata: d\n\r", {10, 20, 30, 39});
}

TEST_CASE("a multi-line SSE event with comments and fields is one event") {
  std::string first = ": keep-alive\nevent: delta\nid: 7\ndata: {\"x\":1}\ndata: more\n\n";
  std::string second = "data: [DONE]\n\n";
  check(first + second, {first.size(), first.size() + second.size()});
}

TEST_CASE("repeated blank lines do not make empty SSE events") {
  check("\n\ndata: a\n\n\n\n\r\n\rdata: b\n\n", {11, 25});
}

TEST_CASE("an SSE event without its blank line is not complete") {
  check("data: a\n\ndata: b\n", {9});
  check("data: a\ndata: b", {});
}

TEST_CASE("an SSE event whose blank line ends in CR at the end of a piece is reported with the next piece") {
  SseSplitter sse;
  CHECK(sse.feed("data: a\r\r").empty());
  CHECK(sse.events() == 0);
  CHECK(sse.feed("\ndata: b") == std::vector<size_t>{1});
  CHECK(sse.feed("\r\r").empty());
  CHECK(sse.feed("data: c") == std::vector<size_t>{0});
  CHECK(sse.events() == 2);
  CHECK_FALSE(sse.finish());

  SseSplitter last;
  last.feed("data: z\r\r");
  CHECK(last.finish());
  CHECK(last.events() == 1);
}

TEST_CASE("an OpenAI-style stream is split into its events") {
  std::string e1 = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
  std::string e2 = "data: [DONE]\n\n";
  check(e1 + e2, {e1.size(), e1.size() + e2.size()});
}
