// HTTP/1.x parsers on llhttp: pauses at head end and message end give exact raw offsets for every event.
#include "proxy/http/codec.h"

#include <llhttp.h>

#include <algorithm>
#include <deque>

namespace faultline::proxy::http {
namespace {

constexpr uint64_t kMaxContentLength = uint64_t{1} << 53;

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// llhttp hands over obs-fold continuation lines inside the value; a proxy must replace them by a space
// (RFC 9112 5.2) so that the head it re-serialises cannot carry a bare line break.
void normalize_value(std::string& value) {
  for (char& c : value) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  size_t end = value.size();
  while (end > 0 && is_ows(value[end - 1])) --end;
  size_t begin = 0;
  while (begin < end && is_ows(value[begin])) ++begin;
  value = value.substr(begin, end - begin);
}

bool media_type_is(std::string_view content_type, std::string_view type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && is_ows(t.back())) t.remove_suffix(1);
  while (!t.empty() && is_ows(t.front())) t.remove_prefix(1);
  return iequals(t, type);
}

}  // namespace

const char* to_string(EventKind kind) {
  switch (kind) {
    case EventKind::head:
      return "head";
    case EventKind::body:
      return "body";
    case EventKind::end:
      return "end";
    case EventKind::error:
      return "error";
    case EventKind::upgrade:
      return "upgrade";
  }
  return "?";
}

// One llhttp parser plus the bookkeeping that turns its callbacks into events with raw ranges. Lives behind
// a unique_ptr: llhttp keeps a pointer to it (parser_.data), so its address must not change.
class ParserCore {
 public:
  ParserCore(llhttp_type_t type, Limits limits) : limits_(limits), request_(type == HTTP_REQUEST) {
    llhttp_settings_init(&settings_);
    settings_.on_message_begin = &ParserCore::on_message_begin;
    settings_.on_method = &ParserCore::on_method;
    settings_.on_url = &ParserCore::on_url;
    settings_.on_status = &ParserCore::on_status;
    settings_.on_header_field = &ParserCore::on_header_field;
    settings_.on_header_field_complete = &ParserCore::on_header_field_complete;
    settings_.on_header_value = &ParserCore::on_header_value;
    settings_.on_header_value_complete = &ParserCore::on_header_value_complete;
    settings_.on_headers_complete = &ParserCore::on_headers_complete;
    settings_.on_body = &ParserCore::on_body;
    settings_.on_message_complete = &ParserCore::on_message_complete;
    llhttp_init(&parser_, type, &settings_);
    parser_.data = this;
    // We decide ourselves what follows a non-keep-alive message (see State::closed); llhttp's loose mode
    // would drop those bytes silently, and would also drop a final response after an HTTP/1.0 interim one.
    llhttp_set_lenient_keep_alive(&parser_, 1);
  }
  ParserCore(const ParserCore&) = delete;
  ParserCore& operator=(const ParserCore&) = delete;

  size_t feed(std::string_view bytes, std::vector<Event>& out);
  void feed_eof(std::vector<Event>& out);

  void expect_response_to(std::string_view method) { methods_.emplace_back(method); }
  void cancel_upgrade() {
    if (state_ != State::tunnel || tunnel_bytes_seen_) return;
    // llhttp sits paused before its own "Pause on CONNECT/Upgrade"; feed() resumes both and goes on with HTTP.
    state_ = State::head;
    head_parsed_ = 0;
  }

  const RequestHead& request() const { return request_head_; }
  const ResponseHead& response() const { return response_head_; }
  const Headers& trailers() const { return trailers_; }
  const ErrorInfo& error() const { return error_; }
  bool in_tunnel() const { return state_ == State::tunnel; }
  bool idle() const { return (state_ == State::head && head_parsed_ == 0) || state_ == State::closed; }

 private:
  // head: waiting for (the rest of) a head, which always starts at offset 0 of a feed; body: after the
  // head event until end; tunnel: after an upgrade; closed: after a message that was not keep-alive;
  // dead: after an error.
  enum class State { head, body, tunnel, closed, dead };
  enum class Pause { none, head, end };

  static ParserCore& self(llhttp_t* p) { return *static_cast<ParserCore*>(p->data); }

  void emit(EventKind kind, size_t begin, size_t end, std::string_view data = {}) {
    out_->push_back(Event{kind, begin, end, data});
    cursor_ = end;
  }

  // Records the first error; a callback then returns -1 so that llhttp stops.
  int fail(ErrorKind kind, std::string_view reason) {
    if (error_) return -1;
    error_.kind = kind;
    if (request_) {
      error_.status = (kind == ErrorKind::header_too_large || kind == ErrorKind::too_many_headers) ? 431 : 400;
      error_.reason = std::string(reason);
    } else {
      error_.status = 502;
      error_.reason = kind == ErrorKind::closed_mid_message ? std::string(reason)
                                                            : "upstream sent malformed HTTP: " + std::string(reason);
    }
    return -1;
  }

