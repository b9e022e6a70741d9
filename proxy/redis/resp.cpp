// RESP parsing for hostile bytes: bounded lengths, an explicit nesting stack, each byte examined once per frame.
#include "proxy/redis/resp.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

namespace faultline::proxy::redis {

namespace {

// Redis's string2ll: it caps the text at 20 characters before parsing, so longer count lines can fail early.
constexpr size_t kMaxCommandNumber = 20;
// Integer, length and fixed-content reply lines are short; longer ones are rejected before their CR arrives.
constexpr size_t kMaxShortLine = 32;
// Elements of one reply aggregate. Nothing is allocated per element, so this only rejects absurd counts.
constexpr uint64_t kMaxAggregate = uint64_t{1} << 32;
constexpr size_t kMaxHead = 32;

// Like Redis's string2ll: optional '-', no '+', no leading zero (except "0"), no "-0", must fit int64.
std::optional<int64_t> redis_string2ll(std::string_view s) {
  if (s.empty() || s.size() > kMaxCommandNumber) return std::nullopt;
  if (s == "0") return 0;
  bool negative = s[0] == '-';
  if (negative) s.remove_prefix(1);
  if (s.empty() || s[0] < '1' || s[0] > '9') return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!negative) {
    if (v > kMax) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (v > kMax + 1) return std::nullopt;
  return v == kMax + 1 ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(v);
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A reply length: decimal digits only.
std::optional<uint64_t> parse_length(std::string_view s) {
  if (!all_digits(s)) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A reply integer: RESP allows a '+' or '-' sign.
std::optional<int64_t> parse_integer(std::string_view s) {
  if (!s.empty() && s[0] == '+') {
    s.remove_prefix(1);
    if (!all_digits(s)) return std::nullopt;
  } else if (!all_digits(!s.empty() && s[0] == '-' ? s.substr(1) : s)) {
    return std::nullopt;
  }
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

bool is_big_number(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  return all_digits(s);
}

bool is_double(std::string_view s) {
  if (s == "inf" || s == "-inf" || s == "+inf" || s == "nan" || s == "-nan") return true;
  size_t i = 0;
  auto digits = [&] {
    const size_t from = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i - from;
  };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t mantissa = digits();
  if (i < s.size() && s[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == s.size();
}

// sdssplitargs' notion of space (C isspace in the "C" locale).
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Index of the first `c` in in[from, to), or npos; adds the bytes it examined to `scanned`.
size_t find_byte(std::string_view in, char c, size_t from, size_t to, uint64_t& scanned) {
  to = std::min(to, in.size());
  if (from >= to) return std::string_view::npos;
  const void* hit = std::memchr(in.data() + from, c, to - from);
  if (!hit) {
    scanned += to - from;
    return std::string_view::npos;
  }
  const auto index = static_cast<size_t>(static_cast<const char*>(hit) - in.data());
  scanned += index - from + 1;
  return index;
}

// A byte as Redis's "%c" shows it, but never a control byte: the text may travel back to the client in an error.
std::string printable(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string(1, c);
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string{'\\', 'x', kHex[u >> 4], kHex[u & 15]};
}

std::string hex_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string{'0', 'x', kHex[u >> 4], kHex[u & 15]};
}

std::string at(size_t offset) { return " at offset " + std::to_string(offset); }

void append_number(std::string& out, char type, int64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out += type;
  out.append(buf, end);
  out += "\r\n";
}

// RESP integers are signed 64-bit; a larger unsigned value goes out as text.
bool fits_resp_integer(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()};
  return v.is_number_integer();
}

void append_bulk(std::string& out, std::string_view s) {
  append_number(out, '$', static_cast<int64_t>(s.size()));
  out += s;
  out += "\r\n";
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// CommandParser

CommandParser::CommandParser(Limits limits) : limits_(limits) {}

void CommandParser::reset() {
  phase_ = Phase::start;
  finished_ = false;
  failed_ = false;
  inline_ = false;
  pos_ = 0;
  scan_ = 0;
  expected_ = 0;
  bulk_len_ = 0;
  size_ = 0;
  args_.clear();
  inline_args_.clear();
  error_.clear();
}

Status CommandParser::parse(std::string_view in) {
  if (finished_) reset();
  for (;;) {
    Step step = Step::next;
    switch (phase_) {
      case Phase::start:
        if (in.empty()) return Status::incomplete;
        inline_ = in[0] != '*';
        phase_ = inline_ ? Phase::inline_line : Phase::count_line;
        scan_ = inline_ ? 0 : 1;
        continue;
      case Phase::inline_line:
        step = parse_inline(in);
        break;
      case Phase::count_line:
        step = parse_count(in);
        break;
      case Phase::bulk_line:
        step = parse_bulk_line(in);
        break;
      case Phase::payload:
        step = parse_payload(in);
        break;
    }
    if (step == Step::wait) return Status::incomplete;
    if (step == Step::done) return failed_ ? Status::error : Status::complete;
  }
}

std::string_view CommandParser::arg(std::string_view in, size_t i) const {
  if (i >= args_.size()) return {};
  const Span& span = args_[i];
  return inline_ ? std::string_view(inline_args_).substr(span.begin, span.size) : in.substr(span.begin, span.size);
}

CommandParser::Step CommandParser::fail(std::string message) {
  error_ = std::move(message);
  args_.clear();
  finished_ = true;
  failed_ = true;
  return Step::done;
}

CommandParser::Step CommandParser::finish(size_t size) {
  size_ = size;
  finished_ = true;
  return Step::done;
}

CommandParser::Step CommandParser::parse_inline(std::string_view in) {
  // A line longer than max_inline is refused whether or not its LF has arrived, so the outcome does not depend on
  // how the bytes were split (Redis checks only while the LF is missing).
  const size_t lf = find_byte(in, '\n', scan_, std::min(in.size(), limits_.max_inline) + 1, scanned_);
  if (lf == std::string_view::npos) {
    if (in.size() > limits_.max_inline) return fail("Protocol error: too big inline request");
    scan_ = in.size();
    return Step::wait;
  }
  std::string_view line = in.substr(0, lf);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!split_inline(line)) return fail("Protocol error: unbalanced quotes in request");
  return finish(lf + 1);
}

// Redis's sdssplitargs, byte for byte: the proxy must see the same arguments the server will.
bool CommandParser::split_inline(std::string_view line) {
  line = line.substr(0, line.find('\0'));  // sdssplitargs reads a C string
  const size_t n = line.size();
  size_t i = 0;
  for (;;) {
    while (i < n && is_space(line[i])) ++i;
    if (i == n) return true;
    const size_t begin = inline_args_.size();
    bool in_double = false;
    bool in_single = false;
    for (bool done = false; !done;) {
      if (in_double) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 3 < n && line[i + 1] == 'x' && hex_value(line[i + 2]) >= 0 &&
            hex_value(line[i + 3]) >= 0) {
          inline_args_ += static_cast<char>(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3]));
          i += 4;
        } else if (c == '\\' && i + 1 < n) {
          const char e = line[i + 1];
          inline_args_ += e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e == 'b' ? '\b' : e == 'a' ? '\a' : e;
          i += 2;
        } else if (c == '"') {
          if (i + 1 < n && !is_space(line[i + 1])) return false;  // the closing quote must end the argument
          done = true;
          ++i;
        } else {
          inline_args_ += c;
          ++i;
        }
      } else if (in_single) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 1 < n && line[i + 1] == '\'') {
          inline_args_ += '\'';
          i += 2;
        } else if (c == '\'') {
          if (i + 1 < n && !is_space(line[i + 1])) return false;
          done = true;
          ++i;
        } else {
          inline_args_ += c;
          ++i;
        }
      } else if (i == n) {
        done = true;
      } else {
        const char c = line[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
          done = true;
        } else if (c == '"') {
          in_double = true;
        } else if (c == '\'') {
          in_single = true;
        } else {
          inline_args_ += c;
        }
        ++i;
      }
    }
    args_.push_back({begin, inline_args_.size() - begin});
  }
}

