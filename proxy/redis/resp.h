// Incremental RESP2/RESP3 parsers for client commands and server replies, and the encoders for injected replies.
//
// The contract the proxy relies on (unit-tested for every split of every frame):
// - parse(in) looks at one frame that starts at in[0]. It returns `incomplete` until the whole frame is in `in`;
//   the caller then passes the same bytes again, possibly followed by more (its buffer may have moved: the parsers
//   keep offsets, never pointers). Parsing resumes where it stopped, so the work for one frame over all calls is
//   linear in the frame's size whatever the split.
// - `complete`: size() is the frame's length; the bytes after it belong to the next frame. `error`: error() says
//   what was wrong; the connection is not worth reading further. Either way the next parse() starts a new frame.
// - Every length read from the wire is checked against Limits before it is trusted; nesting is an explicit stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace faultline::proxy::redis {

struct Limits {
  size_t max_inline = 64 * 1024;           // an inline command line longer than this is an error (as Redis)
  size_t max_args = 1024 * 1024;           // *N of a command
  size_t max_bulk = 512ull * 1024 * 1024;  // $N of a command argument or of a reply string
  size_t max_depth = 128;                  // reply nesting (aggregates in aggregates, attributes included)
};

enum class Status { incomplete, complete, error };

// One client command: RESP multibulk (`*N\r\n$len\r\narg\r\n...`) or an inline command line.
class CommandParser {
 public:
  explicit CommandParser(Limits limits = {});

  Status parse(std::string_view in);
  size_t size() const { return size_; }  // bytes of the complete command
  // Elements including the command name; 0 for an empty command (blank inline line, *0, *-1), which Redis ignores
  // without answering.
  size_t arg_count() const { return args_.size(); }
  // The i-th element (0 = command name); `in` as passed to the last parse(). Inline arguments live in the parser
  // (they may have been unquoted): valid until the next parse() or reset().
  std::string_view arg(std::string_view in, size_t i) const;
  bool is_inline() const { return inline_; }
  // Bytes examined by line-end searches since construction: the tests hold it to the input's size, which proves
  // that no split of the input makes the parser rescan.
  uint64_t scanned() const { return scanned_; }
  // Redis's own wording, e.g. "Protocol error: invalid multibulk length".
  const std::string& error() const { return error_; }
  void reset();

 private:
  enum class Phase { start, inline_line, count_line, bulk_line, payload };
  struct Span {
    size_t begin;
    size_t size;
  };

  enum class Step { next, wait, done };  // done: complete or failed, see finished_

  Step parse_inline(std::string_view in);
  Step parse_count(std::string_view in);
  Step parse_bulk_line(std::string_view in);
  Step parse_payload(std::string_view in);
  bool split_inline(std::string_view line);
  Step fail(std::string message);
  Step finish(size_t size);

  Limits limits_;
  Phase phase_ = Phase::start;
  bool finished_ = false;  // the last parse() returned complete or error
  bool failed_ = false;
  bool inline_ = false;
  size_t pos_ = 0;   // next byte to parse, from the command's start
  size_t scan_ = 0;  // where the search for the current line's end resumes
  uint64_t expected_ = 0;
  uint64_t bulk_len_ = 0;
  size_t size_ = 0;
  std::vector<Span> args_;   // reused across commands
  std::string inline_args_;  // unquoted inline arguments, back to back
  std::string error_;
  uint64_t scanned_ = 0;
};

// One reply frame from the server, every RESP2 and RESP3 type: + - : $ * (RESP2), _ , # ! = ( % ~ > | (RESP3),
// nulls $-1 and *-1, streamed strings ($? with ;len chunks ending ;0) and streamed aggregates (*? %? ~? >? ending
// with .). An attribute (|N) before a reply belongs to that reply's frame; attributes may also come before an
// element inside an aggregate.
class ReplyParser {
 public:
  explicit ReplyParser(Limits limits = {});

  Status parse(std::string_view in);
  size_t size() const { return size_; }  // bytes of the complete frame
  char type() const { return type_; }    // top-level type byte after any attribute
  bool is_push() const { return type_ == '>'; }
  bool is_error() const { return type_ == '-' || type_ == '!'; }
  // For a top-level array or push whose first element is a simple or bulk string of at most 32 bytes: that string
  // lower-cased ("message", "subscribe", "pong", ...); otherwise empty.
  std::string_view head() const { return {head_, head_size_}; }
  // For a top-level array or push whose third element is an integer: its value (the subscription count of a
  // subscribe/unsubscribe confirmation); otherwise nullopt.
  std::optional<int64_t> third_integer() const { return third_integer_; }
  // Bytes examined by line-end searches since construction (see CommandParser::scanned).
  uint64_t scanned() const { return scanned_; }
  // What was wrong and at which byte of the frame, e.g. "bad reply type byte 0x41 at offset 17".
  const std::string& error() const { return error_; }
  void reset();

 private:
  enum class Phase { type, line, payload };
  enum class Step { next, wait, failed };
  // One open aggregate. Maps and attributes count keys and values as separate elements.
  struct Level {
    uint64_t remaining;  // elements still to come (unused when streamed)
    uint64_t seen;       // elements complete so far
    char type;
    bool streamed;
  };

  Step read_type(std::string_view in);
  Step read_line(std::string_view in);
  Step read_payload(std::string_view in);
  Step on_line(std::string_view text);
  Step on_scalar(std::string_view text);
  Step on_blob_length(std::string_view text);
  Step on_chunk_length(std::string_view text);
  Step on_aggregate(std::string_view text);
  Step on_end_of_stream(std::string_view text);
  void element_done();
  void note_top_element(char type, std::string_view text, std::optional<int64_t> integer);
  Step fail(std::string message);

  Limits limits_;
  Phase phase_ = Phase::type;
  bool finished_ = false;  // the last parse() returned complete or error
  bool complete_ = false;
  bool attribute_pending_ = false;  // an attribute ended: a value must follow (not a '.')
  size_t pos_ = 0;                  // next byte to parse, from the frame's start
  size_t line_start_ = 0;           // the current line's type byte
  size_t scan_ = 0;                 // where the search for the current line's CR resumes
  char line_type_ = 0;
  uint64_t payload_len_ = 0;
  char payload_type_ = 0;
  bool in_streamed_string_ = false;
  std::vector<Level> stack_;  // reused across frames
  size_t size_ = 0;
  char type_ = 0;
  char head_[32] = {};
  size_t head_size_ = 0;
  std::optional<int64_t> third_integer_;
  std::string error_;
  uint64_t scanned_ = 0;
};

// "-LOADING Redis is loading...\r\n". CR and LF in the text become spaces, so the frame stays one line.
void encode_error(std::string& out, std::string_view prefix_and_message);
// A reply value made by a Lua rule: null → "$-1\r\n" (resp 2) or "_\r\n" (resp 3); integer → ":N\r\n"; string → bulk
// string; array → "*N\r\n" and its elements; anything else (bool, float, object) → its JSON text as a bulk string.
void encode_value(std::string& out, const nlohmann::json& value, int resp);
// "*N\r\n$len\r\narg\r\n...": a command the proxy sends upstream on its own.
void encode_command(std::string& out, std::initializer_list<std::string_view> args);

}  // namespace faultline::proxy::redis
