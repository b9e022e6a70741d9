// The RESP codec: every command form and reply type, fed whole, split at every byte and byte by byte; every error.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/redis/command_message.h"
#include "proxy/redis/resp.h"

using namespace faultline::proxy::redis;
using namespace std::string_literals;

namespace {

// What a parse produced, in a form two runs can be compared with (and printed by Catch on mismatch).
struct CommandOutcome {
  Status status = Status::incomplete;
  size_t size = 0;
  bool is_inline = false;
  std::vector<std::string> args;
  std::string error;
  bool operator==(const CommandOutcome&) const = default;
};

struct ReplyOutcome {
  Status status = Status::incomplete;
  size_t size = 0;
  char type = 0;
  std::string head;
  std::optional<int64_t> third;
  std::string error;
  bool operator==(const ReplyOutcome&) const = default;
};

std::string show(Status s) { return s == Status::complete ? "complete" : s == Status::error ? "error" : "incomplete"; }

}  // namespace

namespace Catch {
template <>
struct StringMaker<CommandOutcome> {
  static std::string convert(const CommandOutcome& o) {
    std::string s = show(o.status) + " size=" + std::to_string(o.size) + (o.is_inline ? " inline" : "") + " [";
    for (const auto& a : o.args) s += "<" + a + ">";
    return s + "] " + o.error;
  }
};
template <>
struct StringMaker<ReplyOutcome> {
  static std::string convert(const ReplyOutcome& o) {
    return show(o.status) + " size=" + std::to_string(o.size) + " type=" + std::string(1, o.type ? o.type : '0') +
           " head=" + o.head + " third=" + (o.third ? std::to_string(*o.third) : "-") + " " + o.error;
  }
};
}  // namespace Catch