CommandParser::Step CommandParser::parse_count(std::string_view in) {
  const size_t cr = find_byte(in, '\r', scan_, 1 + kMaxCommandNumber + 1, scanned_);
  if (cr == std::string_view::npos) {
    if (in.size() > 1 + kMaxCommandNumber) return fail("Protocol error: invalid multibulk length");
    scan_ = in.size();
    return Step::wait;
  }
  if (cr + 1 >= in.size()) {
    scan_ = cr;
    return Step::wait;
  }
  if (in[cr + 1] != '\n') return fail("Protocol error: expected CRLF");
  const auto count = redis_string2ll(in.substr(1, cr - 1));
  if (!count || (*count > 0 && static_cast<uint64_t>(*count) > limits_.max_args))
    return fail("Protocol error: invalid multibulk length");
  if (*count <= 0) return finish(cr + 2);
  expected_ = static_cast<uint64_t>(*count);
  // The count is the client's word only: grow the span table as arguments actually arrive.
  args_.reserve(static_cast<size_t>(std::min<uint64_t>(expected_, 1024)));
  pos_ = cr + 2;
  scan_ = pos_ + 1;
  phase_ = Phase::bulk_line;
  return Step::next;
}

CommandParser::Step CommandParser::parse_bulk_line(std::string_view in) {
  if (pos_ >= in.size()) return Step::wait;
  if (in[pos_] != '$') return fail("Protocol error: expected '$', got '" + printable(in[pos_]) + "'");
  const size_t cr = find_byte(in, '\r', scan_, pos_ + 1 + kMaxCommandNumber + 1, scanned_);
  if (cr == std::string_view::npos) {
    if (in.size() > pos_ + 1 + kMaxCommandNumber) return fail("Protocol error: invalid bulk length");
    scan_ = in.size();
    return Step::wait;
  }
  if (cr + 1 >= in.size()) {
    scan_ = cr;
    return Step::wait;
  }
  if (in[cr + 1] != '\n') return fail("Protocol error: expected CRLF");
  const auto len = redis_string2ll(in.substr(pos_ + 1, cr - pos_ - 1));
  if (!len || *len < 0 || static_cast<uint64_t>(*len) > limits_.max_bulk)
    return fail("Protocol error: invalid bulk length");
  bulk_len_ = static_cast<uint64_t>(*len);
  pos_ = cr + 2;
  phase_ = Phase::payload;
  return Step::next;
}

