// Test driver for the HTTP codec: feeds input in given pieces the way the proxy will, and checks the raw-range
// contract on every call.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/codec.h"

namespace faultline::proxy::http::test {

// What came out, normalised so that any split of the same input gives the same transcript: adjacent body
// pieces merge, framing-only body events vanish, tunnel bytes merge.
struct Transcript {
  std::vector<std::string>
      lines;  // "head POST /x HTTP/1.1", "body ...", "end", "upgrade", "tunnel ...", "error 400 ..."
  std::vector<std::string> details;  // every field of every head, to compare splits with each other
  std::vector<std::string> raw_heads;
  std::string raw;       // the raw ranges of all events, concatenated
  std::string leftover;  // bytes never consumed
  std::vector<size_t> calls_consumed;
};

inline std::string describe_headers(const Headers& headers) {
  std::string s;
  for (const auto& h : headers) s += "[" + h.name + "=" + h.value + "]";
  return s;
}

inline std::string describe(const RequestHead& h) {
  return h.method + " " + h.target + " " + std::to_string(h.version_major) + "." + std::to_string(h.version_minor) +
         " " + describe_headers(h.headers) + " ka=" + std::to_string(h.keep_alive) +
         " up=" + std::to_string(h.upgrade) + " ec=" + std::to_string(h.expect_continue) +
         " ch=" + std::to_string(h.chunked) + " cl=" + (h.content_length ? std::to_string(*h.content_length) : "-");
}

inline std::string describe(const ResponseHead& h) {
  return std::to_string(h.status) + " " + h.reason + " " + std::to_string(h.version_major) + "." +
         std::to_string(h.version_minor) + " " + describe_headers(h.headers) + " ka=" + std::to_string(h.keep_alive) +
         " up=" + std::to_string(h.upgrade) + " ch=" + std::to_string(h.chunked) +
         " es=" + std::to_string(h.event_stream) + " eof=" + std::to_string(h.body_until_eof) +
         " nb=" + std::to_string(h.no_body) + " cl=" + (h.content_length ? std::to_string(*h.content_length) : "-");
}

inline std::string head_line(const RequestHead& h) {
  return "head " + h.method + " " + h.target + " HTTP/" + std::to_string(h.version_major) + "." +
         std::to_string(h.version_minor);
}

inline std::string head_line(const ResponseHead& h) { return "head " + std::to_string(h.status) + " " + h.reason; }

template <typename Parser>
void record(Parser& parser, std::string_view buffer, const std::vector<Event>& events, Transcript& t) {
  for (const Event& e : events) {
    std::string_view raw = buffer.substr(e.raw_begin, e.raw_size());
    t.raw += raw;
    switch (e.kind) {
      case EventKind::head:
        t.lines.push_back(head_line(parser.head()));
        t.details.push_back(describe(parser.head()));
        t.raw_heads.emplace_back(raw);
        break;
      case EventKind::body:
        if (e.data.empty()) break;
        if (!t.lines.empty() && t.lines.back().rfind("body ", 0) == 0) {
          t.lines.back() += e.data;
        } else {
          t.lines.push_back("body " + std::string(e.data));
        }
        break;
      case EventKind::end:
        t.lines.push_back("end");
        break;
      case EventKind::error: {
        // The error is sticky: later feeds repeat it, which a proxy that closes on the first never sees.
        std::string line = "error " + std::to_string(parser.error().status) + " " + parser.error().reason;
        if (t.lines.empty() || t.lines.back() != line) t.lines.push_back(line);
        break;
      }
      case EventKind::upgrade:
        if (e.data.empty()) {
          t.lines.push_back("upgrade");
        } else if (!t.lines.empty() && t.lines.back().rfind("tunnel ", 0) == 0) {
          t.lines.back() += e.data;
        } else {
          t.lines.push_back("tunnel " + std::string(e.data));
        }
        break;
    }
  }
}

// The contract of one feed() call: events tile [0, consumed) and body data lies inside its raw range.
inline void check_tiling(std::string_view buffer, size_t consumed, const std::vector<Event>& events) {
  REQUIRE(consumed <= buffer.size());
  size_t at = 0;
  for (const Event& e : events) {
    REQUIRE(e.raw_begin == at);
    REQUIRE(e.raw_end >= e.raw_begin);
    at = e.raw_end;
    if (e.kind == EventKind::body || (e.kind == EventKind::upgrade && !e.data.empty())) {
      REQUIRE(e.data.data() >= buffer.data() + e.raw_begin);
      REQUIRE(e.data.data() + e.data.size() <= buffer.data() + e.raw_end);
    }
  }
  REQUIRE(at == consumed);
}

// Feeds `input` cut at `cuts` (ascending offsets) like the proxy: unconsumed bytes go again, first, with the
// next read; after a stop the rest is fed at once.
template <typename Parser>
Transcript run(Parser& parser, std::string_view input, const std::vector<size_t>& cuts, bool eof = false) {
  Transcript t;
  std::string pending;
  size_t from = 0;
  auto drain = [&] {
    for (int guard = 0; guard < 100000; ++guard) {
      std::vector<Event> events;
      size_t consumed = parser.feed(pending, events);
      check_tiling(pending, consumed, events);
      record(parser, pending, events, t);
      t.calls_consumed.push_back(consumed);
      pending.erase(0, consumed);
      if (pending.empty() || (consumed == 0 && events.empty())) return;
    }
    FAIL("feed() made no progress");
  };
  for (size_t i = 0; i <= cuts.size(); ++i) {
    size_t to = i < cuts.size() ? cuts[i] : input.size();
    pending.append(input.substr(from, to - from));
    from = to;
    drain();
  }
  if (eof) {
    std::vector<Event> events;
    parser.feed_eof(events);
    for (const Event& e : events) REQUIRE(e.raw_size() == 0);
    record(parser, {}, events, t);
  }
  t.leftover = pending;
  return t;
}

inline std::vector<size_t> every_byte(size_t n) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < n; ++i) cuts.push_back(i);
  return cuts;
}

