// PostgreSQL protocol 3.x framing, decoders and encoders: bounds checked before every read.
#include "proxy/postgres/wire.h"

#include <cstring>

namespace faultline::proxy::postgres {
namespace {

uint32_t be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{u[0]} << 24 | uint32_t{u[1]} << 16 | uint32_t{u[2]} << 8 | uint32_t{u[3]};
}

uint16_t be16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] << 8 | u[1]);
}

void put32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// Lengths are int32 on the wire; a hostile one is reported as the server would read it, negative included.
std::string signed_text(uint32_t v) { return std::to_string(static_cast<int32_t>(v)); }

// A byte or a wire string for an error text: printable ASCII as is, the rest as \xNN, cut so that hostile bytes
// can neither flood nor break a log line.
std::string printable(std::string_view s, size_t max = 64) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string type_text(char type) { return "'" + printable(std::string_view(&type, 1)) + "'"; }

// The NUL-terminated string at the start of s (without the NUL), or npos when s holds no NUL.
size_t cstring_length(std::string_view s) {
  if (s.empty()) return std::string_view::npos;  // memchr wants a valid pointer even for 0 bytes
  const void* nul = std::memchr(s.data(), 0, s.size());
  return nul ? static_cast<size_t>(static_cast<const char*>(nul) - s.data()) : std::string_view::npos;
}

// Reads a message body front to back. Every read checks what is left first; on failure it writes one error,
// "<message>: <field> at body offset N ...", and the decoder returns false. Nothing allocates on success.
class Reader {
 public:
  Reader(std::string_view body, const char* message, std::string& error)
      : body_(body), message_(message), error_(error) {}

  size_t pos() const { return pos_; }
  size_t left() const { return body_.size() - pos_; }

  bool cstring(std::string_view& out, const char* field) {
    const size_t n = cstring_length(body_.substr(pos_));
    if (n == std::string_view::npos)
      return fail(std::string(field) + " at body offset " + std::to_string(pos_) + " has no NUL terminator");
    out = body_.substr(pos_, n);
    pos_ += n + 1;
    return true;
  }

  bool byte(char& out, const char* field) {
    if (!need(1, field)) return false;
    out = body_[pos_++];
    return true;
  }

  bool int16(uint16_t& out, const char* field) {
    if (!need(2, field)) return false;
    out = be16(body_.data() + pos_);
    pos_ += 2;
    return true;
  }

  bool int32(int32_t& out, const char* field, size_t index = 0) {
    if (!need(4, field, index)) return false;
    out = static_cast<int32_t>(be32(body_.data() + pos_));
    pos_ += 4;
    return true;
  }

  // Skips n bytes (n may come from the wire: compared with what is left, never added to the position first).
  bool skip(size_t n, const char* field, size_t index = 0) {
    if (!need(n, field, index)) return false;
    pos_ += n;
    return true;
  }

  // The format is exact: nothing may follow the last field.
  bool end() {
    if (left() == 0) return true;
    return fail(std::to_string(left()) + " unexpected byte" + (left() == 1 ? "" : "s") + " at body offset " +
                std::to_string(pos_) + " after the last field");
  }

  bool fail(const std::string& what) {
    error_ = std::string(message_) + ": " + what;
    return false;
  }

 private:
  // field, or "field N" when index is set (1-based, as users count parameters).
  bool need(size_t n, const char* field, size_t index = 0) {
    if (n <= left()) return true;
    std::string name = field;
    if (index) name += " " + std::to_string(index);
    return fail(name + " at body offset " + std::to_string(pos_) + " needs " + std::to_string(n) + " byte" +
                (n == 1 ? "" : "s") + ", " + std::to_string(left()) + " left");
  }

  std::string_view body_;
  const char* message_;
  std::string& error_;
  size_t pos_ = 0;
};

void put_cstring(std::string& out, std::string_view s) {
  out.append(s.substr(0, cstring_length(s)));  // substr(0, npos) is the whole string
  out.push_back('\0');
}

// Appends type + a length placeholder; finish() writes the length once the body is there.
size_t begin_message(std::string& out, char type) {
  out.push_back(type);
  const size_t at = out.size();
  put32(out, 0);
  return at;
}