CommandParser::Step CommandParser::parse_payload(std::string_view in) {
  const uint64_t end = pos_ + bulk_len_;  // bulk_len_ <= max_bulk: no overflow
  if (in.size() < end + 2) return Step::wait;
  if (in[end] != '\r' || in[end + 1] != '\n') return fail("Protocol error: expected CRLF");
  args_.push_back({pos_, static_cast<size_t>(bulk_len_)});
  pos_ = static_cast<size_t>(end + 2);
  if (args_.size() == expected_) return finish(pos_);
  scan_ = pos_ + 1;
  phase_ = Phase::bulk_line;
  return Step::next;
}

// ---------------------------------------------------------------------------------------------------------------
// ReplyParser

ReplyParser::ReplyParser(Limits limits) : limits_(limits) {}

void ReplyParser::reset() {
  phase_ = Phase::type;
  finished_ = false;
  complete_ = false;
  attribute_pending_ = false;
  pos_ = 0;
  line_start_ = 0;
  scan_ = 0;
  line_type_ = 0;
  payload_len_ = 0;
  payload_type_ = 0;
  in_streamed_string_ = false;
  stack_.clear();
  size_ = 0;
  type_ = 0;
  head_size_ = 0;
  third_integer_.reset();
  error_.clear();
}

Status ReplyParser::parse(std::string_view in) {
  if (finished_) reset();
  for (;;) {
    Step step = Step::next;
    switch (phase_) {
      case Phase::type:
        step = read_type(in);
        break;
      case Phase::line:
        step = read_line(in);
        break;
      case Phase::payload:
        step = read_payload(in);
        break;
    }
    if (step == Step::wait) return Status::incomplete;
    if (step == Step::failed) {
      finished_ = true;
      return Status::error;
    }
    if (complete_) {
      size_ = pos_;
      finished_ = true;
      return Status::complete;
    }
  }
}

ReplyParser::Step ReplyParser::fail(std::string message) {
  error_ = std::move(message);
  return Step::failed;
}

ReplyParser::Step ReplyParser::read_type(std::string_view in) {
  if (pos_ >= in.size()) return Step::wait;
  const char t = in[pos_];
  if (in_streamed_string_) {
    if (t != ';') return fail("expected a ';' chunk in a streamed string, got " + hex_byte(t) + at(pos_));
  } else if (std::strchr("+-:$*_,#!=(%~>|.", t) == nullptr || t == '\0') {
    return fail("bad reply type byte " + hex_byte(t) + at(pos_));
  }
  line_type_ = t;
  line_start_ = pos_;
  scan_ = pos_ + 1;
  phase_ = Phase::line;
  return Step::next;
}

