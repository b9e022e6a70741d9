// Incremental HTTP/1.x request and response parsers on llhttp: bytes in, events with exact raw byte ranges out.
//
// The contract the proxy relies on (unit-tested for every split of every message):
// - feed(bytes, out) appends events and returns how many bytes it consumed. The raw ranges of the events it
//   appended tile exactly [0, consumed): concatenated they reproduce the consumed input, so untouched bytes
//   can be forwarded as they came.
// - Bytes not consumed must be passed again, first, in the next call (with whatever arrived since). That
//   happens in two cases: after an `end` (or `upgrade`) event the parser stops so the caller can act before a
//   pipelined next message; and a head that is still incomplete is not consumed (feed returns 0, no event),
//   so the head is always whole and contiguous in the caller's buffer when its `head` event comes. The
//   parser remembers how much of that head it has parsed already and does not parse it twice.
// - A head event is followed by body events (decoded bytes in `data`, a sub-range of the raw range; chunk
//   framing is raw-only) and one `end`; a body event may carry no data when it only covers framing.
// - After a message that is not keep-alive (Connection: close, HTTP/1.0) any further byte is an error
//   ("Data after `Connection: close`"): llhttp would drop such bytes silently.
// - After an error event the parser is dead: every later feed returns one error event covering its bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/head.h"

namespace faultline::proxy::http {

enum class EventKind { head, body, end, error, upgrade };

struct Event {
  EventKind kind;
  size_t raw_begin = 0;  // range in the buffer passed to this feed() call
  size_t raw_end = 0;
  // body: decoded body bytes, inside the raw range; upgrade: the tunnel bytes (empty for the event that
  // announces the upgrade); error: the reason; head, end: empty.
  std::string_view data;

  size_t raw_size() const { return raw_end - raw_begin; }
};

const char* to_string(EventKind kind);

enum class ErrorKind {
  none,
  malformed,                 // llhttp rejected the bytes (the reason is llhttp's)
  header_too_large,          // the head (or the trailers) exceeded Limits::max_head_bytes
  too_many_headers,          // more than Limits::max_headers header lines
  content_length_too_large,  // Content-Length above 2^53
  closed_mid_message,        // feed_eof() while a message was incomplete
};

struct ErrorInfo {
  ErrorKind kind = ErrorKind::none;
  int status = 0;      // what the proxy answers: 400 or 431 for requests, 502 for responses
  std::string reason;  // requests: e.g. "Invalid method encountered"; responses: "upstream sent malformed ..."
  explicit operator bool() const { return kind != ErrorKind::none; }
};

struct Limits {
  size_t max_head_bytes = 64 * 1024;  // request/status line + headers + final CRLF; also bounds trailers
  size_t max_headers = 100;
};

class ParserCore;

class RequestParser {
 public:
  explicit RequestParser(Limits limits = {});
  ~RequestParser();
  RequestParser(RequestParser&&) noexcept;
  RequestParser& operator=(RequestParser&&) noexcept;

  size_t feed(std::string_view bytes, std::vector<Event>& out);
  // The client closed its side. Between requests nothing happens; in the middle of one an error event
  // (closed_mid_message, "client closed mid-request").
  void feed_eof(std::vector<Event>& out);

  // After an `upgrade` event: the upstream refused it (anything but 101, or a non-2xx to CONNECT), so the
  // client's next bytes are HTTP again. Only valid before any tunnel bytes were fed.
  void cancel_upgrade();

  const RequestHead& head() const;  // the current (or last) message's head; valid from its head event on
  const Headers& trailers() const;  // the last chunked body's trailers
  const ErrorInfo& error() const;   // sticky once an error event was emitted
  bool in_tunnel() const;           // an upgrade event was emitted: feed now returns upgrade events only
  bool idle() const;                // between messages (or after the last), nothing of the next one seen

 private:
  std::unique_ptr<ParserCore> core_;
};

class ResponseParser {
 public:
  explicit ResponseParser(Limits limits = {});
  ~ResponseParser();
  ResponseParser(ResponseParser&&) noexcept;
  ResponseParser& operator=(ResponseParser&&) noexcept;

  // Queues the method of a request sent upstream; each final (non-1xx, or 101) response takes the oldest.
  // HEAD: no body whatever the headers say; CONNECT: a 2xx is a tunnel. Without a queued method a response
  // is read as one to GET.
  void expect_response_to(std::string_view request_method);

  size_t feed(std::string_view bytes, std::vector<Event>& out);
  // The upstream closed: ends a body delimited by EOF (an `end` event with an empty raw range), or, in the
  // middle of any other message, an error event ("upstream closed mid-response").
  void feed_eof(std::vector<Event>& out);

  const ResponseHead& head() const;
  const Headers& trailers() const;
  const ErrorInfo& error() const;
  bool in_tunnel() const;
  bool idle() const;

 private:
  std::unique_ptr<ParserCore> core_;
};

}  // namespace faultline::proxy::http