void finish_message(std::string& out, size_t at) {
  const auto length = static_cast<uint32_t>(out.size() - at);
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>(length >> (24 - 8 * i));
}

Status parse_params(std::string_view packet, Startup& out, std::string& error) {
  size_t pos = 8;
  for (;;) {
    if (pos >= packet.size()) {
      error = "StartupMessage: missing the final NUL (the packet ends at offset " + std::to_string(packet.size()) + ")";
      return Status::error;
    }
    if (packet[pos] == '\0') break;
    const size_t name_len = cstring_length(packet.substr(pos));
    if (name_len == std::string_view::npos) {
      error = "StartupMessage: parameter name at offset " + std::to_string(pos) + " has no NUL terminator";
      return Status::error;
    }
    const std::string_view name = packet.substr(pos, name_len);
    const size_t value_at = pos + name_len + 1;
    const size_t value_len = cstring_length(packet.substr(value_at));
    if (value_len == std::string_view::npos) {
      error = "StartupMessage: value of parameter '" + printable(name) + "' at offset " + std::to_string(value_at) +
              " has no NUL terminator";
      return Status::error;
    }
    out.params.emplace_back(name, packet.substr(value_at, value_len));
    pos = value_at + value_len + 1;
  }
  if (pos + 1 != packet.size()) {
    const size_t extra = packet.size() - pos - 1;
    error = "StartupMessage: " + std::to_string(extra) + " unexpected byte" + (extra == 1 ? "" : "s") + " at offset " +
            std::to_string(pos + 1) + " after the final NUL";
    return Status::error;
  }
  if (out.user().empty()) {
    error = "StartupMessage: no \"user\" parameter (the server requires one)";
    return Status::error;
  }
  return Status::complete;
}

}  // namespace

std::string Startup::user() const {
  for (auto it = params.rbegin(); it != params.rend(); ++it)
    if (it->first == "user") return it->second;
  return {};
}

std::string Startup::database() const {
  for (auto it = params.rbegin(); it != params.rend(); ++it)
    if (it->first == "database") return it->second.empty() ? user() : it->second;
  return user();
}

Status parse_startup(std::string_view in, Startup& out, std::string& error) {
  if (in.size() < 4) return Status::incomplete;
  const uint32_t length = be32(in.data());
  if (length < 8 || length > kMaxStartup) {
    error =
        "startup packet length " + signed_text(length) + " at offset 0 is outside 8.." + std::to_string(kMaxStartup);
    // PostgreSQL 17's sslnegotiation=direct opens with a TLS record, whose header reads as a huge length.
    if (in[0] == '\x16' && in[1] == '\x03') error += " (this looks like a TLS handshake: sslnegotiation=direct?)";
    return Status::error;
  }
  if (in.size() < 8) return Status::incomplete;
  const uint32_t code = be32(in.data() + 4);
  Startup s;
  s.size = length;
  switch (code) {
    case kSslRequestCode:
    case kGssEncRequestCode: {
      const char* name = code == kSslRequestCode ? "SSLRequest" : "GSSENCRequest";
      if (length != 8) {
        error = std::string(name) + " length " + std::to_string(length) + " at offset 0 is not 8";
        return Status::error;
      }
      s.kind = code == kSslRequestCode ? StartupKind::ssl_request : StartupKind::gssenc_request;
      break;
    }
    case kCancelRequestCode:
      if (length < kMinCancelRequest || length > kMaxCancelRequest) {
        error = "CancelRequest length " + std::to_string(length) + " at offset 0 is outside " +
                std::to_string(kMinCancelRequest) + ".." + std::to_string(kMaxCancelRequest);
        return Status::error;
      }
      s.kind = StartupKind::cancel_request;
      break;
    default:
      if (code >> 16 != 3) {
        error = "unsupported frontend protocol " + std::to_string(code >> 16) + "." + std::to_string(code & 0xffff) +
                " at offset 4 (3.x is supported)";
        return Status::error;
      }
      s.kind = StartupKind::startup;
      s.protocol = code;
      break;
  }
  if (in.size() < length) return Status::incomplete;
  if (s.kind == StartupKind::startup) {
    const Status status = parse_params(in.substr(0, length), s, error);
    if (status != Status::complete) return status;
  }
  out = std::move(s);
  return Status::complete;
}