ReplyParser::Step ReplyParser::read_line(std::string_view in) {
  // Simple strings, errors, doubles and big numbers have no length bound: the CR search resumes where it stopped.
  const bool short_line = std::strchr("+-,(", line_type_) == nullptr;
  const size_t window_end = short_line ? line_start_ + 1 + kMaxShortLine + 1 : in.size();
  const size_t cr = find_byte(in, '\r', scan_, window_end, scanned_);
  if (cr == std::string_view::npos) {
    if (short_line && in.size() >= window_end)
      return fail("'" + std::string(1, line_type_) + "' line longer than " + std::to_string(kMaxShortLine) + " bytes" +
                  at(line_start_));
    scan_ = std::min(in.size(), window_end);
    return Step::wait;
  }
  if (cr + 1 >= in.size()) {
    scan_ = cr;
    return Step::wait;
  }
  if (in[cr + 1] != '\n') return fail("expected CRLF" + at(cr + 1));
  pos_ = cr + 2;
  phase_ = Phase::type;
  return on_line(in.substr(line_start_ + 1, cr - line_start_ - 1));
}

ReplyParser::Step ReplyParser::on_line(std::string_view text) {
  const char t = line_type_;
  if (t == ';') return on_chunk_length(text);
  if (t == '.') return on_end_of_stream(text);
  if (t != '|') {
    if (stack_.empty()) type_ = t;
    attribute_pending_ = false;
  }
  switch (t) {
    case '$':
    case '!':
    case '=':
      return on_blob_length(text);
    case '*':
    case '%':
    case '~':
    case '>':
    case '|':
      return on_aggregate(text);
    default:
      return on_scalar(text);
  }
}

ReplyParser::Step ReplyParser::on_scalar(std::string_view text) {
  std::optional<int64_t> integer;
  switch (line_type_) {
    case ':':
      integer = parse_integer(text);
      if (!integer) return fail("invalid integer" + at(line_start_));
      break;
    case '_':
      if (!text.empty()) return fail("invalid null" + at(line_start_));
      break;
    case '#':
      if (text != "t" && text != "f") return fail("invalid boolean" + at(line_start_));
      break;
    case ',':
      if (!is_double(text)) return fail("invalid double" + at(line_start_));
      break;
    case '(':
      if (!is_big_number(text)) return fail("invalid big number" + at(line_start_));
      break;
    default:  // '+' and '-': any text
      break;
  }
  note_top_element(line_type_, text, integer);
  element_done();
  return Step::next;
}

ReplyParser::Step ReplyParser::on_blob_length(std::string_view text) {
  if (line_type_ == '$' && text == "-1") {
    element_done();
    return Step::next;
  }
  if (line_type_ == '$' && text == "?") {
    in_streamed_string_ = true;
    return Step::next;
  }
  const auto len = parse_length(text);
  if (!len) return fail("invalid length" + at(line_start_));
  if (*len > limits_.max_bulk)
    return fail("bulk length " + std::to_string(*len) + " above the limit " + std::to_string(limits_.max_bulk) +
                at(line_start_));
  if (line_type_ == '=' && *len < 4) return fail("invalid verbatim string" + at(line_start_));
  payload_len_ = *len;
  payload_type_ = line_type_;
  phase_ = Phase::payload;
  return Step::next;
}

ReplyParser::Step ReplyParser::on_chunk_length(std::string_view text) {
  const auto len = parse_length(text);
  if (!len) return fail("invalid length" + at(line_start_));
  if (*len > limits_.max_bulk)
    return fail("bulk length " + std::to_string(*len) + " above the limit " + std::to_string(limits_.max_bulk) +
                at(line_start_));
  if (*len == 0) {
    in_streamed_string_ = false;
    element_done();
    return Step::next;
  }
  payload_len_ = *len;
  payload_type_ = ';';
  phase_ = Phase::payload;
  return Step::next;
}

ReplyParser::Step ReplyParser::read_payload(std::string_view in) {
  const uint64_t end = pos_ + payload_len_;  // payload_len_ <= max_bulk: no overflow
  if (in.size() < end + 2) return Step::wait;
  if (in[end] != '\r' || in[end + 1] != '\n') return fail("expected CRLF after the payload" + at(end));
  const std::string_view payload = in.substr(pos_, static_cast<size_t>(payload_len_));
  pos_ = static_cast<size_t>(end + 2);
  phase_ = Phase::type;
  if (payload_type_ == ';') return Step::next;  // one chunk of a streamed string
  if (payload_type_ == '=' && payload[3] != ':') return fail("invalid verbatim string" + at(line_start_));
  note_top_element(payload_type_, payload, std::nullopt);
  element_done();
  return Step::next;
}

