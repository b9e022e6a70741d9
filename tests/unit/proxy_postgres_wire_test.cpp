// The PostgreSQL codec: real byte sequences built by hand, split at every byte, walked back to back, and broken.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/postgres/query_message.h"
#include "proxy/postgres/statements.h"
#include "proxy/postgres/wire.h"

using namespace faultline::proxy::postgres;
using namespace std::string_literals;

namespace {

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }
// A typed message: type byte, int32 length (itself + body), body.
std::string msg(char type, const std::string& body) {
  return std::string(1, type) + be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string startup_packet(uint32_t protocol, const std::vector<std::pair<std::string, std::string>>& params) {
  std::string body = be32(protocol);
  for (auto& [name, value] : params) body += cstr(name) + cstr(value);
  body += '\0';
  return be32(static_cast<uint32_t>(body.size() + 4)) + body;
}

// Every strict prefix of one message is incomplete; the whole, alone or followed by more, is complete.
Frame whole_frame(const std::string& wire) {
  std::string error;
  Frame f;
  for (size_t n = 0; n < wire.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    REQUIRE(next_frame(std::string_view(wire).substr(0, n), f, error) == Status::incomplete);
  }
  const std::string more = wire + "Z\0\0\0\x05I"s;
  REQUIRE(next_frame(more, f, error) == Status::complete);
  CHECK(f.size == wire.size());
  REQUIRE(next_frame(wire, f, error) == Status::complete);
  CHECK(f.size == wire.size());
  CHECK(f.type == wire[0]);
  CHECK(f.body == std::string_view(wire).substr(5));
  CHECK(error.empty());
  return f;  // views into wire
}

Startup whole_startup(const std::string& wire) {
  std::string error;
  Startup s;
  for (size_t n = 0; n < wire.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    REQUIRE(parse_startup(std::string_view(wire).substr(0, n), s, error) == Status::incomplete);
  }
  const std::string more = wire + "Q\0\0\0\x05"s;  // whatever follows is not the packet's
  REQUIRE(parse_startup(more, s, error) == Status::complete);
  CHECK(s.size == wire.size());
  REQUIRE(parse_startup(wire, s, error) == Status::complete);
  CHECK(s.size == wire.size());
  CHECK(error.empty());
  return s;
}

struct Seen {
  char type;
  size_t size;
  std::string body;
  bool operator==(const Seen&) const = default;
};

// Walks a stream that holds whole messages only.
std::vector<Seen> walk(std::string_view stream) {
  std::vector<Seen> seen;
  std::string error;
  size_t pos = 0;
  while (pos < stream.size()) {
    Frame f;
    INFO("at offset " << pos);
    REQUIRE(next_frame(stream.substr(pos), f, error) == Status::complete);
    seen.push_back({f.type, f.size, std::string(f.body)});
    pos += f.size;
  }
  CHECK(pos == stream.size());
  return seen;
}

// Feeds the stream one byte at a time into a buffer with a read cursor, as the proxy reads.
std::vector<Seen> trickle(std::string_view stream) {
  std::vector<Seen> seen;
  std::string buffer, error;
  size_t cursor = 0;
  for (char c : stream) {
    buffer.push_back(c);
    Frame f;
    Status s;
    while ((s = next_frame(std::string_view(buffer).substr(cursor), f, error)) == Status::complete) {
      seen.push_back({f.type, f.size, std::string(f.body)});
      cursor += f.size;
    }
    REQUIRE(s == Status::incomplete);
  }
  CHECK(cursor == buffer.size());
  return seen;
}

std::string frame_error(const std::string& in, size_t max = kMaxMessage) {
  Frame f;
  std::string error;
  REQUIRE(next_frame(in, f, error, max) == Status::error);
  return error;
}

std::string startup_error(const std::string& in) {
  Startup s;
  std::string error;
  REQUIRE(parse_startup(in, s, error) == Status::error);
  return error;
}

template <typename T>
std::string decode_error_text(const std::string& body) {
  T out;
  std::string error;
  REQUIRE_FALSE(decode(body, out, error));
  return error;
}

// The unnamed-statement batch libpq's PQexecParams sends, written out byte by byte.
const std::string kUnnamedBatch =
    "P\0\0\0\x10\0SELECT 1\0\0\0"s  // Parse "" "SELECT 1", no parameter types
    "B\0\0\0\x0c\0\0\0\0\0\0\0\0"s  // Bind "" "", no formats, no parameters, no result formats
    "D\0\0\0\x06P\0"s               // Describe portal ""
    "E\0\0\0\x09\0\0\0\0\0"s        // Execute "" all rows
    "S\0\0\0\x04"s;                 // Sync

const std::string kInsertSql = "INSERT INTO accounts (id, note) VALUES ($1, $2)";

std::string named_parse() { return msg('P', cstr("s1") + cstr(kInsertSql) + be16(2) + be32(23) + be32(25)); }
std::string named_bind() {
  return msg('B', cstr("p1") + cstr("s1") + be16(2) + be16(0) + be16(1)  // formats: text, binary
                      + be16(2) + be32(2) + "42" + be32(0xffffffff)      // "42", NULL
                      + be16(1) + be16(1));                              // binary results
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Startup

TEST_CASE("an SSLRequest and a GSSENCRequest are 8 bytes and parse only when whole", "[postgres]") {
  const std::string ssl = "\0\0\0\x08\x04\xd2\x16\x2f"s;
  Startup s = whole_startup(ssl);
  CHECK(s.kind == StartupKind::ssl_request);
  CHECK(s.size == 8);
  CHECK(s.params.empty());

  s = whole_startup("\0\0\0\x08\x04\xd2\x16\x30"s);
  CHECK(s.kind == StartupKind::gssenc_request);
}

TEST_CASE("a CancelRequest takes a 4-byte key, or a protocol 3.2 key up to 256 bytes", "[postgres]") {
  const std::string cancel = "\0\0\0\x10\x04\xd2\x16\x2e"s + be32(4242) + be32(0xdeadbeef);
  Startup s = whole_startup(cancel);
  CHECK(s.kind == StartupKind::cancel_request);
  CHECK(s.size == 16);

  s = whole_startup(be32(12 + 32) + be32(kCancelRequestCode) + be32(4242) + std::string(32, 'k'));
  CHECK(s.kind == StartupKind::cancel_request);
  CHECK(s.size == 44);
  s = whole_startup(be32(12 + 256) + be32(kCancelRequestCode) + be32(1) + std::string(256, 'k'));
  CHECK(s.size == 268);
}

TEST_CASE("a StartupMessage yields its protocol and parameters in order", "[postgres]") {
  const std::string wire =
      "\0\0\0\x4d\0\x03\0\0"s
      "user\0alice\0"s
      "database\0shop\0"s
      "application_name\0psql\0"s
      "client_encoding\0UTF8\0"s
      "\0"s;
  REQUIRE(wire.size() == 0x4d);
  Startup s = whole_startup(wire);
  CHECK(s.kind == StartupKind::startup);
  CHECK(s.protocol == (3u << 16));
  using P = std::vector<std::pair<std::string, std::string>>;
  CHECK(s.params ==
        P{{"user", "alice"}, {"database", "shop"}, {"application_name", "psql"}, {"client_encoding", "UTF8"}});
  CHECK(s.user() == "alice");
  CHECK(s.database() == "shop");

  // Protocol 3.2 (PostgreSQL 18) with a protocol option: any 3.x minor is the server's to negotiate.
  s = whole_startup(startup_packet(3u << 16 | 2, {{"user", "bob"}, {"_pq_.test_option", "on"}}));
  CHECK(s.protocol == (3u << 16 | 2));
  CHECK(s.params.size() == 2);
}

TEST_CASE("the database defaults to the user name, as the server does", "[postgres]") {
  Startup s = whole_startup(startup_packet(3u << 16, {{"user", "alice"}}));
  CHECK(s.database() == "alice");
  s = whole_startup(startup_packet(3u << 16, {{"database", ""}, {"user", "carol"}}));
  CHECK(s.database() == "carol");
  // Repeated parameters: the last one wins, as in the server's loop.
  s = whole_startup(startup_packet(3u << 16, {{"user", "a"}, {"database", "d1"}, {"user", "b"}, {"database", "d2"}}));
  CHECK(s.user() == "b");
  CHECK(s.database() == "d2");
  CHECK(Startup{}.user().empty());
  CHECK(Startup{}.database().empty());
}

TEST_CASE("a startup length out of bounds is refused from its first 4 bytes", "[postgres]") {
  CHECK(startup_error("\0\0\0\x07"s) == "startup packet length 7 at offset 0 is outside 8..10000");
  CHECK(startup_error(be32(10001)) == "startup packet length 10001 at offset 0 is outside 8..10000");
  CHECK(startup_error("\xff\xff\xff\xff"s) == "startup packet length -1 at offset 0 is outside 8..10000");
  CHECK(startup_error("\x16\x03\x01\x02\0\x01"s) ==
        "startup packet length 369295618 at offset 0 is outside 8..10000 "
        "(this looks like a TLS handshake: sslnegotiation=direct?)");
  // The largest packet the server accepts is fine.
  Startup s;
  std::string error;
  CHECK(parse_startup(be32(10000) + be32(3u << 16), s, error) == Status::incomplete);
}

TEST_CASE("a startup code the server would refuse is refused from the first 8 bytes", "[postgres]") {
  CHECK(startup_error(be32(100) + be32(2u << 16)) ==
        "unsupported frontend protocol 2.0 at offset 4 (3.x is supported)");
  CHECK(startup_error(be32(8) + be32(1234u << 16 | 5681)) ==
        "unsupported frontend protocol 1234.5681 at offset 4 (3.x is supported)");
  CHECK(startup_error(be32(12) + be32(kSslRequestCode)) == "SSLRequest length 12 at offset 0 is not 8");
  CHECK(startup_error(be32(16) + be32(kGssEncRequestCode)) == "GSSENCRequest length 16 at offset 0 is not 8");
  CHECK(startup_error(be32(12) + be32(kCancelRequestCode)) == "CancelRequest length 12 at offset 0 is outside 16..268");
  CHECK(startup_error(be32(269) + be32(kCancelRequestCode)) ==
        "CancelRequest length 269 at offset 0 is outside 16..268");
}

TEST_CASE("a StartupMessage with a broken parameter list is refused once whole", "[postgres]") {
  const std::string v3 = be32(3u << 16);
  auto packet = [&](const std::string& params) { return be32(static_cast<uint32_t>(8 + params.size())) + v3 + params; };
  CHECK(startup_error(packet("user")) == "StartupMessage: parameter name at offset 8 has no NUL terminator");
  CHECK(startup_error(packet("user\0bob"s)) ==
        "StartupMessage: value of parameter 'user' at offset 13 has no NUL terminator");
  CHECK(startup_error(packet("user\0bob\0"s)) ==
        "StartupMessage: missing the final NUL (the packet ends at offset 17)");
  CHECK(startup_error(packet("")) == "StartupMessage: missing the final NUL (the packet ends at offset 8)");
  CHECK(startup_error(packet("user\0bob\0\0xy"s)) ==
        "StartupMessage: 2 unexpected bytes at offset 18 after the final NUL");
  CHECK(startup_error(packet("user\0bob\0\0\0"s)) ==
        "StartupMessage: 1 unexpected byte at offset 18 after the final NUL");
  CHECK(startup_error(packet("database\0shop\0\0"s)) ==
        "StartupMessage: no \"user\" parameter (the server requires one)");
  CHECK(startup_error(packet("user\0\0\0"s)) == "StartupMessage: no \"user\" parameter (the server requires one)");
  // Hostile names are quoted printable and short in the error.
  CHECK(startup_error(packet("a\nb\0x"s)) ==
        "StartupMessage: value of parameter 'a\\x0ab' at offset 12 has no NUL terminator");
}

// ---------------------------------------------------------------------------------------------------------------
// Framing

TEST_CASE("every frontend message type frames at every split and has its name", "[postgres]") {
  struct Case {
    std::string wire;
    const char* name;
  };
  const std::vector<Case> cases = {
      {"Q\0\0\0\x0dSELECT 1\0"s, "Query"},
      {named_parse(), "Parse"},
      {named_bind(), "Bind"},
      {"E\0\0\0\x0bp1\0\0\0\0\x64"s, "Execute"},
      {"D\0\0\0\x08Sp1\0"s, "Describe"},
      {"C\0\0\0\x08Ss1\0"s, "Close"},
      {"S\0\0\0\x04"s, "Sync"},
      {"H\0\0\0\x04"s, "Flush"},
      {"X\0\0\0\x04"s, "Terminate"},
      {"d\0\0\0\x10"
       "1\tfirst row\n"s,
       "CopyData"},
      {"c\0\0\0\x04"s, "CopyDone"},
      {"f\0\0\0\x0dtoo bad!\0"s, "CopyFail"},
      {msg('F', be32(1598) + be16(1) + be16(0) + be16(1) + be32(1) + "x" + be16(0)), "FunctionCall"},
      {"p\0\0\0\x0bsecret\0"s, "PasswordMessage"},
      {msg('p', cstr("SCRAM-SHA-256") + be32(8) + "n,,n=,r="), "PasswordMessage"},  // SASLInitialResponse
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Frame f = whole_frame(c.wire);
    CHECK(std::string_view(frontend_name(f.type)) == c.name);
  }
  CHECK(frontend_name('Z') == nullptr);
  CHECK(frontend_name('\0') == nullptr);
}

TEST_CASE("every backend message type frames at every split, has its name, and only three are asynchronous",
          "[postgres]") {
  struct Case {
    std::string wire;
    const char* name;
    bool async;
  };
  const std::string row_description =
      msg('T', be16(1) + cstr("?column?") + be32(0) + be16(0) + be32(23) + be16(4) + be32(0xffffffff) + be16(0));
  const std::vector<Case> cases = {
      {"R\0\0\0\x08\0\0\0\0"s, "Authentication", false},                     // AuthenticationOk
      {"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"s, "Authentication", false},  // AuthenticationSASL
      {"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04"s, "Authentication", false},   // AuthenticationMD5Password
      {msg('K', be32(4242) + be32(0x12345678)), "BackendKeyData", false},
      {msg('S', cstr("server_version") + cstr("16.2")), "ParameterStatus", true},
      {"Z\0\0\0\x05I"s, "ReadyForQuery", false},
      {row_description, "RowDescription", false},
      {"D\0\0\0\x0b\0\x01\0\0\0\x01"
       "1"s,
       "DataRow", false},
      {"C\0\0\0\x0dSELECT 1\0"s, "CommandComplete", false},
      {"I\0\0\0\x04"s, "EmptyQueryResponse", false},
      {msg('E', "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0\0"s), "ErrorResponse", false},
      {msg('N', "SNOTICE\0VNOTICE\0C00000\0Mtable \"t\" does not exist, skipping\0\0"s), "NoticeResponse", true},
      {msg('A', be32(4242) + cstr("jobs") + cstr("{\"id\":7}")), "NotificationResponse", true},
      {"1\0\0\0\x04"s, "ParseComplete", false},
      {"2\0\0\0\x04"s, "BindComplete", false},
      {"3\0\0\0\x04"s, "CloseComplete", false},
      {"n\0\0\0\x04"s, "NoData", false},
      {"s\0\0\0\x04"s, "PortalSuspended", false},
      {msg('t', be16(2) + be32(23) + be32(25)), "ParameterDescription", false},
      {msg('G', "\0"s + be16(1) + be16(0)), "CopyInResponse", false},
      {msg('H', "\0"s + be16(1) + be16(0)), "CopyOutResponse", false},
      {msg('W', "\0"s + be16(0)), "CopyBothResponse", false},
      {"d\0\0\0\x06hi"s, "CopyData", false},
      {"c\0\0\0\x04"s, "CopyDone", false},
      {msg('V', be32(1) + "t"), "FunctionCallResponse", false},
      {msg('v', be32(0) + be32(1) + cstr("_pq_.unknown")), "NegotiateProtocolVersion", false},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Frame f = whole_frame(c.wire);
    CHECK(std::string_view(backend_name(f.type)) == c.name);
    CHECK(backend_async(f.type) == c.async);
  }
  CHECK(backend_name('Q') == nullptr);
  CHECK(backend_name('x') == nullptr);
}

TEST_CASE("an extended-protocol batch is walked frame by frame, whole or trickling in byte by byte", "[postgres]") {
  REQUIRE(kUnnamedBatch.size() == 17 + 13 + 7 + 10 + 5);
  const std::vector<Seen> seen = walk(kUnnamedBatch);
  REQUIRE(seen.size() == 5);
  CHECK(seen[0] == Seen{'P', 17, "\0SELECT 1\0\0\0"s});
  CHECK(seen[1] == Seen{'B', 13, std::string(8, '\0')});
  CHECK(seen[2] == Seen{'D', 7, "P\0"s});
  CHECK(seen[3] == Seen{'E', 10, std::string(5, '\0')});
  CHECK(seen[4] == Seen{'S', 5, ""});
  CHECK(trickle(kUnnamedBatch) == seen);

  Parse p;
  Bind b;
  DescribeOrClose d;
  Execute e;
  std::string error;
  REQUIRE(decode(seen[0].body, p, error));
  CHECK(p.statement.empty());
  CHECK(p.sql == "SELECT 1");
  CHECK(p.param_types == 0);
  REQUIRE(decode(seen[1].body, b, error));
  CHECK(b.portal.empty());
  CHECK(b.statement.empty());
  REQUIRE(decode(seen[2].body, d, error));
  CHECK(d.kind == 'P');
  CHECK(d.name.empty());
  REQUIRE(decode(seen[3].body, e, error));
  CHECK(e.portal.empty());
  CHECK(e.max_rows == 0);
  CHECK(error.empty());
}

TEST_CASE("a named prepared INSERT decodes to its statement, portal and SQL", "[postgres]") {
  const std::string stream = named_parse() + named_bind() + msg('D', "Sp1\0"s) + msg('E', cstr("p1") + be32(100)) +
                             msg('C', "Pp1\0"s) + msg('C', "Ss1\0"s) + "S\0\0\0\x04"s;
  const std::vector<Seen> seen = walk(stream);
  REQUIRE(seen.size() == 7);
  CHECK(trickle(stream) == seen);
  std::string error;
  Parse p;
  REQUIRE(decode(seen[0].body, p, error));
  CHECK(p.statement == "s1");
  CHECK(p.sql == kInsertSql);
  CHECK(p.param_types == 2);
  Bind b;
  REQUIRE(decode(seen[1].body, b, error));
  CHECK(b.portal == "p1");
  CHECK(b.statement == "s1");
  DescribeOrClose d;
  REQUIRE(decode(seen[2].body, d, error));
  CHECK(d.kind == 'S');
  CHECK(d.name == "p1");
  Execute e;
  REQUIRE(decode(seen[3].body, e, error));
  CHECK(e.portal == "p1");
  CHECK(e.max_rows == 100);
  REQUIRE(decode(seen[4].body, d, error, 'C'));
  CHECK(d.kind == 'P');
  REQUIRE(decode(seen[5].body, d, error, 'C'));
  CHECK(d.kind == 'S');
  CHECK(d.name == "s1");
  CHECK(error.empty());

  // A negative row limit is the server's "all rows", not an error.
  REQUIRE(decode(cstr("") + be32(0xffffffff), e, error));
  CHECK(e.max_rows == -1);
}

TEST_CASE("a simple Query and a COPY FROM STDIN stream are walked frame by frame", "[postgres]") {
  const std::string stream =
      "Q\0\0\0\x23"
      "COPY t FROM STDIN (FORMAT csv)\0"s
      "d\0\0\0\x08"
      "1,a\n"s
      "d\0\0\0\x08"
      "2,b\n"s
      "c\0\0\0\x04"s
      "Q\0\0\0\x0b"
      "COMMIT\0"s;
  const std::vector<Seen> seen = walk(stream);
  REQUIRE(seen.size() == 5);
  CHECK(trickle(stream) == seen);
  CHECK(seen[1] == Seen{'d', 9, "1,a\n"});
  CHECK(seen[3] == Seen{'c', 5, ""});
  Query q;
  std::string error;
  REQUIRE(decode(seen[0].body, q, error));
  CHECK(q.sql == "COPY t FROM STDIN (FORMAT csv)");
  REQUIRE(decode(seen[4].body, q, error));
  CHECK(q.sql == "COMMIT");
  REQUIRE(decode("\0"s, q, error));  // an empty query string is legal (EmptyQueryResponse)
  CHECK(q.sql.empty());
}

TEST_CASE("a server's startup reply is walked frame by frame and its bodies read", "[postgres]") {
  const std::string stream = "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"s + "R\0\0\0\x08\0\0\0\0"s +
                             msg('S', cstr("server_version") + cstr("16.2")) +
                             msg('S', cstr("client_encoding") + cstr("UTF8")) + msg('K', be32(77) + be32(99)) +
                             msg('N', "SWARNING\0VWARNING\0C01000\0Mcareful\0\0"s) + "Z\0\0\0\x05I"s +
                             "T\0\0\0\x21\0\x01?column?\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0"s +
                             "D\0\0\0\x0b\0\x01\0\0\0\x01"
                             "1"s +
                             "C\0\0\0\x0dSELECT 1\0"s + "Z\0\0\0\x05T"s;
  const std::vector<Seen> seen = walk(stream);
  REQUIRE(seen.size() == 11);
  CHECK(trickle(stream) == seen);
  std::string types;
  for (const Seen& s : seen) types += s.type;
  CHECK(types == "RRSSKNZTDCZ");

  char status = 0;
  std::string error;
  REQUIRE(ready_status(seen[6].body, status, error));
  CHECK(status == 'I');
  REQUIRE(ready_status(seen[10].body, status, error));
  CHECK(status == 'T');
  REQUIRE(ready_status("E", status, error));
  CHECK(status == 'E');
  ErrorFields notice;
  REQUIRE(decode_error(seen[5].body, notice, error, 'N'));
  CHECK(notice.severity == "WARNING");
  CHECK(notice.sqlstate == "01000");
  CHECK(notice.message == "careful");
  CHECK(error.empty());
}

TEST_CASE("an ErrorResponse yields its severity, SQLSTATE and message", "[postgres]") {
  const std::string body =
      "SERREUR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0Fparse_relation.c\0"
      "L1392\0RparserOpenTable\0\0"s;
  ErrorFields f;
  std::string error;
  REQUIRE(decode_error(body, f, error));
  CHECK(f.severity == "ERROR");  // V, never localised, wins over S
  CHECK(f.sqlstate == "42P01");
  CHECK(f.message == "relation \"nope\" does not exist");
  // Before 9.6 there is no V: S it is.
  REQUIRE(decode_error("SFATAL\0C57P01\0Mterminating connection\0\0"s, f, error));
  CHECK(f.severity == "FATAL");
  CHECK(f.sqlstate == "57P01");
  REQUIRE(decode_error("\0"s, f, error));
  CHECK(f.severity.empty());
  CHECK(f.message.empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

TEST_CASE("a frame length out of bounds is refused from the 5-byte header alone", "[postgres]") {
  CHECK(frame_error("Q\0\0\0\x03"s) == "message type 'Q': length 3 at offset 1 is below 4");
  CHECK(frame_error("D\xff\xff\xff\xff"s) == "message type 'D': length -1 at offset 1 is below 4");
  CHECK(frame_error("D\x40\0\0\x01"s) ==
        "message type 'D': length 1073741825 at offset 1 is above the limit 1073741824");
  CHECK(frame_error("\0\0\0\0\0"s) == "message type '\\x00': length 0 at offset 1 is below 4");
  CHECK(frame_error("d\0\x01\0\x01"s, 65536) == "message type 'd': length 65537 at offset 1 is above the limit 65536");
  // At the limit, the header is accepted and the body awaited.
  Frame f;
  std::string error;
  CHECK(next_frame("D\x40\0\0\0"s, f, error) == Status::incomplete);
  CHECK(next_frame("d\0\x01\0\0"s, f, error, 65536) == Status::incomplete);
  CHECK(error.empty());
}

TEST_CASE("Query and Parse bodies without their NULs or with extra bytes are refused", "[postgres]") {
  CHECK(decode_error_text<Query>("SELECT 1") == "Query: query string at body offset 0 has no NUL terminator");
  CHECK(decode_error_text<Query>("") == "Query: query string at body offset 0 has no NUL terminator");
  CHECK(decode_error_text<Query>("SELECT 1\0x"s) == "Query: 1 unexpected byte at body offset 9 after the last field");
  CHECK(decode_error_text<Parse>("s1") == "Parse: statement name at body offset 0 has no NUL terminator");
  CHECK(decode_error_text<Parse>("s1\0SELECT 1"s) == "Parse: query string at body offset 3 has no NUL terminator");
  CHECK(decode_error_text<Parse>("\0SELECT 1\0\0"s) ==
        "Parse: parameter type count at body offset 10 needs 2 bytes, 1 left");
  CHECK(decode_error_text<Parse>(cstr("") + cstr("SELECT $1") + be16(2) + be32(23)) ==
        "Parse: parameter type OIDs at body offset 13 needs 8 bytes, 4 left");
  CHECK(decode_error_text<Parse>(cstr("") + cstr("SELECT 1") + be16(0) + "zz") ==
        "Parse: 2 unexpected bytes at body offset 12 after the last field");
}

TEST_CASE("a Bind whose counts overrun the body is refused, naming the count and the offset", "[postgres]") {
  const std::string names = cstr("") + cstr("");
  CHECK(decode_error_text<Bind>("p1") == "Bind: portal name at body offset 0 has no NUL terminator");
  CHECK(decode_error_text<Bind>("\0s1"s) == "Bind: statement name at body offset 1 has no NUL terminator");
  CHECK(decode_error_text<Bind>(names + be16(3) + be16(0)) ==
        "Bind: parameter format codes at body offset 4 needs 6 bytes, 2 left");
  CHECK(decode_error_text<Bind>(names + be16(0)) == "Bind: parameter count at body offset 4 needs 2 bytes, 0 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(65535)) ==
        "Bind: length of parameter 1 at body offset 6 needs 4 bytes, 0 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(2) + be32(0xffffffff)) ==
        "Bind: length of parameter 2 at body offset 10 needs 4 bytes, 0 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(1) + be32(100) + "abc" + be16(0)) ==
        "Bind: value of parameter 1 at body offset 10 needs 100 bytes, 5 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(1) + be32(0x7fffffff)) ==
        "Bind: value of parameter 1 at body offset 10 needs 2147483647 bytes, 0 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(1) + be32(0xfffffffe) + be16(0)) ==
        "Bind: parameter 1 has length -2 at body offset 6 (only -1, NULL, may be negative)");
  CHECK(decode_error_text<Bind>(names + be16(2) + be16(0) + be16(1) + be16(3)) ==
        "Bind: 2 parameter format codes for 3 parameters at body offset 8 (must be 0, 1 or 3)");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(0)) ==
        "Bind: result format count at body offset 6 needs 2 bytes, 0 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(0) + be16(2) + be16(1)) ==
        "Bind: result format codes at body offset 8 needs 4 bytes, 2 left");
  CHECK(decode_error_text<Bind>(names + be16(0) + be16(0) + be16(0) + "x") ==
        "Bind: 1 unexpected byte at body offset 8 after the last field");

  // One format code for every parameter, and NULLs and empty values, are all well-formed.
  Bind b;
  std::string error;
  CHECK(decode(names + be16(1) + be16(1) + be16(3) + be32(0xffffffff) + be32(0) + be32(1) + "x" + be16(0), b, error));
  CHECK(decode(names + be16(2) + be16(0) + be16(0) + be16(2) + be32(0) + be32(0) + be16(0), b, error));
  CHECK(error.empty());
}

TEST_CASE("Execute, Describe and Close bodies are exact", "[postgres]") {
  CHECK(decode_error_text<Execute>(cstr("p1") + be32(0) + "zz") ==
        "Execute: 2 unexpected bytes at body offset 7 after the last field");
  CHECK(decode_error_text<Execute>(cstr("p1") + "\0\0"s) ==
        "Execute: row limit at body offset 3 needs 4 bytes, 2 left");
  CHECK(decode_error_text<Execute>("p1") == "Execute: portal name at body offset 0 has no NUL terminator");
  CHECK(decode_error_text<DescribeOrClose>("") == "Describe: kind at body offset 0 needs 1 byte, 0 left");
  CHECK(decode_error_text<DescribeOrClose>("X\0"s) == "Describe: kind 'X' at body offset 0 is neither 'S' nor 'P'");
  CHECK(decode_error_text<DescribeOrClose>("Pp1\0\0"s) ==
        "Describe: 1 unexpected byte at body offset 4 after the last field");
  DescribeOrClose d;
  std::string error;
  REQUIRE_FALSE(decode("Sstmt", d, error, 'C'));
  CHECK(error == "Close: name at body offset 1 has no NUL terminator");
}

TEST_CASE("a ReadyForQuery or ErrorResponse that breaks the format is refused", "[postgres]") {
  char status = 'I';
  std::string error;
  CHECK_FALSE(ready_status("X", status, error));
  CHECK(error == "ReadyForQuery: transaction status 'X' at body offset 0 is not 'I', 'T' or 'E'");
  CHECK_FALSE(ready_status("", status, error));
  CHECK(error == "ReadyForQuery: transaction status at body offset 0 needs 1 byte, 0 left");
  CHECK_FALSE(ready_status("II", status, error));
  CHECK(error == "ReadyForQuery: 1 unexpected byte at body offset 1 after the last field");
  CHECK(status == 'I');  // untouched on error

  ErrorFields f;
  CHECK_FALSE(decode_error("SERROR\0"s, f, error));
  CHECK(error == "ErrorResponse: field type or final NUL at body offset 7 needs 1 byte, 0 left");
  CHECK_FALSE(decode_error("SERR", f, error));
  CHECK(error == "ErrorResponse: field value at body offset 1 has no NUL terminator");
  CHECK_FALSE(decode_error("Mhi\0\0x"s, f, error, 'N'));
  CHECK(error == "NoticeResponse: 1 unexpected byte at body offset 5 after the last field");
}

TEST_CASE("every truncation of a valid body is refused and no byte flip reads out of bounds", "[postgres]") {
  const std::vector<std::pair<char, std::string>> bodies = {
      {'Q', "SELECT 1\0"s},
      {'P', named_parse().substr(5)},
      {'B', named_bind().substr(5)},
      {'E', cstr("p1") + be32(0)},
      {'D', "Sp1\0"s},
      {'Z', "I"},
      {'e', "SERROR\0VERROR\0C40001\0Mx\0\0"s},
  };
  auto try_decode = [](char type, std::string_view body, std::string& error) {
    Query q;
    Parse p;
    Bind b;
    Execute e;
    DescribeOrClose d;
    ErrorFields f;
    char status;
    switch (type) {
      case 'Q':
        return decode(body, q, error);
      case 'P':
        return decode(body, p, error);
      case 'B':
        return decode(body, b, error);
      case 'E':
        return decode(body, e, error);
      case 'D':
        return decode(body, d, error);
      case 'Z':
        return ready_status(body, status, error);
      default:
        return decode_error(body, f, error);
    }
  };
  for (auto& [type, body] : bodies) {
    INFO("type " << type);
    std::string error;
    REQUIRE(try_decode(type, body, error));
    for (size_t n = 0; n < body.size(); ++n) {
      // A copy of exactly n bytes, so ASan sees any read past it.
      const std::string prefix = body.substr(0, n);
      INFO("prefix of " << n << " bytes");
      error.clear();
      CHECK_FALSE(try_decode(type, prefix, error));
      CHECK_FALSE(error.empty());
    }
    for (size_t i = 0; i < body.size(); ++i) {
      for (unsigned char flip : {0x00, 0xff, 0x80, 0x01}) {
        std::string mutated = body;
        mutated[i] = static_cast<char>(flip);
        error.clear();
        if (!try_decode(type, mutated, error)) CHECK_FALSE(error.empty());
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoders

TEST_CASE("encoders produce the exact bytes and decode back", "[postgres]") {
  std::string out;
  encode_error(out, "ERROR", "40001", "could not serialize access due to concurrent update");
  const std::string body =
      "SERROR\0VERROR\0C40001\0"
      "Mcould not serialize access due to concurrent update\0\0"s;
  CHECK(out == "E"s + be32(static_cast<uint32_t>(4 + body.size())) + body);
  Frame f;
  std::string error;
  REQUIRE(next_frame(out, f, error) == Status::complete);
  CHECK(f.size == out.size());
  ErrorFields e;
  REQUIRE(decode_error(f.body, e, error));
  CHECK(e.severity == "ERROR");
  CHECK(e.sqlstate == "40001");
  CHECK(e.message == "could not serialize access due to concurrent update");

  out.clear();
  encode_ready(out, 'E');
  CHECK(out ==
        "Z\0\0\0\x05"
        "E"s);
  char status = 0;
  REQUIRE(ready_status(std::string_view(out).substr(5), status, error));
  CHECK(status == 'E');

  out.clear();
  encode_command_complete(out, "ROLLBACK");
  CHECK(out == "C\0\0\0\x0dROLLBACK\0"s);

  out.clear();
  encode_query(out, "COMMIT");
  CHECK(out ==
        "Q\0\0\0\x0b"
        "COMMIT\0"s);
  REQUIRE(next_frame(out, f, error) == Status::complete);
  Query q;
  REQUIRE(decode(f.body, q, error));
  CHECK(q.sql == "COMMIT");

  out.clear();
  encode_terminate(out);
  CHECK(out == "X\0\0\0\x04"s);
  CHECK(error.empty());
}

TEST_CASE("encoders append, and cut strings at an embedded NUL so the framing holds", "[postgres]") {
  std::string out = "prefix";
  encode_query(out, "SELECT 1\0; DROP TABLE t"s);
  CHECK(out == "prefixQ\0\0\0\x0dSELECT 1\0"s);

  std::string a, b;
  encode_error(a, "FATAL\0x"s, "57P01", "bye\0bye"s);
  encode_error(b, "FATAL", "57P01", "bye");
  CHECK(a == b);
  const std::vector<Seen> seen = walk(a + b);
  CHECK(seen.size() == 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Statements

TEST_CASE("the unnamed statement and portal follow Parse, Bind and a simple Query", "[postgres]") {
  Statements st;
  CHECK(st.portal_sql("") == nullptr);
  st.parse("", "SELECT 1");
  REQUIRE(st.statement_sql(""));
  CHECK(*st.statement_sql("") == "SELECT 1");
  CHECK(st.portal_sql("") == nullptr);
  st.bind("", "");
  REQUIRE(st.portal_sql(""));
  CHECK(*st.portal_sql("") == "SELECT 1");
  CHECK(st.portal_sql("") == st.statement_sql(""));  // shared, not copied

  // A new Parse replaces the unnamed statement; the portal already bound keeps what it was made from.
  st.parse("", "SELECT 2");
  CHECK(*st.statement_sql("") == "SELECT 2");
  CHECK(*st.portal_sql("") == "SELECT 1");
  st.bind("", "");
  CHECK(*st.portal_sql("") == "SELECT 2");

  st.simple_query();
  CHECK(st.statement_sql("") == nullptr);
  CHECK(st.portal_sql("") == nullptr);
  CHECK(st.named_statements() == 0);
  CHECK(st.bytes() == 0);  // the unnamed ones are not charged
}

TEST_CASE("named statements and portals are replaced, closed and survive a simple Query", "[postgres]") {
  Statements st;
  st.parse("s1", "INSERT INTO t VALUES ($1)");
  st.parse("s2", "UPDATE accounts SET n = n + 1");
  st.bind("p1", "s1");
  st.bind("p2", "s1");
  st.bind("p3", "s2");
  st.bind("", "s2");
  CHECK(*st.portal_sql("p1") == "INSERT INTO t VALUES ($1)");
  CHECK(*st.portal_sql("p3") == "UPDATE accounts SET n = n + 1");
  CHECK(*st.portal_sql("") == "UPDATE accounts SET n = n + 1");
  CHECK(st.named_statements() == 2);
  CHECK(st.named_portals() == 3);

  st.simple_query();  // only the unnamed ones go
  CHECK(st.portal_sql("") == nullptr);
  CHECK(*st.portal_sql("p1") == "INSERT INTO t VALUES ($1)");

  st.close('P', "p2");
  CHECK(st.portal_sql("p2") == nullptr);
  CHECK(st.portal_sql("p1") != nullptr);

  // Closing a statement closes the portals made from it, and no other.
  st.bind("", "s1");
  st.close('S', "s1");
  CHECK(st.statement_sql("s1") == nullptr);
  CHECK(st.portal_sql("p1") == nullptr);
  CHECK(st.portal_sql("") == nullptr);
  CHECK(*st.portal_sql("p3") == "UPDATE accounts SET n = n + 1");
  CHECK(st.named_portals() == 1);
  CHECK(st.bytes() == 2 * std::string("UPDATE accounts SET n = n + 1").size());

  // Re-Parse of a live name (after a DEALLOCATE we did not see) replaces it.
  st.parse("s2", "DELETE FROM t");
  CHECK(*st.statement_sql("s2") == "DELETE FROM t");
  CHECK(*st.portal_sql("p3") == "UPDATE accounts SET n = n + 1");

  // A Bind to an unknown statement leaves the portal unknown, even one that had SQL before.
  st.bind("p3", "nope");
  CHECK(st.portal_sql("p3") == nullptr);
  st.bind("p4", "nope");
  CHECK(st.portal_sql("p4") == nullptr);
  CHECK(st.named_portals() == 0);

  st.close('X', "s2");  // unknown kinds are ignored
  st.close('S', "never-parsed");
  CHECK(st.statement_sql("s2") != nullptr);
  st.close('S', "s2");
  CHECK(st.named_statements() == 0);
  CHECK(st.bytes() == 0);
}

TEST_CASE("statements and portals are bounded in count and bytes; the unnamed ones always work", "[postgres]") {
  Statements st(2, 1000);
  st.parse("s1", "SELECT 1");
  st.parse("s2", "SELECT 2");
  st.parse("s3", "SELECT 3");  // past the bound: not remembered
  CHECK(st.statement_sql("s3") == nullptr);
  CHECK(st.named_statements() == 2);
  st.parse("s1", "SELECT 11");  // replacing a known name is fine at the bound
  CHECK(*st.statement_sql("s1") == "SELECT 11");
  st.close('S', "s2");
  st.parse("s3", "SELECT 3");
  CHECK(*st.statement_sql("s3") == "SELECT 3");

  st.bind("p1", "s1");
  st.bind("p2", "s1");
  st.bind("p3", "s1");
  CHECK(st.portal_sql("p3") == nullptr);
  CHECK(st.named_portals() == 2);
  st.parse("", "SELECT 0");
  st.bind("", "");
  CHECK(*st.portal_sql("") == "SELECT 0");

  Statements small(100, 10);
  small.parse("a", "12345678");
  small.parse("b", "123");  // 8 + 3 > 10
  CHECK(small.statement_sql("b") == nullptr);
  CHECK(small.bytes() == 8);
  small.bind("p", "a");  // a portal is charged its SQL again
  CHECK(small.portal_sql("p") == nullptr);
  small.parse("a", "12345678901");  // a redefinition past the budget forgets the name, never keeps stale SQL
  CHECK(small.statement_sql("a") == nullptr);
  CHECK(small.bytes() == 0);
  small.parse("", std::string(100, 'x'));  // the unnamed statement is not charged
  small.bind("", "");
  CHECK(small.portal_sql("")->size() == 100);
  small.parse("a", "12345");
  small.bind("p", "a");
  CHECK(*small.portal_sql("p") == "12345");
  CHECK(small.bytes() == 10);

  Statements none(0);
  none.parse("s", "SELECT 1");
  none.bind("p", "s");
  CHECK(none.statement_sql("s") == nullptr);
  CHECK(none.portal_sql("p") == nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// QueryMessage

TEST_CASE("a simple Query's message exposes its SQL and copies it only for field_ref", "[postgres]") {
  const std::string user = "alice", database = "shop";
  const std::string wire = "UPDATE accounts SET balance = 0";
  QueryMessage m(std::string_view(wire), user, database, 7);
  CHECK(m.protocol() == faultline::faults::Protocol::postgres);
  CHECK(m.connection() == 7);
  CHECK(m.field("query") == wire);
  CHECK(m.field("message") == "Query");
  CHECK(m.field("user") == "alice");
  CHECK(m.field("database") == "shop");
  CHECK(m.field("connection") == "7");
  CHECK_FALSE(m.field("command"));
  CHECK(m.field_ref("user") == &user);
  CHECK(m.field_ref("database") == &database);
  REQUIRE(m.field_ref("message"));
  CHECK(*m.field_ref("message") == "Query");
  CHECK(m.field_ref("message") == m.field_ref("message"));
  const std::string* q = m.field_ref("query");
  REQUIRE(q);
  CHECK(*q == wire);
  CHECK(q != &wire);
  CHECK(m.field_ref("query") == q);  // made once
  CHECK(m.field_ref("connection") == nullptr);
  CHECK(m.json_field("x") == nullptr);
  CHECK(m.arg_count() == 0);
  CHECK(m.describe().dump() == R"({"message":"Query","query":"UPDATE accounts SET balance = 0"})");

  const QueryMessage empty(std::string_view(), user, database, 1);
  CHECK(empty.field("query") == "");
  CHECK(empty.describe().dump() == R"({"message":"Query","query":""})");
}

TEST_CASE("an Execute carries the SQL behind its portal; other messages have no query", "[postgres]") {
  const std::string user = "app", database = "app";
  Statements st;
  st.parse("s1", "INSERT INTO events VALUES ($1)");
  st.bind("p1", "s1");

  QueryMessage exec("Execute", st.portal_sql("p1"), user, database, 3);
  CHECK(exec.field("query") == "INSERT INTO events VALUES ($1)");
  CHECK(exec.field_ref("query") == st.portal_sql("p1"));  // no copy
  CHECK(exec.field("message") == "Execute");
  CHECK(exec.describe().dump() == R"j({"message":"Execute","query":"INSERT INTO events VALUES ($1)"})j");

  QueryMessage unknown("Execute", st.portal_sql("nope"), user, database, 3);
  CHECK_FALSE(unknown.field("query"));
  CHECK(unknown.field_ref("query") == nullptr);
  CHECK(unknown.describe().dump() == R"({"message":"Execute"})");

  QueryMessage parse(frontend_name('P'), nullptr, user, database, 3);
  CHECK_FALSE(parse.field("query"));
  CHECK(parse.field("message") == "Parse");
  CHECK(parse.describe().dump() == R"({"message":"Parse"})");

  QueryMessage nameless(frontend_name('?'), nullptr, user, database, 3);
  CHECK_FALSE(nameless.field("message"));
  CHECK(nameless.field_ref("message") == nullptr);
  CHECK(nameless.describe().dump() == "{}");
}

TEST_CASE("describe cuts long SQL at 256 bytes with \"...\", never inside a UTF-8 character", "[postgres]") {
  const std::string user = "u", database = "d";
  const std::string exact(256, 'x');
  CHECK(QueryMessage(std::string_view(exact), user, database, 1).describe()["query"] == exact);

  const std::string longer(300, 'x');
  CHECK(QueryMessage(std::string_view(longer), user, database, 1).describe()["query"] == std::string(256, 'x') + "...");

  // "é" is 2 bytes; placed at bytes 255..256 it would be split by a plain cut.
  const std::string utf8 = std::string(255, 'a') + "\xc3\xa9" + std::string(10, 'b');
  const nlohmann::ordered_json d = QueryMessage(std::string_view(utf8), user, database, 1).describe();
  CHECK(d["query"] == std::string(255, 'a') + "...");
  CHECK_NOTHROW(d.dump());

  const std::string sql = std::string(300, 'y');
  QueryMessage exec("Execute", &sql, user, database, 1);
  CHECK(exec.describe()["query"].get<std::string>().size() == 259);
  CHECK(exec.field("query") == sql);  // fields are never cut
}