Status next_frame(std::string_view in, Frame& out, std::string& error, size_t max) {
  if (in.size() < 5) return Status::incomplete;
  const auto length = static_cast<int32_t>(be32(in.data() + 1));
  if (length < 4 || static_cast<size_t>(length) > max) {
    error = "message type " + type_text(in[0]) + ": length " + std::to_string(length) + " at offset 1 is " +
            (length < 4 ? "below 4" : "above the limit " + std::to_string(max));
    return Status::error;
  }
  const size_t size = static_cast<size_t>(length) + 1;
  if (in.size() < size) return Status::incomplete;
  out.type = in[0];
  out.size = size;
  out.body = in.substr(5, length - 4);
  return Status::complete;
}

const char* frontend_name(char type) {
  switch (type) {
    case 'Q':
      return "Query";
    case 'P':
      return "Parse";
    case 'B':
      return "Bind";
    case 'E':
      return "Execute";
    case 'D':
      return "Describe";
    case 'C':
      return "Close";
    case 'S':
      return "Sync";
    case 'H':
      return "Flush";
    case 'X':
      return "Terminate";
    case 'd':
      return "CopyData";
    case 'c':
      return "CopyDone";
    case 'f':
      return "CopyFail";
    case 'F':
      return "FunctionCall";
    case 'p':
      return "PasswordMessage";
    default:
      return nullptr;
  }
}

const char* backend_name(char type) {
  switch (type) {
    case 'R':
      return "Authentication";
    case 'K':
      return "BackendKeyData";
    case 'S':
      return "ParameterStatus";
    case 'Z':
      return "ReadyForQuery";
    case 'T':
      return "RowDescription";
    case 'D':
      return "DataRow";
    case 'C':
      return "CommandComplete";
    case 'I':
      return "EmptyQueryResponse";
    case 'E':
      return "ErrorResponse";
    case 'N':
      return "NoticeResponse";
    case 'A':
      return "NotificationResponse";
    case '1':
      return "ParseComplete";
    case '2':
      return "BindComplete";
    case '3':
      return "CloseComplete";
    case 'n':
      return "NoData";
    case 's':
      return "PortalSuspended";
    case 't':
      return "ParameterDescription";
    case 'G':
      return "CopyInResponse";
    case 'H':
      return "CopyOutResponse";
    case 'W':
      return "CopyBothResponse";
    case 'd':
      return "CopyData";
    case 'c':
      return "CopyDone";
    case 'V':
      return "FunctionCallResponse";
    case 'v':
      return "NegotiateProtocolVersion";
    default:
      return nullptr;
  }
}

bool backend_async(char type) { return type == 'N' || type == 'A' || type == 'S'; }

bool decode(std::string_view body, Query& out, std::string& error) {
  Reader r(body, "Query", error);
  Query q;
  if (!r.cstring(q.sql, "query string") || !r.end()) return false;
  out = q;
  return true;
}

bool decode(std::string_view body, Parse& out, std::string& error) {
  Reader r(body, "Parse", error);
  Parse p;
  if (!r.cstring(p.statement, "statement name") || !r.cstring(p.sql, "query string") ||
      !r.int16(p.param_types, "parameter type count") || !r.skip(size_t{p.param_types} * 4, "parameter type OIDs") ||
      !r.end())
    return false;
  out = p;
  return true;
}