ReplyParser::Step ReplyParser::on_aggregate(std::string_view text) {
  const char t = line_type_;
  if (t == '*' && text == "-1") {
    element_done();
    return Step::next;
  }
  const bool streamed = text == "?" && t != '|';
  uint64_t count = 0;
  if (!streamed) {
    const auto n = parse_length(text);
    if (!n) return fail("invalid length" + at(line_start_));
    if (*n > kMaxAggregate)
      return fail("aggregate count " + std::to_string(*n) + " above " + std::to_string(kMaxAggregate) +
                  at(line_start_));
    count = (t == '%' || t == '|') ? *n * 2 : *n;
  }
  if (!streamed && count == 0) {
    if (t == '|')
      attribute_pending_ = true;
    else
      element_done();
    return Step::next;
  }
  if (stack_.size() >= limits_.max_depth)
    return fail("nesting deeper than " + std::to_string(limits_.max_depth) + at(line_start_));
  stack_.push_back({count, 0, t, streamed});
  return Step::next;
}

ReplyParser::Step ReplyParser::on_end_of_stream(std::string_view text) {
  if (!text.empty()) return fail("invalid end of stream" + at(line_start_));
  if (stack_.empty() || !stack_.back().streamed || attribute_pending_ ||
      (stack_.back().type == '%' && stack_.back().seen % 2 != 0))
    return fail("'.' outside a streamed aggregate" + at(line_start_));
  stack_.pop_back();
  element_done();
  return Step::next;
}

// One value is complete: count it in its aggregate, and close every aggregate that this completes, innermost first.
void ReplyParser::element_done() {
  for (;;) {
    if (stack_.empty()) {
      complete_ = true;
      return;
    }
    Level& top = stack_.back();
    ++top.seen;
    if (top.streamed || --top.remaining > 0) return;
    const bool attribute = top.type == '|';
    stack_.pop_back();
    if (attribute) {  // it annotates the value that follows, and is no element of its own
      attribute_pending_ = true;
      return;
    }
  }
}

void ReplyParser::note_top_element(char type, std::string_view text, std::optional<int64_t> integer) {
  if (stack_.size() != 1 || (stack_[0].type != '*' && stack_[0].type != '>')) return;
  const uint64_t index = stack_[0].seen;
  if (index == 0 && (type == '+' || type == '$') && text.size() <= kMaxHead) {
    std::transform(text.begin(), text.end(), head_,
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    head_size_ = text.size();
  }
  if (index == 2 && type == ':') third_integer_ = integer;
}

// ---------------------------------------------------------------------------------------------------------------
// Encoders

void encode_error(std::string& out, std::string_view prefix_and_message) {
  out += '-';
  for (char c : prefix_and_message) out += (c == '\r' || c == '\n') ? ' ' : c;
  out += "\r\n";
}

void encode_value(std::string& out, const nlohmann::json& value, int resp) {
  // A Lua table can nest deeply: walk arrays with an explicit stack rather than recursion.
  struct Open {
    const nlohmann::json* array;
    size_t next;
  };
  std::vector<Open> open;
  auto emit = [&](const nlohmann::json& v) {
    if (v.is_array()) {
      append_number(out, '*', static_cast<int64_t>(v.size()));
      if (!v.empty()) open.push_back({&v, 0});
    } else if (v.is_null()) {
      out += resp == 3 ? "_\r\n" : "$-1\r\n";
    } else if (fits_resp_integer(v)) {
      append_number(out, ':', v.get<int64_t>());
    } else if (v.is_string()) {
      append_bulk(out, v.get_ref<const std::string&>());
    } else {
      append_bulk(out, v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  };
  emit(value);
  while (!open.empty()) {
    Open& top = open.back();
    if (top.next == top.array->size()) {
      open.pop_back();
      continue;
    }
    const nlohmann::json& element = (*top.array)[top.next++];
    emit(element);  // may push: `top` is not used after this
  }
}

void encode_command(std::string& out, std::initializer_list<std::string_view> args) {
  append_number(out, '*', static_cast<int64_t>(args.size()));
  for (std::string_view arg : args) append_bulk(out, arg);
}

}  // namespace faultline::proxy::redis
