// PostgreSQL frontend/backend protocol 3.x: framing, message names, body decoders and the few encoders the proxy needs.
//
// Everything here is pure and stateless, written for hostile bytes: a length read from the wire is checked before
// it is trusted, nothing reads past the view it was given, and every error names the message and the byte offset.
// Offsets in startup and framing errors count from the packet's first byte; offsets in decoder errors count from
// the first byte of the body (Frame::body), i.e. 5 bytes after the type byte.
//
// Framing never depends on the body: a body a decoder rejects does not desynchronise the stream, so the caller
// may forward such a message untouched and let the server answer it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace faultline::proxy::postgres {

enum class Status { incomplete, complete, error };

constexpr size_t kMaxStartup = 10000;     // PostgreSQL's MAX_STARTUP_PACKET_LENGTH
constexpr size_t kMaxMessage = 1u << 30;  // 1 GiB, PostgreSQL's own ceiling (bounds the int32 length field)

// Codes of the packets that may open a connection instead of a StartupMessage.
constexpr uint32_t kCancelRequestCode = 80877102;  // 1234.5678
constexpr uint32_t kSslRequestCode = 80877103;     // 1234.5679
constexpr uint32_t kGssEncRequestCode = 80877104;  // 1234.5680
// A CancelRequest is 16 bytes with a protocol 3.0 key (4 bytes); protocol 3.2 (PostgreSQL 18) keys run up to
// 256 bytes, so the packet may be up to 12 + 256.
constexpr size_t kMinCancelRequest = 16;
constexpr size_t kMaxCancelRequest = 12 + 256;

// The first message of a client connection (no type byte): int32 length (includes itself) + int32 code.
enum class StartupKind { ssl_request, gssenc_request, cancel_request, startup };

struct Startup {
  StartupKind kind{};
  size_t size = 0;                                          // bytes of the whole packet
  uint32_t protocol = 0;                                    // startup: major << 16 | minor
  std::vector<std::pair<std::string, std::string>> params;  // startup: name/value pairs in order

  // The last "user" parameter, as the server takes it ("" when absent).
  std::string user() const;
  // The "database" parameter; absent or empty means the user name, as the server does.
  std::string database() const;
};

// in starts at the packet's first byte and may hold bytes after it. incomplete until the whole packet is there;
// error, as soon as the 4- or 8-byte header shows it, for a length below 8 or above kMaxStartup, an SSLRequest or
// GSSENCRequest whose length is not 8, a CancelRequest outside 16..268 bytes, or an unsupported protocol
// ("unsupported frontend protocol 2.0"); once whole, for a parameter without its NUL terminator, a missing final
// NUL, bytes after it, or a StartupMessage without a non-empty "user" (the server requires one).
Status parse_startup(std::string_view in, Startup& out, std::string& error);

// A typed message (after startup, both directions): type byte + int32 length (includes itself, >= 4).
struct Frame {
  char type = 0;
  size_t size = 0;  // the whole message, type byte included
  std::string_view body;
};

// Stateless: the 5-byte header alone gives the size, so the caller can wait for the rest without rescanning, and a
// hostile length is refused before its bytes arrive. error for a length below 4 or above max (naming the type byte
// and the length).
Status next_frame(std::string_view in, Frame& out, std::string& error, size_t max = kMaxMessage);

// 'Q' "Query", 'P' "Parse", 'B' "Bind", 'E' "Execute", 'D' "Describe", 'C' "Close", 'S' "Sync", 'H' "Flush",
// 'X' "Terminate", 'd' "CopyData", 'c' "CopyDone", 'f' "CopyFail", 'F' "FunctionCall", 'p' "PasswordMessage"
// (also the SASL and GSS responses, which share the type byte); nullptr for any other byte.
const char* frontend_name(char type);
// Every backend message type of protocol 3.0 to 3.2 ('R' is "Authentication" for all its subtypes); nullptr for
// any other byte.
const char* backend_name(char type);
// NoticeResponse, NotificationResponse and ParameterStatus can arrive at any time: they take no reply slot.
bool backend_async(char type);

// Decoders of frontend message bodies (body = Frame::body). Each returns false and sets error (naming the message
// and the body offset) when the body is malformed: a missing NUL, a count running past the end, trailing bytes
// where the format is exact. Views point into body. On success error is left untouched and nothing is allocated.
struct Query {
  std::string_view sql;
};
struct Parse {
  std::string_view statement, sql;
  uint16_t param_types = 0;
};
// The whole layout is checked: parameter format codes (0, 1 or as many as parameters), parameter values (length
// -1 is NULL, other negative lengths are malformed) and result format codes. The values of format codes are the
// server's to judge (it answers an ordinary error), not a framing matter.
struct Bind {
  std::string_view portal, statement;
};
struct Execute {
  std::string_view portal;
  int32_t max_rows = 0;
};
struct DescribeOrClose {
  char kind = 0;  // 'S' (prepared statement) or 'P' (portal)
  std::string_view name;
};
bool decode(std::string_view body, Query& out, std::string& error);
bool decode(std::string_view body, Parse& out, std::string& error);
bool decode(std::string_view body, Bind& out, std::string& error);
bool decode(std::string_view body, Execute& out, std::string& error);
// type: 'D' or 'C', only to name the message in errors.
bool decode(std::string_view body, DescribeOrClose& out, std::string& error, char type = 'D');

// Backend bodies the proxy needs to read.
// ReadyForQuery: exactly one byte, 'I' (idle), 'T' (in a transaction) or 'E' (in a failed transaction).
bool ready_status(std::string_view body, char& status, std::string& error);

struct ErrorFields {
  std::string severity;  // V (never localised), else S
  std::string sqlstate;  // C
  std::string message;   // M
};
// ErrorResponse or NoticeResponse (type, 'E' or 'N', only names the message in errors): code byte + string pairs
// up to a final NUL, nothing after it.
bool decode_error(std::string_view body, ErrorFields& out, std::string& error, char type = 'E');

// Encoders (append to out). Strings are cut at their first NUL, which would otherwise end them early on the wire
// and shift every later field.
// 'E' with S and V (severity), C (sqlstate), M (message) and the final NUL.
void encode_error(std::string& out, std::string_view severity, std::string_view sqlstate, std::string_view message);
void encode_ready(std::string& out, char status);                      // 'Z'
void encode_command_complete(std::string& out, std::string_view tag);  // 'C', e.g. "ROLLBACK"
void encode_query(std::string& out, std::string_view sql);             // 'Q'
void encode_terminate(std::string& out);                               // 'X'

}  // namespace faultline::proxy::postgres