bool decode(std::string_view body, Bind& out, std::string& error) {
  Reader r(body, "Bind", error);
  Bind b;
  uint16_t formats = 0;
  if (!r.cstring(b.portal, "portal name") || !r.cstring(b.statement, "statement name") ||
      !r.int16(formats, "parameter format count") || !r.skip(size_t{formats} * 2, "parameter format codes"))
    return false;
  const size_t params_at = r.pos();
  uint16_t params = 0;
  if (!r.int16(params, "parameter count")) return false;
  if (formats > 1 && formats != params)
    return r.fail(std::to_string(formats) + " parameter format codes for " + std::to_string(params) +
                  " parameters at body offset " + std::to_string(params_at) + " (must be 0, 1 or " +
                  std::to_string(params) + ")");
  for (size_t i = 1; i <= params; ++i) {
    const size_t at = r.pos();
    int32_t length = 0;
    if (!r.int32(length, "length of parameter", i)) return false;
    if (length == -1) continue;  // NULL
    if (length < 0)
      return r.fail("parameter " + std::to_string(i) + " has length " + std::to_string(length) + " at body offset " +
                    std::to_string(at) + " (only -1, NULL, may be negative)");
    if (!r.skip(static_cast<size_t>(length), "value of parameter", i)) return false;
  }
  uint16_t results = 0;
  if (!r.int16(results, "result format count") || !r.skip(size_t{results} * 2, "result format codes") || !r.end())
    return false;
  out = b;
  return true;
}

bool decode(std::string_view body, Execute& out, std::string& error) {
  Reader r(body, "Execute", error);
  Execute e;
  if (!r.cstring(e.portal, "portal name") || !r.int32(e.max_rows, "row limit") || !r.end()) return false;
  out = e;
  return true;
}

bool decode(std::string_view body, DescribeOrClose& out, std::string& error, char type) {
  Reader r(body, type == 'C' ? "Close" : "Describe", error);
  DescribeOrClose d;
  if (!r.byte(d.kind, "kind")) return false;
  if (d.kind != 'S' && d.kind != 'P')
    return r.fail("kind " + type_text(d.kind) + " at body offset 0 is neither 'S' nor 'P'");
  if (!r.cstring(d.name, "name") || !r.end()) return false;
  out = d;
  return true;
}

bool ready_status(std::string_view body, char& status, std::string& error) {
  Reader r(body, "ReadyForQuery", error);
  char s = 0;
  if (!r.byte(s, "transaction status")) return false;
  if (s != 'I' && s != 'T' && s != 'E')
    return r.fail("transaction status " + type_text(s) + " at body offset 0 is not 'I', 'T' or 'E'");
  if (!r.end()) return false;
  status = s;
  return true;
}

bool decode_error(std::string_view body, ErrorFields& out, std::string& error, char type) {
  Reader r(body, type == 'N' ? "NoticeResponse" : "ErrorResponse", error);
  std::string_view severity_s, severity_v, sqlstate, message;
  for (;;) {
    char code = 0;
    if (!r.byte(code, "field type or final NUL")) return false;
    if (code == '\0') break;
    std::string_view value;
    if (!r.cstring(value, "field value")) return false;
    switch (code) {
      case 'S':
        severity_s = value;
        break;
      case 'V':
        severity_v = value;
        break;
      case 'C':
        sqlstate = value;
        break;
      case 'M':
        message = value;
        break;
      default:
        break;  // detail, hint, position, ...: not needed, and new codes may come
    }
  }
  if (!r.end()) return false;
  out.severity = severity_v.empty() ? severity_s : severity_v;
  out.sqlstate = sqlstate;
  out.message = message;
  return true;
}

void encode_error(std::string& out, std::string_view severity, std::string_view sqlstate, std::string_view message) {
  const size_t at = begin_message(out, 'E');
  out.push_back('S');
  put_cstring(out, severity);
  out.push_back('V');
  put_cstring(out, severity);
  out.push_back('C');
  put_cstring(out, sqlstate);
  out.push_back('M');
  put_cstring(out, message);
  out.push_back('\0');
  finish_message(out, at);
}

void encode_ready(std::string& out, char status) {
  out.push_back('Z');
  put32(out, 5);
  out.push_back(status);
}

void encode_command_complete(std::string& out, std::string_view tag) {
  const size_t at = begin_message(out, 'C');
  put_cstring(out, tag);
  finish_message(out, at);
}

void encode_query(std::string& out, std::string_view sql) {
  const size_t at = begin_message(out, 'Q');
  put_cstring(out, sql);
  finish_message(out, at);
}

void encode_terminate(std::string& out) {
  out.push_back('X');
  put32(out, 4);
}

}  // namespace faultline::proxy::postgres