namespace {

CommandOutcome outcome(const CommandParser& p, Status status, std::string_view in) {
  CommandOutcome o;
  o.status = status;
  if (status == Status::complete) {
    o.size = p.size();
    o.is_inline = p.is_inline();
    for (size_t i = 0; i < p.arg_count(); ++i) o.args.emplace_back(p.arg(in, i));
  }
  if (status == Status::error) o.error = p.error();
  return o;
}

ReplyOutcome outcome(const ReplyParser& p, Status status) {
  ReplyOutcome o;
  o.status = status;
  if (status == Status::complete) {
    o.size = p.size();
    o.type = p.type();
    o.head = std::string(p.head());
    o.third = p.third_integer();
  }
  if (status == Status::error) o.error = p.error();
  return o;
}

// Fed byte by byte as a growing view of one buffer: the parser must say incomplete until the last byte.
template <typename Parser, typename Outcome>
Outcome byte_by_byte(Parser& p, std::string_view input, Outcome (*make)(const Parser&, Status, std::string_view)) {
  for (size_t k = 0; k <= input.size(); ++k) {
    const Status s = p.parse(input.substr(0, k));
    if (s != Status::incomplete) return make(p, s, input.substr(0, k));
  }
  return make(p, Status::incomplete, input);
}

CommandOutcome make_command(const CommandParser& p, Status s, std::string_view in) { return outcome(p, s, in); }
ReplyOutcome make_reply(const ReplyParser& p, Status s, std::string_view) { return outcome(p, s); }

// Split positions: every byte for small frames, a sample (all around the edges and every few KiB) for large ones.
std::vector<size_t> split_points(size_t size) {
  std::vector<size_t> points;
  for (size_t k = 0; k < size; ++k)
    if (size <= 4096 || k < 64 || size - k < 64 || k % 4093 == 0) points.push_back(k);
  return points;
}

// The frame parses to `expected` whole, after any one incomplete prefix (passed from a different buffer, so a
// parser that kept pointers would read freed or stale bytes), and byte by byte. Byte by byte, the line searches
// examine each byte at most twice (a CR that arrived last is looked at again with its LF).
CommandOutcome command_every_way(const std::string& input, Limits limits = {}) {
  CommandParser whole(limits);
  const CommandOutcome expected = outcome(whole, whole.parse(input), input);
  for (size_t k : split_points(input.size())) {
    CommandParser p(limits);
    const std::vector<char> copy(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string_view prefix(copy.data(), copy.size());  // exactly k bytes on the heap: ASan sees over-reads
    const Status first = p.parse(prefix);
    if (first != Status::incomplete) {
      INFO("prefix of " << k << " bytes");
      CHECK(outcome(p, first, prefix) == expected);
      continue;
    }
    const CommandOutcome split = outcome(p, p.parse(input), input);
    INFO("split after " << k << " bytes");
    REQUIRE(split == expected);
  }
  CommandParser bytes(limits);
  CHECK(byte_by_byte(bytes, input, &make_command) == expected);
  CHECK(bytes.scanned() <= 2 * input.size());
  return expected;
}

ReplyOutcome reply_every_way(const std::string& input, Limits limits = {}) {
  ReplyParser whole(limits);
  const ReplyOutcome expected = outcome(whole, whole.parse(input));
  for (size_t k : split_points(input.size())) {
    ReplyParser p(limits);
    const std::vector<char> copy(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string_view prefix(copy.data(), copy.size());  // exactly k bytes on the heap: ASan sees over-reads
    const Status first = p.parse(prefix);
    if (first != Status::incomplete) {
      INFO("prefix of " << k << " bytes");
      CHECK(outcome(p, first) == expected);
      continue;
    }
    const ReplyOutcome split = outcome(p, p.parse(input));
    INFO("split after " << k << " bytes");
    REQUIRE(split == expected);
  }
  ReplyParser bytes(limits);
  CHECK(byte_by_byte(bytes, input, &make_reply) == expected);
  CHECK(bytes.scanned() <= 2 * input.size());
  return expected;
}

CommandOutcome command(std::vector<std::string> args, size_t size, bool is_inline = false) {
  return {Status::complete, size, is_inline, std::move(args), ""};
}

// A valid reply of the given frame, with what the proxy reads from it.
ReplyOutcome reply(const std::string& frame, char type, std::string head = "", std::optional<int64_t> third = {}) {
  return {Status::complete, frame.size(), type, std::move(head), third, ""};
}

CommandOutcome command_error(std::string message) { return {Status::error, 0, false, {}, std::move(message)}; }
ReplyOutcome reply_error(std::string message) { return {Status::error, 0, 0, "", {}, std::move(message)}; }

// Parses a buffer of back-to-back frames, growing it one byte at a time the way reads arrive, and keeps a cursor
// (never erasing parsed bytes). Returns the frame sizes.
template <typename Parser>
std::vector<size_t> pipeline_sizes(Parser& p, std::string_view buffer) {
  std::vector<size_t> sizes;
  size_t cursor = 0;
  for (size_t available = 0; available <= buffer.size(); ++available) {
    while (cursor < available) {
      const Status s = p.parse(buffer.substr(cursor, available - cursor));
      if (s == Status::incomplete) break;
      if (s == Status::error) return sizes;
      sizes.push_back(p.size());
      cursor += p.size();
    }
  }
  return sizes;
}

std::string bulk(std::string_view s) { return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n"; }

std::string multibulk(std::initializer_list<std::string_view> args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (auto a : args) out += bulk(a);
  return out;
}

}  // namespace

// --------------------------------------------------------------------------------------------------------------
// Commands

TEST_CASE("a multibulk command yields its arguments however it is split", "[redis]") {
  const std::string set = multibulk({"SET", "key", "value"});
  CHECK(command_every_way(set) == command({"SET", "key", "value"}, set.size()));
  const std::string ping = "*1\r\n$4\r\nPING\r\n";
  CHECK(command_every_way(ping) == command({"PING"}, ping.size()));
}

TEST_CASE("multibulk arguments may hold any byte, CRLF included, and may be empty", "[redis]") {
  const std::string binary = "a\r\nb\0c\xff\r"s;
  const std::string input = multibulk({"SET", binary, "", "x"});
  CHECK(command_every_way(input) == command({"SET", binary, "", "x"}, input.size()));
}

TEST_CASE("a 1 MiB argument is parsed without copying it and without rescanning it", "[redis]") {
  std::string big(1024 * 1024, 'v');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>(i);
  const std::string input = multibulk({"SET", "k", big});
  const CommandOutcome result = command_every_way(input);
  REQUIRE(result.status == Status::complete);
  CHECK(result.size == input.size());
  REQUIRE(result.args.size() == 3);
  CHECK(result.args[2] == big);

  CommandParser p;
  REQUIRE(p.parse(input) == Status::complete);
  const std::string_view arg = p.arg(input, 2);
  CHECK(arg.data() == input.data() + input.find(big.substr(0, 16)));  // a view into the caller's bytes
}

TEST_CASE("*0, *-1 and other negative counts are empty commands that Redis ignores", "[redis]") {
  CHECK(command_every_way("*0\r\n") == command({}, 4));
  CHECK(command_every_way("*-1\r\n") == command({}, 5));
  CHECK(command_every_way("*-7\r\n") == command({}, 5));
}

TEST_CASE("an inline command splits on spaces and tabs and ends at CRLF or a lone LF", "[redis]") {
  CHECK(command_every_way("PING\r\n") == command({"PING"}, 6, true));
  CHECK(command_every_way("SET k v\n") == command({"SET", "k", "v"}, 8, true));
  CHECK(command_every_way("  GET \t key  \r\n") == command({"GET", "key"}, 15, true));
}

TEST_CASE("inline quoting follows Redis: double quotes with escapes, single quotes with \\'", "[redis]") {
  const std::string quoted = R"(SET "hello world" 'it\'s' "a\x41\x4a\n\r\t\b\a\\\"z" '\n')"
                             "\r\n";
  CHECK(command_every_way(quoted) ==
        command({"SET", "hello world", "it's", "aAJ\n\r\t\b\a\\\"z", "\\n"}, quoted.size(), true));
  // An invalid \x escape is an escaped 'x'; a quote inside a word opens quoting there.
  const std::string odd = R"(SET "\xZZ" ab"c d" "" '')"
                          "\n";
  CHECK(command_every_way(odd) == command({"SET", "xZZ", "abc d", "", ""}, odd.size(), true));
}

TEST_CASE("a blank inline line is an empty command", "[redis]") {
  CHECK(command_every_way("\r\n") == command({}, 2, true));
  CHECK(command_every_way("\n") == command({}, 1, true));
  CHECK(command_every_way(" \t \r\n") == command({}, 5, true));
}

TEST_CASE("an inline line stops at a NUL byte, as Redis's C-string splitter does", "[redis]") {
  const std::string input = "GET k\0junk\r\n"s;
  CHECK(command_every_way(input) == command({"GET", "k"}, input.size(), true));
}

TEST_CASE("a pipeline of mixed commands parses frame by frame with the right sizes", "[redis]") {
  const std::string frames[] = {"PING\r\n", multibulk({"SET", "a", "1"}), "\r\n",   "*0\r\n",
                                "GET a\n",  multibulk({"DEL", ""}),       "*-1\r\n"};
  std::string buffer;
  std::vector<size_t> expected;
  for (const auto& f : frames) {
    buffer += f;
    expected.push_back(f.size());
  }
  CommandParser whole;
  size_t cursor = 0;
  std::vector<size_t> sizes;
  while (cursor < buffer.size()) {
    REQUIRE(whole.parse(std::string_view(buffer).substr(cursor)) == Status::complete);
    sizes.push_back(whole.size());
    cursor += whole.size();
  }
  CHECK(sizes == expected);
  CommandParser grown;
  CHECK(pipeline_sizes(grown, buffer) == expected);
}

TEST_CASE("a 10,000-command pipeline fed one byte at a time parses in linear work", "[redis]") {
  // Every call sees the whole unparsed rest, one byte longer each time; scanned() would grow with the square of a
  // frame's size if the parser searched from the frame's start again.
  std::string buffer;
  std::vector<size_t> expected;
  for (int i = 0; i < 10'000; ++i) {
    const std::string key = "key:" + std::to_string(i);
    const std::string frame = i % 3 == 0 ? "GET " + key + "\r\n" : multibulk({"SET", key, std::string(i % 50, 'x')});
    buffer += frame;
    expected.push_back(frame.size());
  }
  CommandParser p;
  CHECK(pipeline_sizes(p, buffer) == expected);
  CHECK(p.scanned() <= 2 * buffer.size());
}

TEST_CASE("a 64 KiB inline line and a 1 MiB argument fed byte by byte take linear work", "[redis]") {
  const std::string line =
      "ECHO " + std::string(64 * 1024 - 6, 'a') + "\r\n";  // exactly max_inline bytes before the LF
  CommandParser inline_parser;
  const CommandOutcome r = byte_by_byte(inline_parser, line, &make_command);
  CHECK(r.status == Status::complete);
  CHECK(r.size == line.size());
  CHECK(inline_parser.scanned() == line.size());

  const std::string input = multibulk({"SET", "k", std::string(1024 * 1024, 'z')});
  CommandParser bulk_parser;
  CHECK(byte_by_byte(bulk_parser, input, &make_command).size == input.size());
  CHECK(bulk_parser.scanned() <= 64);  // the payload is counted, never searched
}

TEST_CASE("the parser starts a new command after a complete one and after an error", "[redis]") {
  CommandParser p;
  REQUIRE(p.parse("*1\r\n$4\r\nPING\r\n") == Status::complete);
  REQUIRE(p.parse("*1\r\nx") == Status::error);
  CHECK(p.arg_count() == 0);
  REQUIRE(p.parse("GET a\r\n") == Status::complete);
  CHECK(p.arg(std::string_view("GET a\r\n"), 1) == "a");
  CHECK(p.arg(std::string_view("GET a\r\n"), 2).empty());  // out of range
  p.reset();
  CHECK(p.parse("*2\r\n$3\r\nGET\r\n") == Status::incomplete);
}

TEST_CASE("bad multibulk counts are refused with Redis's message", "[redis]") {
  CHECK(command_every_way("*abc\r\n") == command_error("Protocol error: invalid multibulk length"));
  CHECK(command_every_way("*+3\r\n") == command_error("Protocol error: invalid multibulk length"));
  CHECK(command_every_way("*03\r\n") == command_error("Protocol error: invalid multibulk length"));
  CHECK(command_every_way("*\r\n") == command_error("Protocol error: invalid multibulk length"));
  CHECK(command_every_way("*1048577\r\n") == command_error("Protocol error: invalid multibulk length"));
  CHECK(command_every_way("*1048576\r\n").status == Status::incomplete);  // max_args itself is fine
  Limits small;
  small.max_args = 3;
  CHECK(command_every_way("*4\r\n", small) == command_error("Protocol error: invalid multibulk length"));
  // A count line that cannot be a number is refused before its CR arrives.
  CommandParser p;
  CHECK(p.parse("*" + std::string(21, '1')) == Status::error);
  CHECK(p.error() == "Protocol error: invalid multibulk length");
}

TEST_CASE("every multibulk element must be a bulk string", "[redis]") {
  CHECK(command_every_way("*2\r\n$3\r\nGET\r\nx\r\n") == command_error("Protocol error: expected '$', got 'x'"));
  CHECK(command_every_way("*1\r\n:1\r\n") == command_error("Protocol error: expected '$', got ':'"));
  CHECK(command_every_way("*1\r\n\x01"s) == command_error("Protocol error: expected '$', got '\\x01'"));
}

TEST_CASE("bad bulk lengths are refused before any payload is awaited", "[redis]") {
  CHECK(command_every_way("*1\r\n$abc\r\n") == command_error("Protocol error: invalid bulk length"));
  CHECK(command_every_way("*1\r\n$-1\r\n") == command_error("Protocol error: invalid bulk length"));
  CHECK(command_every_way("*1\r\n$\r\n") == command_error("Protocol error: invalid bulk length"));
  CHECK(command_every_way("*1\r\n$536870913\r\n") == command_error("Protocol error: invalid bulk length"));
  CHECK(command_every_way("*1\r\n$536870912\r\n").status == Status::incomplete);
  Limits small;
  small.max_bulk = 10;
  CHECK(command_every_way("*1\r\n$11\r\n", small) == command_error("Protocol error: invalid bulk length"));
  CommandParser p;
  CHECK(p.parse("*1\r\n$" + std::string(25, '9')) == Status::error);
  CHECK(p.error() == "Protocol error: invalid bulk length");
}

TEST_CASE("a bulk argument and a length line must end in exactly CRLF", "[redis]") {
  CHECK(command_every_way("*1\r\n$3\r\nfooXY") == command_error("Protocol error: expected CRLF"));
  CHECK(command_every_way("*1\r\n$3\r\nfoo\rX") == command_error("Protocol error: expected CRLF"));
  CHECK(command_every_way("*1\rX") == command_error("Protocol error: expected CRLF"));
  CHECK(command_every_way("*1\r\n$3\rX") == command_error("Protocol error: expected CRLF"));
}

TEST_CASE("an inline line longer than max_inline is refused, with or without its LF", "[redis]") {
  Limits small;
  small.max_inline = 16;
  CHECK(command_every_way(std::string(16, 'a') + "\n", small) == command({std::string(16, 'a')}, 17, true));
  CHECK(command_every_way(std::string(16, 'a'), small).status == Status::incomplete);
  CHECK(command_every_way(std::string(17, 'a'), small) == command_error("Protocol error: too big inline request"));
  CHECK(command_every_way(std::string(17, 'a') + "\r\n", small) ==
        command_error("Protocol error: too big inline request"));

  CommandParser p;  // the default: 64 KiB
  CHECK(p.parse(std::string(64 * 1024, 'a')) == Status::incomplete);
  CHECK(p.parse(std::string(64 * 1024 + 1, 'a')) == Status::error);
  CHECK(p.error() == "Protocol error: too big inline request");
}

TEST_CASE("unbalanced quotes in an inline command are refused", "[redis]") {
  const std::string message = "Protocol error: unbalanced quotes in request";
  CHECK(command_every_way("SET \"foo bar\r\n") == command_error(message));
  CHECK(command_every_way("SET \"foo\"bar\r\n") == command_error(message));
  CHECK(command_every_way("SET 'a\r\n") == command_error(message));
  CHECK(command_every_way("SET 'a'b\r\n") == command_error(message));
  CHECK(command_every_way("SET \"a\\\"\r\n") == command_error(message));
  CHECK(command_every_way("SET \"a\0\"\r\n"s) == command_error(message));
}

// --------------------------------------------------------------------------------------------------------------
// Replies

TEST_CASE("RESP2 replies parse however they are split", "[redis]") {
  for (const std::string frame : {"+OK\r\n", "+\r\n", ":1000\r\n", ":-42\r\n", ":+7\r\n", "$5\r\nhello\r\n",
                                  "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n"}) {
    INFO(frame);
    CHECK(reply_every_way(frame) == reply(frame, frame[0]));
  }
  const std::string error = "-ERR unknown command 'foo'\r\n";
  CHECK(reply_every_way(error) == reply(error, '-'));
  const std::string binary = "$6\r\n\r\n\0\xff\r\n\r\n"s;
  CHECK(reply_every_way(binary) == reply(binary, '$'));
}

TEST_CASE("RESP3 scalar replies parse however they are split", "[redis]") {
  for (const std::string frame : {"_\r\n", ",3.14\r\n", ",-1.5e-3\r\n", ",10\r\n", ",inf\r\n", ",-inf\r\n", ",nan\r\n",
                                  "#t\r\n", "#f\r\n", "!21\r\nSYNTAX invalid syntax\r\n", "=15\r\ntxt:Some string\r\n",
                                  "(3492890328409238509324850943850943825024385\r\n", "(-1\r\n"}) {
    INFO(frame);
    CHECK(reply_every_way(frame) == reply(frame, frame[0]));
  }
}

TEST_CASE("aggregates nest, and the frame ends with the last element of the outermost", "[redis]") {
  const std::string nested = "*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n";
  CHECK(reply_every_way(nested) == reply(nested, '*'));
  const std::string map = "%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n#t\r\n_\r\n";
  CHECK(reply_every_way(map) == reply(map, '%'));
  const std::string set = "~3\r\n+a\r\n$1\r\nb\r\n,2.5\r\n";
  CHECK(reply_every_way(set) == reply(set, '~'));
  const std::string empties = "*3\r\n*0\r\n%0\r\n*-1\r\n";
  CHECK(reply_every_way(empties) == reply(empties, '*'));
  std::string deep;
  for (int i = 0; i < 128; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  CHECK(reply_every_way(deep) == reply(deep, '*'));
}

TEST_CASE("an attribute before a reply belongs to that reply's frame", "[redis]") {
  const std::string frame =
      "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n"
      "*2\r\n:2039123\r\n:9543892\r\n";
  CHECK(reply_every_way(frame) == reply(frame, '*'));
  const std::string two = "|0\r\n|1\r\n+a\r\n+b\r\n+OK\r\n";
  CHECK(reply_every_way(two) == reply(two, '+'));
}

TEST_CASE("an attribute inside an array annotates the next element and is no element itself", "[redis]") {
  const std::string frame = "*3\r\n|1\r\n+ttl\r\n:3600\r\n$7\r\nMESSAGE\r\n$2\r\nch\r\n|1\r\n+a\r\n*1\r\n:1\r\n:5\r\n";
  CHECK(reply_every_way(frame) == reply(frame, '*', "message", 5));
}

TEST_CASE("streamed strings and streamed aggregates end at their terminators", "[redis]") {
  const std::string text = "$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n";
  CHECK(reply_every_way(text) == reply(text, '$'));
  const std::string empty_text = "$?\r\n;0\r\n";
  CHECK(reply_every_way(empty_text) == reply(empty_text, '$'));
  const std::string array = "*?\r\n:1\r\n$?\r\n;2\r\nab\r\n;0\r\n*?\r\n.\r\n.\r\n";
  CHECK(reply_every_way(array) == reply(array, '*'));
  const std::string map = "%?\r\n+a\r\n:1\r\n+b\r\n~?\r\n+x\r\n.\r\n.\r\n";
  CHECK(reply_every_way(map) == reply(map, '%'));
  const std::string set = "~?\r\n+x\r\n.\r\n";
  CHECK(reply_every_way(set) == reply(set, '~'));
  const std::string push = ">?\r\n+message\r\n+ch\r\n:9\r\n.\r\n";
  CHECK(reply_every_way(push) == reply(push, '>', "message", 9));
}

TEST_CASE("pub/sub frames expose their kind and the subscription count", "[redis]") {
  const std::string message = ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\npayload\r\n";
  const ReplyOutcome m = reply_every_way(message);
  CHECK(m == reply(message, '>', "message"));
  const std::string subscribe = "*3\r\n$9\r\nsubscribe\r\n$5\r\nfirst\r\n:1\r\n";
  CHECK(reply_every_way(subscribe) == reply(subscribe, '*', "subscribe", 1));
  const std::string push_subscribe = ">3\r\n+SUBSCRIBE\r\n$5\r\nfirst\r\n:2\r\n";
  CHECK(reply_every_way(push_subscribe) == reply(push_subscribe, '>', "subscribe", 2));
  const std::string unsubscribe_all = "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n";
  CHECK(reply_every_way(unsubscribe_all) == reply(unsubscribe_all, '*', "unsubscribe", 0));
  const std::string pong = "*2\r\n$4\r\nPONG\r\n$0\r\n\r\n";
  CHECK(reply_every_way(pong) == reply(pong, '*', "pong"));

  ReplyParser p;
  REQUIRE(p.parse(message) == Status::complete);
  CHECK(p.is_push());
  CHECK_FALSE(p.is_error());
}

TEST_CASE("head() is only the first element of a top-level array or push, up to 32 bytes", "[redis]") {
  const std::string simple = "+PONG\r\n";
  CHECK(reply_every_way(simple) == reply(simple, '+'));
  const std::string long_head = "*1\r\n" + bulk(std::string(33, 'A'));
  CHECK(reply_every_way(long_head) == reply(long_head, '*'));
  const std::string exact = "*1\r\n" + bulk(std::string(32, 'A'));
  CHECK(reply_every_way(exact) == reply(exact, '*', std::string(32, 'a')));
  const std::string nested = "*2\r\n*1\r\n+message\r\n+x\r\n";
  CHECK(reply_every_way(nested) == reply(nested, '*'));
  const std::string set = "~3\r\n+message\r\n+x\r\n:1\r\n";
  CHECK(reply_every_way(set) == reply(set, '~'));
  const std::string streamed_head = "*3\r\n$?\r\n;7\r\nmessage\r\n;0\r\n+x\r\n+y\r\n";
  CHECK(reply_every_way(streamed_head) == reply(streamed_head, '*'));
}

TEST_CASE("errors are recognised in both forms", "[redis]") {
  ReplyParser p;
  REQUIRE(p.parse("-LOADING Redis is loading the dataset in memory\r\n") == Status::complete);
  CHECK(p.is_error());
  REQUIRE(p.parse("!9\r\nERR boom!\r\n") == Status::complete);
  CHECK(p.is_error());
  CHECK(p.type() == '!');
  REQUIRE(p.parse("|1\r\n+a\r\n+b\r\n-ERR x\r\n") == Status::complete);
  CHECK(p.is_error());
  REQUIRE(p.parse("*1\r\n-ERR inside\r\n") == Status::complete);
  CHECK_FALSE(p.is_error());
}

TEST_CASE("a pipeline of replies parses frame by frame with the right sizes", "[redis]") {
  const std::string frames[] = {"+OK\r\n",
                                "|1\r\n+a\r\n+b\r\n:1\r\n",
                                ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
                                "$?\r\n;1\r\na\r\n;0\r\n",
                                "*?\r\n:1\r\n.\r\n",
                                "$-1\r\n",
                                "-ERR no\r\n",
                                "%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n"};
  std::string buffer;
  std::vector<size_t> expected;
  for (const auto& f : frames) {
    buffer += f;
    expected.push_back(f.size());
  }
  ReplyParser p;
  CHECK(pipeline_sizes(p, buffer) == expected);
}

TEST_CASE("a 100,000-element reply array fed one byte at a time parses in linear work", "[redis]") {
  std::string frame = "*100000\r\n";
  for (int i = 0; i < 100'000; ++i) frame += i % 2 ? ":" + std::to_string(i) + "\r\n" : bulk(std::to_string(i));
  ReplyParser p;
  const ReplyOutcome r = byte_by_byte(p, frame, &make_reply);
  CHECK(r == reply(frame, '*', "0"));
  CHECK(p.scanned() <= 2 * frame.size());
}

TEST_CASE("a 1 MiB simple string fed one byte at a time is scanned once", "[redis]") {
  const std::string frame = "+" + std::string(1024 * 1024, 's') + "\r\n";
  ReplyParser p;
  CHECK(byte_by_byte(p, frame, &make_reply) == reply(frame, '+'));
  CHECK(p.scanned() <= frame.size() + 1);
}

TEST_CASE("a bad type byte is reported with its offset in the frame", "[redis]") {
  CHECK(reply_every_way("A\r\n") == reply_error("bad reply type byte 0x41 at offset 0"));
  CHECK(reply_every_way("*2\r\n$5\r\nhello\r\n@x\r\n") == reply_error("bad reply type byte 0x40 at offset 15"));
  CHECK(reply_every_way(";1\r\n") == reply_error("bad reply type byte 0x3b at offset 0"));
  CHECK(reply_every_way("\0"s) == reply_error("bad reply type byte 0x00 at offset 0"));
}

TEST_CASE("lengths and counts must be well-formed decimals within their limits", "[redis]") {
  CHECK(reply_every_way("$abc\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("$\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("$-2\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("$+2\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("!-1\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("*1\r\n%-1\r\n") == reply_error("invalid length at offset 4"));
  CHECK(reply_every_way("*x\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("|?\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way("$?\r\n;x\r\n") == reply_error("invalid length at offset 4"));
  CHECK(reply_every_way("$536870913\r\n") ==
        reply_error("bulk length 536870913 above the limit 536870912 at offset 0"));
  CHECK(reply_every_way("$?\r\n;536870913\r\n") ==
        reply_error("bulk length 536870913 above the limit 536870912 at offset 4"));
  CHECK(reply_every_way("*4294967297\r\n") == reply_error("aggregate count 4294967297 above 4294967296 at offset 0"));
  CHECK(reply_every_way("*4294967296\r\n").status == Status::incomplete);  // no allocation per element
  CHECK(reply_every_way("%99999999999999999999\r\n") == reply_error("invalid length at offset 0"));
  CHECK(reply_every_way(":" + std::string(33, '1')) == reply_error("':' line longer than 32 bytes at offset 0"));
  CHECK(reply_every_way("*1\r\n$" + std::string(40, '1')) == reply_error("'$' line longer than 32 bytes at offset 4"));
}

TEST_CASE("scalar lines must be well-formed for their type", "[redis]") {
  CHECK(reply_every_way(":abc\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":-\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":+-1\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":1.5\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":9223372036854775808\r\n") == reply_error("invalid integer at offset 0"));
  CHECK(reply_every_way(":-9223372036854775808\r\n").status == Status::complete);
  CHECK(reply_every_way("_x\r\n") == reply_error("invalid null at offset 0"));
  CHECK(reply_every_way("#x\r\n") == reply_error("invalid boolean at offset 0"));
  CHECK(reply_every_way(",abc\r\n") == reply_error("invalid double at offset 0"));
  CHECK(reply_every_way(",1e\r\n") == reply_error("invalid double at offset 0"));
  CHECK(reply_every_way("(12a\r\n") == reply_error("invalid big number at offset 0"));
  CHECK(reply_every_way("=3\r\nabc\r\n") == reply_error("invalid verbatim string at offset 0"));
  CHECK(reply_every_way("=4\r\nabcd\r\n") == reply_error("invalid verbatim string at offset 0"));
}

TEST_CASE("lines and payloads must end in exactly CRLF", "[redis]") {
  CHECK(reply_every_way("+OK\rX") == reply_error("expected CRLF at offset 4"));
  CHECK(reply_every_way("$3\r\nfooXY") == reply_error("expected CRLF after the payload at offset 7"));
  CHECK(reply_every_way("*1\r\n$3\r\nfoo\rX") == reply_error("expected CRLF after the payload at offset 11"));
  CHECK(reply_every_way("$?\r\n;1\r\nab\r\n") == reply_error("expected CRLF after the payload at offset 9"));
}

TEST_CASE("nesting deeper than max_depth is refused when the aggregate opens", "[redis]") {
  std::string deep;
  for (int i = 0; i < 129; ++i) deep += "*1\r\n";
  CHECK(reply_every_way(deep) == reply_error("nesting deeper than 128 at offset 512"));
  Limits shallow;
  shallow.max_depth = 2;
  CHECK(reply_every_way("*1\r\n|1\r\n%1\r\n", shallow) == reply_error("nesting deeper than 2 at offset 8"));
  CHECK(reply_every_way("*1\r\n*1\r\n:1\r\n", shallow).status == Status::complete);
  // A million nested arrays cost a failed parse, not a stack overflow.
  std::string hostile;
  for (int i = 0; i < 1'000'000; ++i) hostile += "*1\r\n";
  ReplyParser p;
  CHECK(p.parse(hostile) == Status::error);
}

TEST_CASE("streaming terminators are only valid where a stream is open", "[redis]") {
  CHECK(reply_every_way(".\r\n") == reply_error("'.' outside a streamed aggregate at offset 0"));
  CHECK(reply_every_way("*1\r\n.\r\n") == reply_error("'.' outside a streamed aggregate at offset 4"));
  CHECK(reply_every_way("%?\r\n+a\r\n.\r\n") == reply_error("'.' outside a streamed aggregate at offset 8"));
  CHECK(reply_every_way("*?\r\n|1\r\n+a\r\n+b\r\n.\r\n") ==
        reply_error("'.' outside a streamed aggregate at offset 16"));
  CHECK(reply_every_way("*?\r\n.x\r\n") == reply_error("invalid end of stream at offset 4"));
  CHECK(reply_every_way("$?\r\n+x\r\n") ==
        reply_error("expected a ';' chunk in a streamed string, got 0x2b at offset 4"));
}

TEST_CASE("the reply parser starts a new frame after a complete one and after an error", "[redis]") {
  ReplyParser p;
  REQUIRE(p.parse("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n") == Status::complete);
  CHECK(p.third_integer() == 1);
  REQUIRE(p.parse("Z") == Status::error);
  REQUIRE(p.parse("+OK\r\n") == Status::complete);
  CHECK(p.head().empty());
  CHECK_FALSE(p.third_integer());
  CHECK(p.size() == 5);
  p.reset();
  CHECK(p.parse("*1\r\n") == Status::incomplete);
}

TEST_CASE("random RESP-like bytes give the same outcome whole and byte by byte, and never a crash", "[redis]") {
  // Fragments of valid and broken frames, glued at random: the parsers get deep into every state.
  const std::vector<std::string> pieces = {
      "*", "$", "%",  "~",    ">",    "|", "+",   "-",     ":",   "_",    ",",   "#",     "!",  "=",
      "(", ".", ";",  "?",    "1",    "2", "0",   "-1",    "3",   "\r\n", "\r",  "\n",    "ab", "\"",
      "'", " ", "\\", "\\x4", "txt:", "t", "inf", "99999", "\0"s, "\xff", "GET", "*1\r\n"};
  std::mt19937 rng(20240611);
  Limits limits;
  limits.max_depth = 8;
  limits.max_inline = 64;
  for (int round = 0; round < 3000; ++round) {
    std::string input;
    const size_t n = rng() % 24;
    for (size_t i = 0; i < n; ++i) input += pieces[rng() % pieces.size()];
    INFO("input: " << input);

    ReplyParser whole_reply(limits);
    const ReplyOutcome reply_whole = outcome(whole_reply, whole_reply.parse(input));
    ReplyParser bytes_reply(limits);
    REQUIRE(byte_by_byte(bytes_reply, input, &make_reply) == reply_whole);
    CHECK(reply_whole.size <= input.size());

    CommandParser whole_command(limits);
    const CommandOutcome command_whole = outcome(whole_command, whole_command.parse(input), input);
    CommandParser bytes_command(limits);
    REQUIRE(byte_by_byte(bytes_command, input, &make_command) == command_whole);
    CHECK(command_whole.size <= input.size());
  }
}

// --------------------------------------------------------------------------------------------------------------
// Encoders

TEST_CASE("encode_error writes one error line and keeps injected CR and LF out of it", "[redis]") {
  std::string out;
  encode_error(out, "LOADING Redis is loading the dataset in memory");
  CHECK(out == "-LOADING Redis is loading the dataset in memory\r\n");
  out.clear();
  encode_error(out, "ERR a\r\n+OK");
  CHECK(out == "-ERR a  +OK\r\n");
  ReplyParser p;
  REQUIRE(p.parse(out) == Status::complete);
  CHECK(p.size() == out.size());
}

TEST_CASE("encode_value writes Lua-made values as RESP2 or RESP3 and they parse back as one frame", "[redis]") {
  using nlohmann::json;
  struct Case {
    json value;
    int resp;
    std::string bytes;
  };
  const std::vector<Case> cases = {
      {json(nullptr), 2, "$-1\r\n"},
      {json(nullptr), 3, "_\r\n"},
      {json(42), 2, ":42\r\n"},
      {json(-7), 3, ":-7\r\n"},
      {json(std::numeric_limits<int64_t>::min()), 2, ":-9223372036854775808\r\n"},
      {json(std::numeric_limits<uint64_t>::max()), 2, "$20\r\n18446744073709551615\r\n"},
      {json("hi"), 2, "$2\r\nhi\r\n"},
      {json(""), 2, "$0\r\n\r\n"},
      {json("a\r\nb"), 2, "$4\r\na\r\nb\r\n"},
      {json(true), 2, "$4\r\ntrue\r\n"},
      {json(1.5), 2, "$3\r\n1.5\r\n"},
      {json::object({{"a", 1}}), 2, "$7\r\n{\"a\":1}\r\n"},
      {json::array(), 2, "*0\r\n"},
      {json::array({1, "a", json::array({nullptr, 2}), json::array()}), 2,
       "*4\r\n:1\r\n$1\r\na\r\n*2\r\n$-1\r\n:2\r\n*0\r\n"},
      {json::array({nullptr}), 3, "*1\r\n_\r\n"},
  };
  for (const auto& c : cases) {
    INFO(c.value.dump() << " resp " << c.resp);
    std::string out = "prefix";
    encode_value(out, c.value, c.resp);
    CHECK(out == "prefix" + c.bytes);
    ReplyParser p;
    REQUIRE(p.parse(c.bytes) == Status::complete);
    CHECK(p.size() == c.bytes.size());
  }
}

TEST_CASE("encode_value walks deeply nested arrays without recursion", "[redis]") {
  nlohmann::json value = 1;
  for (int i = 0; i < 100; ++i) value = nlohmann::json::array({std::move(value)});
  std::string out;
  encode_value(out, value, 3);
  std::string expected;
  for (int i = 0; i < 100; ++i) expected += "*1\r\n";
  CHECK(out == expected + ":1\r\n");
  ReplyParser p;
  REQUIRE(p.parse(out) == Status::complete);
  CHECK(p.size() == out.size());
}

TEST_CASE("encode_command writes a multibulk command that parses back", "[redis]") {
  std::string out;
  encode_command(out, {"AUTH", "user", "p\r\nw"});
  CHECK(out == "*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\np\r\nw\r\n");
  CommandParser p;
  REQUIRE(p.parse(out) == Status::complete);
  CHECK(p.size() == out.size());
  CHECK(p.arg(out, 2) == "p\r\nw");
}

// --------------------------------------------------------------------------------------------------------------
// CommandMessage

TEST_CASE("a command message exposes command, key, arguments and connection as fields", "[redis]") {
  const std::vector<std::string_view> args = {"set", "user:1", "v", ""};
  CommandMessage m(args, 7);
  CHECK(m.protocol() == faultline::faults::Protocol::redis);
  CHECK(m.connection() == 7);
  CHECK(m.field("command") == "SET");
  CHECK(m.field("key") == "user:1");
  CHECK(m.field("arg:1") == "user:1");
  CHECK(m.field("arg:2") == "v");
  CHECK(m.field("arg:3") == "");
  CHECK_FALSE(m.field("arg:4"));
  CHECK_FALSE(m.field("arg:0"));
  CHECK_FALSE(m.field("arg:"));
  CHECK_FALSE(m.field("arg:01"));
  CHECK_FALSE(m.field("arg:1x"));
  CHECK_FALSE(m.field("arg:99999999999999999999999"));
  CHECK(m.field("connection") == "7");
  CHECK_FALSE(m.field("method"));
  CHECK(m.json_field("x") == nullptr);
  CHECK(m.arg_count() == 3);
}

TEST_CASE("field_ref returns the message's own command and key strings", "[redis]") {
  const std::vector<std::string_view> args = {"Get", "k"};
  CommandMessage m(args, 1);
  const std::string* command = m.field_ref("command");
  REQUIRE(command);
  CHECK(*command == "GET");
  CHECK(m.field_ref("command") == command);
  REQUIRE(m.field_ref("key"));
  CHECK(*m.field_ref("key") == "k");
  CHECK(m.field_ref("arg:1") == nullptr);

  const std::vector<std::string_view> ping = {"ping"};
  CommandMessage bare(ping, 1);
  CHECK(bare.field_ref("key") == nullptr);
  CHECK_FALSE(bare.field("key"));
  CHECK(bare.arg_count() == 0);
}

TEST_CASE("describe names the command and key but never AUTH or HELLO arguments", "[redis]") {
  const std::vector<std::string_view> set = {"set", "k", "secret-value"};
  CHECK(CommandMessage(set, 1).describe().dump() == R"({"command":"SET","key":"k"})");
  const std::vector<std::string_view> ping = {"PING"};
  CHECK(CommandMessage(ping, 1).describe().dump() == R"({"command":"PING"})");
  const std::vector<std::string_view> auth = {"auth", "hunter2"};
  CHECK(CommandMessage(auth, 1).describe().dump() == R"({"command":"AUTH"})");
  const std::vector<std::string_view> auth2 = {"AUTH", "default", "hunter2"};
  CHECK(CommandMessage(auth2, 1).describe().dump() == R"({"command":"AUTH"})");
  const std::vector<std::string_view> hello = {"hello", "3", "AUTH", "default", "hunter2"};
  CHECK(CommandMessage(hello, 1).describe().dump() == R"({"command":"HELLO"})");
  const std::string long_key(5000, 'k');
  const std::vector<std::string_view> get = {"GET", long_key};
  CHECK(CommandMessage(get, 1).describe()["key"].get<std::string>().size() == 1024);
}

TEST_CASE("a command message built from a parsed command sees its arguments", "[redis]") {
  const std::string input = "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n";
  CommandParser p;
  REQUIRE(p.parse(input) == Status::complete);
  std::vector<std::string_view> args;
  for (size_t i = 0; i < p.arg_count(); ++i) args.push_back(p.arg(input, i));
  CommandMessage m(args, 3);
  CHECK(m.field("command") == "SET");
  CHECK(m.field("key") == "k");
  CHECK(m.field("arg:2") == "v");
}
