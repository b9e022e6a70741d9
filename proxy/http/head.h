// Parsed HTTP/1.x message heads, header lookup, and re-serialising a (modified) request head.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace faultline::proxy::http {

struct Header {
  std::string name;   // as on the wire
  std::string value;  // without surrounding whitespace; obs-fold replaced by a space
};

using Headers = std::vector<Header>;

// Case-insensitive ASCII comparison, as header names and methods in rules want.
bool iequals(std::string_view a, std::string_view b);

// The first header named `name` (case-insensitive), or nothing.
std::optional<std::string_view> find_header(const Headers& headers, std::string_view name);

// Replaces every occurrence of `name` (case-insensitive) by one `name: value` at the place of the first, or
// appends it when there is none.
void set_header(Headers& headers, std::string_view name, std::string_view value);
void append_header(Headers& headers, std::string_view name, std::string_view value);
// Removes every occurrence; returns how many there were.
size_t remove_header(Headers& headers, std::string_view name);

// Decodes %XX escapes and, as in form encoding, '+' as a space; a malformed escape is kept as written.
std::string percent_decode(std::string_view s);

struct RequestHead {
  std::string method;
  std::string target;  // as on the wire, e.g. "/v1/chat/completions?x=1"
  int version_major = 1;
  int version_minor = 1;
  Headers headers;

  bool keep_alive = true;        // llhttp_should_keep_alive
  bool upgrade = false;          // Upgrade + Connection: upgrade, or CONNECT: the bytes after it are a tunnel
  bool expect_continue = false;  // Expect: 100-continue
  bool chunked = false;
  std::optional<uint64_t> content_length;

  // The target without query and fragment, and without scheme://authority for absolute-form; a CONNECT
  // authority ("host:443") or "*" is returned as it is.
  std::string path() const;
  // Percent-decoded query parameters in order; a parameter without '=' has an empty value.
  std::vector<std::pair<std::string, std::string>> query() const;
  // The authority of an absolute-form target (or of a CONNECT), else the Host header.
  std::optional<std::string> host() const;
  std::optional<std::string_view> header(std::string_view name) const { return find_header(headers, name); }
};

struct ResponseHead {
  int status = 0;
  std::string reason;
  int version_major = 1;
  int version_minor = 1;
  Headers headers;

  bool keep_alive = true;
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool event_stream = false;    // Content-Type: text/event-stream
  bool upgrade = false;         // 101, or 2xx to CONNECT: the bytes after it are a tunnel
  bool body_until_eof = false;  // no length: the body ends when the upstream closes
  bool no_body = false;         // HEAD, 1xx, 204, 304 (or a tunnel): a Content-Length here is not a body

  std::optional<std::string_view> header(std::string_view name) const { return find_header(headers, name); }
};

// "METHOD target HTTP/x.y\r\n" + "Name: value\r\n"... + "\r\n". Byte-identical to a head the parser accepted
// when it was written canonically ("Name: value\r\n", CRLF line ends).
std::string serialize_request_head(const RequestHead& head);

// What a proxy changes in a request head on its way upstream, written without copying the head.
struct ForwardEdits {
  std::string_view host;    // non-empty: the (first) Host header's value becomes this, or it is added
  std::string_view client;  // non-empty: appended to X-Forwarded-For (", client"), or the header is added
  bool drop_expect = false; // remove Expect (the proxy answered 100 Continue itself)
};
std::string serialize_forwarded_head(const RequestHead& head, const ForwardEdits& edits);

}  // namespace faultline::proxy::http