// Feeds whole, split once at every position, and in 1-byte pieces; every way must give `expected` and the
// same head details, and the raw ranges must add up to the input.
template <typename Parser, typename Setup>
Transcript check_all_splits(std::string_view input, const std::vector<std::string>& expected, Setup setup,
                            bool eof = false) {
  Parser whole_parser;
  setup(whole_parser);
  Transcript whole = run(whole_parser, input, {}, eof);
  CHECK(whole.lines == expected);
  CHECK(whole.raw + whole.leftover == std::string(input));
  std::vector<std::vector<size_t>> ways;
  for (size_t k = 1; k < input.size(); ++k) ways.push_back({k});
  ways.push_back(every_byte(input.size()));
  // And a few reproducible many-piece splits, like reads of varying size.
  uint64_t state = input.size() * 0x9E3779B97F4A7C15ull + 1;
  for (int n = 0; n < 20 && input.size() > 2; ++n) {
    std::vector<size_t> cuts;
    for (size_t at = 0;;) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      at += 1 + (state >> 33) % 9;
      if (at >= input.size()) break;
      cuts.push_back(at);
    }
    ways.push_back(cuts);
  }
  for (const auto& cuts : ways) {
    Parser parser;
    setup(parser);
    Transcript t = run(parser, input, cuts, eof);
    INFO("split at " << (cuts.size() == 1 ? std::to_string(cuts[0]) : std::to_string(cuts.size()) + " places"));
    REQUIRE(t.lines == whole.lines);
    REQUIRE(t.details == whole.details);
    REQUIRE(t.raw_heads == whole.raw_heads);
    REQUIRE(t.raw + t.leftover == std::string(input));
    REQUIRE(t.leftover == whole.leftover);
  }
  return whole;
}

inline Transcript requests(std::string_view input, const std::vector<std::string>& expected) {
  return check_all_splits<RequestParser>(input, expected, [](RequestParser&) {});
}

inline Transcript responses(std::string_view input, const std::vector<std::string>& expected,
                            const std::vector<std::string>& methods = {}, bool eof = false) {
  return check_all_splits<ResponseParser>(
      input, expected,
      [&](ResponseParser& p) {
        for (const auto& m : methods) p.expect_response_to(m);
      },
      eof);
}

}  // namespace faultline::proxy::http::test