  size_t die(size_t size) {
    state_ = State::dead;
    emit(EventKind::error, cursor_, size, error_.reason);
    return size;
  }

  Headers& current_headers() {
    return in_trailers_ ? trailers_ : (request_ ? request_head_.headers : response_head_.headers);
  }

  // Trailers arrive after the head, so the head cap does not bound them; this does.
  int count_trailer_bytes(size_t n) {
    if (!in_trailers_) return 0;
    trailer_bytes_ += n;
    if (trailer_bytes_ > limits_.max_head_bytes) return fail(ErrorKind::header_too_large, "trailers too large");
    return 0;
  }

  static int on_message_begin(llhttp_t* p);
  static int on_method(llhttp_t* p, const char* at, size_t len);
  static int on_url(llhttp_t* p, const char* at, size_t len);
  static int on_status(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_field_complete(llhttp_t* p);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);

  // Connection: close, or HTTP/1.0 without keep-alive; an interim 1xx never ends the connection.
  bool last_message_closes() const {
    if (request_) return !request_head_.keep_alive;
    return response_head_.status >= 200 && !response_head_.keep_alive;
  }

  int complete_request_head();
  int complete_response_head();

  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  Limits limits_;
  bool request_;

  State state_ = State::head;
  size_t head_parsed_ = 0;  // head bytes already given to llhttp; the caller passes them again
  bool tunnel_bytes_seen_ = false;

  // Valid during one feed(): where event offsets are measured from, and where they go.
  const char* base_ = nullptr;
  std::vector<Event>* out_ = nullptr;
  size_t cursor_ = 0;  // every byte before it belongs to an emitted event
  Pause pause_ = Pause::none;
  bool upgrade_after_end_ = false;

  RequestHead request_head_;
  ResponseHead response_head_;
  Headers trailers_;
  std::string field_;
  bool in_trailers_ = false;
  size_t trailer_bytes_ = 0;
  std::deque<std::string> methods_;
  ErrorInfo error_;
};

int ParserCore::on_message_begin(llhttp_t* p) {
  ParserCore& s = self(p);
  s.request_head_ = RequestHead{};
  s.response_head_ = ResponseHead{};
  s.trailers_.clear();
  s.field_.clear();
  s.in_trailers_ = false;
  s.trailer_bytes_ = 0;
  return 0;
}

int ParserCore::on_method(llhttp_t* p, const char* at, size_t len) {
  self(p).request_head_.method.append(at, len);
  return 0;
}

int ParserCore::on_url(llhttp_t* p, const char* at, size_t len) {
  self(p).request_head_.target.append(at, len);
  return 0;
}

int ParserCore::on_status(llhttp_t* p, const char* at, size_t len) {
  self(p).response_head_.reason.append(at, len);
  return 0;
}

int ParserCore::on_header_field(llhttp_t* p, const char* at, size_t len) {
  ParserCore& s = self(p);
  s.field_.append(at, len);
  return s.count_trailer_bytes(len);
}

int ParserCore::on_header_field_complete(llhttp_t* p) {
  ParserCore& s = self(p);
  Headers& headers = s.current_headers();
  if (headers.size() >= s.limits_.max_headers) return s.fail(ErrorKind::too_many_headers, "too many headers");
  headers.push_back(Header{std::move(s.field_), {}});
  s.field_.clear();
  return 0;
}

int ParserCore::on_header_value(llhttp_t* p, const char* at, size_t len) {
  ParserCore& s = self(p);
  Headers& headers = s.current_headers();
  if (headers.empty()) return 0;  // unreachable: llhttp completes a field before any value
  headers.back().value.append(at, len);
  return s.count_trailer_bytes(len);
}

int ParserCore::on_header_value_complete(llhttp_t* p) {
  Headers& headers = self(p).current_headers();
  if (!headers.empty()) normalize_value(headers.back().value);
  return 0;
}

int ParserCore::on_headers_complete(llhttp_t* p) {
  ParserCore& s = self(p);
  int rc = s.request_ ? s.complete_request_head() : s.complete_response_head();
  if (rc != 0) return rc;
  s.in_trailers_ = true;
  // Pausing makes llhttp_execute return here, with llhttp_get_error_pos just past the head's final LF.
  s.pause_ = Pause::head;
  return HPE_PAUSED;
}

int ParserCore::complete_request_head() {
  RequestHead& h = request_head_;
  h.version_major = parser_.http_major;
  h.version_minor = parser_.http_minor;
  h.keep_alive = llhttp_should_keep_alive(&parser_) != 0;
  h.upgrade = parser_.upgrade != 0;
  h.chunked = (parser_.flags & F_CHUNKED) != 0;
  if (parser_.flags & F_CONTENT_LENGTH) h.content_length = parser_.content_length;
  auto expect = h.header("expect");
  h.expect_continue = expect && iequals(*expect, "100-continue");
  if (h.content_length && *h.content_length > kMaxContentLength) {
    return fail(ErrorKind::content_length_too_large, "Content-Length too large");
  }
  return 0;
}

int ParserCore::complete_response_head() {
  ResponseHead& h = response_head_;
  h.status = parser_.status_code;
  h.version_major = parser_.http_major;
  h.version_minor = parser_.http_minor;
  // 1xx other than 101 are interim: the request still waits for its final response.
  bool final_response = h.status >= 200 || h.status == 101;
  std::string method = "GET";
  if (final_response && !methods_.empty()) {
    method = std::move(methods_.front());
    methods_.pop_front();
  }
  bool tunnel = h.status == 101 || (iequals(method, "CONNECT") && h.status / 100 == 2);
  // What llhttp does itself when on_headers_complete returns 1 (no body) or 2 (upgrade); we set the same
  // bits by hand because our return value is already spent on pausing.
  if (tunnel) {
    parser_.upgrade = 1;
    parser_.flags |= F_SKIPBODY;
  } else {
    parser_.upgrade = 0;
    if (iequals(method, "HEAD") || h.status / 100 == 1 || h.status == 204 || h.status == 304) {
      parser_.flags |= F_SKIPBODY;
    }
  }
  h.upgrade = tunnel;
  h.no_body = (parser_.flags & F_SKIPBODY) != 0;
  h.keep_alive = llhttp_should_keep_alive(&parser_) != 0;
  h.body_until_eof = llhttp_message_needs_eof(&parser_) != 0;
  h.chunked = (parser_.flags & F_CHUNKED) != 0;
  if (parser_.flags & F_CONTENT_LENGTH) h.content_length = parser_.content_length;
  auto type = h.header("content-type");
  h.event_stream = type && media_type_is(*type, "text/event-stream");
  if (!h.no_body && h.content_length && *h.content_length > kMaxContentLength) {
    return fail(ErrorKind::content_length_too_large, "Content-Length too large");
  }
  return 0;
}

int ParserCore::on_body(llhttp_t* p, const char* at, size_t len) {
  ParserCore& s = self(p);
  size_t end = static_cast<size_t>(at - s.base_) + len;
  // Chunk framing before these bytes rides along in the raw range of the same event.
  s.emit(EventKind::body, s.cursor_, end, std::string_view(at, len));
  return 0;
}

int ParserCore::on_message_complete(llhttp_t* p) {
  ParserCore& s = self(p);
  s.upgrade_after_end_ = p->upgrade != 0;
  s.pause_ = Pause::end;
  return HPE_PAUSED;
}

size_t ParserCore::feed(std::string_view bytes, std::vector<Event>& out) {
  const size_t size = bytes.size();
  if (state_ == State::dead) {
    if (size > 0) out.push_back(Event{EventKind::error, 0, size, error_.reason});
    return size;
  }
  if (state_ == State::closed) {
    // llhttp would silently swallow these; nobody may act on bytes the peer's own framing says are not there.
    if (size == 0) return 0;
    base_ = bytes.data();
    out_ = &out;
    cursor_ = 0;
    fail(ErrorKind::malformed, "Data after `Connection: close`");
    return die(size);
  }
  if (state_ == State::tunnel) {
    if (size > 0) {
      tunnel_bytes_seen_ = true;
      out.push_back(Event{EventKind::upgrade, 0, size, bytes});
    }
    return size;
  }
  size_t pos = 0;
  if (state_ == State::head) {
    if (size <= head_parsed_) return 0;  // nothing new behind the partial head we have seen
    pos = head_parsed_;
  }
  base_ = bytes.data();
  out_ = &out;
  cursor_ = 0;

  for (;;) {
    // Our own pauses (head end, message end) and llhttp's upgrade pause after cancel_upgrade().
    llhttp_errno_t prior = llhttp_get_errno(&parser_);
    if (prior == HPE_PAUSED) llhttp_resume(&parser_);
    if (prior == HPE_PAUSED_UPGRADE) llhttp_resume_after_upgrade(&parser_);

    // Capping the input keeps a head from growing past the limit, whatever the sizes of the reads.
    size_t end = state_ == State::head ? std::min(size, limits_.max_head_bytes) : size;
    pause_ = Pause::none;
    llhttp_errno_t err = llhttp_execute(&parser_, base_ + pos, end - pos);

    if (err == HPE_OK) {
      if (state_ == State::head) {
        if (end < size) {
          fail(ErrorKind::header_too_large, "header too large");
          return die(size);
        }
        head_parsed_ = end;
        return 0;
      }
      if (cursor_ < end) emit(EventKind::body, cursor_, end, std::string_view(base_ + end, 0));  // framing only
      return end;
    }

    size_t at = static_cast<size_t>(llhttp_get_error_pos(&parser_) - base_);
    if (err == HPE_PAUSED && pause_ == Pause::head) {
      emit(EventKind::head, cursor_, at);
      state_ = State::body;
      head_parsed_ = 0;
      pos = at;
      continue;
    }
    if (err == HPE_PAUSED && pause_ == Pause::end) {
      emit(EventKind::end, cursor_, at);
      state_ = last_message_closes() ? State::closed : State::head;
      head_parsed_ = 0;
      if (upgrade_after_end_) {
        emit(EventKind::upgrade, at, at);
        state_ = State::tunnel;
        tunnel_bytes_seen_ = false;
      }
      return at;
    }
    if (err == HPE_PAUSED_UPGRADE && at == pos && prior != HPE_PAUSED_UPGRADE) {
      pos = at;  // llhttp's own upgrade pause, reached after cancel_upgrade(): resume it at the loop's top
      continue;
    }
    if (err == HPE_PAUSED_H2_UPGRADE) {
      fail(ErrorKind::malformed, "HTTP/2 connection preface; only HTTP/1.x is spoken here");
    } else if (!error_) {
      const char* reason = llhttp_get_error_reason(&parser_);
      fail(ErrorKind::malformed, reason ? reason : llhttp_errno_name(err));
    }
    return die(size);
  }
}

void ParserCore::feed_eof(std::vector<Event>& out) {
  out_ = &out;
  cursor_ = 0;
  base_ = nullptr;
  const char* closed = request_ ? "client closed mid-request" : "upstream closed mid-response";
  switch (state_) {
    case State::dead:
    case State::tunnel:
    case State::closed:
      return;
    case State::head:
      if (head_parsed_ == 0) return;  // a clean close between messages
      fail(ErrorKind::closed_mid_message, closed);
      die(0);
      return;
    case State::body:
      if (llhttp_message_needs_eof(&parser_)) {
        pause_ = Pause::none;
        llhttp_finish(&parser_);  // calls on_message_complete for a body delimited by EOF
        if (pause_ == Pause::end) {
          emit(EventKind::end, 0, 0);
          state_ = State::closed;
          head_parsed_ = 0;
          return;
        }
      }
      fail(ErrorKind::closed_mid_message, closed);
      die(0);
      return;
  }
}

RequestParser::RequestParser(Limits limits) : core_(std::make_unique<ParserCore>(HTTP_REQUEST, limits)) {}
RequestParser::~RequestParser() = default;
RequestParser::RequestParser(RequestParser&&) noexcept = default;
RequestParser& RequestParser::operator=(RequestParser&&) noexcept = default;
size_t RequestParser::feed(std::string_view bytes, std::vector<Event>& out) { return core_->feed(bytes, out); }
void RequestParser::feed_eof(std::vector<Event>& out) { core_->feed_eof(out); }
void RequestParser::cancel_upgrade() { core_->cancel_upgrade(); }
const RequestHead& RequestParser::head() const { return core_->request(); }
const Headers& RequestParser::trailers() const { return core_->trailers(); }
const ErrorInfo& RequestParser::error() const { return core_->error(); }
bool RequestParser::in_tunnel() const { return core_->in_tunnel(); }
bool RequestParser::idle() const { return core_->idle(); }

ResponseParser::ResponseParser(Limits limits) : core_(std::make_unique<ParserCore>(HTTP_RESPONSE, limits)) {}
ResponseParser::~ResponseParser() = default;
ResponseParser::ResponseParser(ResponseParser&&) noexcept = default;
ResponseParser& ResponseParser::operator=(ResponseParser&&) noexcept = default;
void ResponseParser::expect_response_to(std::string_view request_method) { core_->expect_response_to(request_method); }
size_t ResponseParser::feed(std::string_view bytes, std::vector<Event>& out) { return core_->feed(bytes, out); }
void ResponseParser::feed_eof(std::vector<Event>& out) { core_->feed_eof(out); }
const ResponseHead& ResponseParser::head() const { return core_->response(); }
const Headers& ResponseParser::trailers() const { return core_->trailers(); }
const ErrorInfo& ResponseParser::error() const { return core_->error(); }
bool ResponseParser::in_tunnel() const { return core_->in_tunnel(); }
bool ResponseParser::idle() const { return core_->idle(); }

}  // namespace faultline::proxy::http
