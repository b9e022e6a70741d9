#include "proxy/http/http_protocol.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "proxy/runtime.h"

namespace faultline::proxy::http {

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 524: return "A Timeout Occurred";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

bool has_header(const std::vector<std::pair<std::string, std::string>>& headers, std::string_view name) {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return true;
  return false;
}

std::string hex(size_t n) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}

// The client's address without the port (and without the brackets of an IPv6 one).
std::string ip_of(const std::string& peer) {
  std::string ip = peer.substr(0, peer.rfind(':'));
  if (ip.size() > 2 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
  return ip;
}

}  // namespace

std::string serialize_response(const faults::ActionSpec& a, bool close, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(a.status) + " " + reason_phrase(a.status) + "\r\n";
  for (const auto& [k, v] : a.headers) out += k + ": " + v + "\r\n";
  const bool bodiless = a.status == 204 || a.status == 304 || (a.status >= 100 && a.status < 200);
  if (!bodiless && !has_header(a.headers, "content-length"))
    out += "content-length: " + std::to_string(a.body.size()) + "\r\n";
  if (close && !has_header(a.headers, "connection")) out += "connection: close\r\n";
  out += "\r\n";
  if (!bodiless && !head_only) out += a.body;
  return out;
}

faults::ActionSpec error_response(int status, const std::string& type, const std::string& message, bool mark) {
  faults::ActionSpec a;
  a.type = faults::ActionSpec::Type::respond;
  a.status = status;
  a.headers = {{"content-type", "application/json"}};
  if (mark) a.headers.emplace_back("x-faultline-error", type);  // "this came from faultline, not the upstream"
  nlohmann::json body = {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
  a.body = body.dump() + "\n";
  return a;
}

HttpProtocol::HttpProtocol(const ProxyRuntime& proxy, uint64_t connection, std::string client_ip)
    : proxy_(proxy), connection_(connection), client_ip_(std::move(client_ip)) {}

std::unique_ptr<Protocol> HttpProtocol::make(const ProxyRuntime& proxy, uint64_t connection, const std::string& peer) {
  return std::make_unique<HttpProtocol>(proxy, connection, ip_of(peer));
}

// Feeds the parser what it has not seen of `in` (which starts at st.base); false when that gave no event.
template <typename Parser>
bool HttpProtocol::fill(Stream& st, Parser& parser, std::string_view in) {
  const uint64_t from = st.fed - st.base;
  if (from >= in.size()) return false;
  const std::string_view part = in.substr(from);
  scratch_.clear();
  const size_t used = parser.feed(part, scratch_);
  const auto lo = reinterpret_cast<uintptr_t>(part.data());
  for (const Event& e : scratch_) {
    Ev ev{e.kind, st.fed + e.raw_begin, st.fed + e.raw_end, 0, 0};
    const auto d = reinterpret_cast<uintptr_t>(e.data.data());
    if (e.kind == EventKind::body && !e.data.empty() && d >= lo && d + e.data.size() <= lo + part.size()) {
      ev.data_begin = st.fed + (d - lo);
      ev.data_end = ev.data_begin + e.data.size();
    }
    st.events.push_back(ev);
  }
  st.fed += used;
  return !scratch_.empty();
}

std::string_view HttpProtocol::data_of(const Stream& st, const Ev& ev, std::string_view in) {
  if (ev.data_end <= ev.data_begin || ev.data_begin < st.base) return {};
  return in.substr(ev.data_begin - st.base, ev.data_end - ev.data_begin);
}

// --- requests ---------------------------------------------------------------------------------------------

ClientUnit HttpProtocol::client(std::string_view in) {
  ClientUnit u;
  if (tunnel_) {
    u.kind = ClientUnit::Kind::pass;
    u.size = in.size();
    cs_.base += in.size();
    cs_.fed = cs_.base;
    return u;
  }
  for (;;) {
    if (cs_.events.empty() && !fill(cs_, req_, in)) return u;  // more
    const Ev ev = cs_.events.front();
    if (ev.kind == EventKind::error) return bad_request();
    switch (state_) {
      case State::idle: {
        cs_.events.pop_front();
        if (ev.kind != EventKind::head) continue;  // (an upgrade's announcement after a refused tunnel)
        const RequestHead& h = req_.head();
        method_ = h.method;
        head_only_ = h.method == "HEAD";
        version_minor_ = h.version_minor;
        keep_client_ = h.keep_alive;
        upgrade_pending_ = false;
        req_done_ = false;
        resp_done_ = false;
        shape_ = Shape::pass;
        body_.clear();
        body_overflow_ = false;
        continue_sent_ = false;
        body_forwarded_ = true;
        head_end_ = ev.end;
        const bool has_body = h.chunked || h.content_length.value_or(0) > 0;
        if (proxy_.needs_body && has_body) {
          state_ = State::looking;
          if (h.expect_continue) {
            // The body is read before anyone upstream could say 100 Continue: say it here (and the
            // upstream is not asked again).
            continue_sent_ = true;
            u.kind = ClientUnit::Kind::answer;
            u.reply = "HTTP/1.1 100 Continue\r\n\r\n";
            return u;
          }
          continue;
        }
        return message_unit(in, ev.end);
      }
      case State::looking:
        cs_.events.pop_front();
        if (ev.kind == EventKind::body) {
          const std::string_view data = data_of(cs_, ev, in);
          if (body_.size() + data.size() > kLookAhead) {  // too big to look into: decided without the body
            body_overflow_ = true;
            body_.clear();
            return message_unit(in, ev.end);
          }
          body_.append(data);
          continue;
        }
        if (ev.kind == EventKind::end) {
          req_done_ = true;
          return message_unit(in, ev.end);
        }
        continue;
      case State::decide:  // the session decides before asking again; should it not, the body follows
      case State::body: {
        cs_.events.pop_front();
        u.kind = body_forwarded_ ? ClientUnit::Kind::pass : ClientUnit::Kind::skip;
        u.size = ev.end - cs_.base;
        cs_.base = ev.end;
        if (ev.kind == EventKind::end) request_ended();
        fold_client(cs_);
        if (req_done_ && body_forwarded_ && proxy_.spec->mock && !resp_done_) u.synthetic = mock_response();
        return u;
      }
      case State::done:
        return u;  // the response comes first
    }
  }
}

// Events of no bytes right after a unit belong to it: the end of a bodiless request, an upgrade.
void HttpProtocol::fold_client(Stream& st) {
  while (!st.events.empty() && st.events.front().begin == st.base && st.events.front().end == st.base) {
    const EventKind kind = st.events.front().kind;
    if (kind == EventKind::error) return;
    st.events.pop_front();
    if (kind == EventKind::end) {
      if (state_ == State::decide)
        req_done_ = true;
      else
        request_ended();
    } else if (kind == EventKind::upgrade) {
      upgrade_pending_ = true;
    }
  }
}

void HttpProtocol::request_ended() {
  req_done_ = true;
  state_ = !body_forwarded_ || resp_done_ ? State::idle : State::done;
}

// The head (with the body looked at, up to `end`) as the message rules decide on.
ClientUnit HttpProtocol::message_unit(std::string_view in, uint64_t end) {
  ClientUnit u;
  u.kind = ClientUnit::Kind::message;
  u.size = end - cs_.base;
  const RequestHead& h = req_.head();
  ForwardEdits edits;
  if (!proxy_.spec->mock) edits.host = proxy_.upstream_host_header;
  edits.client = client_ip_;
  edits.drop_expect = continue_sent_;
  forwarded_ = serialize_forwarded_head(h, edits);
  if (end > head_end_) forwarded_.append(in.substr(head_end_ - cs_.base, end - head_end_));
  if (proxy_.rules) {
    msg_.emplace(h, connection_);
    if (!body_overflow_ && !body_.empty()) msg_->set_body(body_);
    u.msg = &*msg_;
  }
  cs_.base = end;
  state_ = State::decide;
  fold_client(cs_);
  return u;
}

ClientUnit HttpProtocol::bad_request() {
  const ErrorInfo& e = req_.error();
  ClientUnit u;
  u.kind = ClientUnit::Kind::error;
  u.size = cs_.events.front().end - cs_.base;
  u.why = e.reason;
  if (!resp_started_ || resp_done_) {
    const bool too_large = e.status == 431;
    u.reply = serialize_response(
        error_response(e.status ? e.status : 400, too_large ? "request_header_fields_too_large" : "invalid_request",
                       "faultline: " + std::string(too_large ? "request header block too large: " : "malformed request: ") +
                           e.reason),
        true, false);
  }
  return u;
}

Forward HttpProtocol::forward() {
  Forward f;
  f.raw = false;
  f.slots = 1;
  body_forwarded_ = true;
  resp_done_ = false;
  resp_started_ = false;
  interim_ = false;
  reuse_upstream_ = true;
  cut_ = false;
  // A new response: a parser left in the middle of a cut or broken one starts afresh (its connection is gone).
  if (!rs_.events.empty() || rs_.fed != rs_.base || !resp_.idle() || resp_.error()) resp_ = ResponseParser();
  rs_ = Stream{};
  resp_.expect_response_to(method_);
  if (proxy_.spec->mock) {
    forwarded_.clear();
    if (req_done_) f.synthetic = mock_response();
  } else {
    f.bytes = std::move(forwarded_);
    forwarded_.clear();
  }
  state_ = req_done_ ? State::done : State::body;
  return f;
}

Injected HttpProtocol::inject(const faults::ActionSpec& a) {
  using T = faults::ActionSpec::Type;
  Injected out;
  switch (a.type) {
    case T::respond:
      body_forwarded_ = false;
      forwarded_.clear();
      // A client that waits for 100 Continue would otherwise send its body as the next request: close after.
      if (req_.head().expect_continue && !req_done_) keep_client_ = false;
      out.bytes = serialize_response(a, !keep_client_, head_only_);
      out.close_after = !keep_client_;
      resp_done_ = true;
      resp_started_ = false;
      state_ = req_done_ ? State::idle : State::body;
      return out;
    case T::delay_response: shape_ = Shape::delay_response; break;
    case T::throttle: shape_ = Shape::throttle; break;
    case T::truncate: shape_ = Shape::truncate; break;
    case T::sse_cut: shape_ = Shape::sse_cut; break;
    case T::sse_delay: shape_ = Shape::sse_delay; break;
    default:  // another protocol's action: the loader refuses them on http proxies
      spdlog::warn("action '{}' does not apply to http; passing", a.name());
      break;
  }
  shape_action_ = a;
  out.forward = true;
  return out;
}

// upstream = "mock": chat completions get the openai_api defaults, anything else a 404 like the API's.
std::string HttpProtocol::mock_response() {
  const RequestHead& h = req_.head();
  const std::string path = h.path();
  faults::ActionSpec a;
  if (h.method == "POST" && path.ends_with("/chat/completions")) {
    RequestMessage msg(h, connection_);
    msg.set_body(body_);
    const nlohmann::json* stream = msg.json_field("stream");
    a = stream && stream->is_boolean() && stream->get<bool>() ? *proxy_.spec->mock_stream : *proxy_.spec->mock_completion;
  } else {
    a = error_response(404, "invalid_request_error",
                       "Invalid URL (" + h.method + " " + path + "): faultline's mock serves POST .../chat/completions",
                       false);
  }
  return serialize_response(a, false, false);
}

// --- responses --------------------------------------------------------------------------------------------

ReplyUnit HttpProtocol::reply(std::string_view in, uint32_t head_tag) {
  if (!queued_.empty()) {
    ReplyUnit next = std::move(queued_.front());
    queued_.pop_front();
    return next;
  }
  ReplyUnit u;
  if (tunnel_) {
    u.kind = ReplyUnit::Kind::async;
    u.size = in.size();
    rs_.base += in.size();
    rs_.fed = rs_.base;
    return u;
  }
  if (head_tag == kNoSlot || cut_ || resp_done_) {
    u.kind = ReplyUnit::Kind::stray;
    u.size = in.size();
    u.why = "upstream sent " + std::to_string(in.size()) + " byte(s) no request asked for";
    return u;
  }
  for (;;) {
    if (rs_.events.empty() && !fill(rs_, resp_, in)) return u;  // more
    const Ev ev = rs_.events.front();
    rs_.events.pop_front();
    const std::string_view raw = in.substr(ev.begin - rs_.base, ev.end - ev.begin);
    switch (ev.kind) {
      case EventKind::head: return response_head(raw, ev.end);
      case EventKind::body: return response_body(raw, data_of(rs_, ev, in), ev.end);
      case EventKind::end:
        if (interim_) {  // a 1xx: the real response follows
          interim_ = false;
          if (ev.end == ev.begin) continue;
          return frame(raw, ev.end);
        }
        return response_end(raw, ev.end);
      case EventKind::upgrade: continue;
      case EventKind::error:
        u.kind = ReplyUnit::Kind::error;
        u.size = ev.end - rs_.base;
        rs_.base = ev.end;
        u.why = resp_.error().reason;
        return u;
    }
  }
}

// A frame of the response covering the stream up to `end`, with the pacing of the shape.
ReplyUnit HttpProtocol::frame(std::string_view raw, uint64_t end) {
  pending_raw_ = raw;
  ReplyUnit u;
  u.kind = ReplyUnit::Kind::frame;
  u.size = end - rs_.base;
  rs_.base = end;
  if (shape_ == Shape::throttle) u.rate = static_cast<uint64_t>(std::max<int64_t>(1, shape_action_.bytes_per_second));
  return u;
}

ReplyUnit HttpProtocol::response_head(std::string_view raw, uint64_t end) {
  const ResponseHead& rh = resp_.head();
  if (rh.status < 200 && !rh.upgrade) {  // 100 Continue, 103 Early Hints: passed on as they are
    interim_ = true;
    ReplyUnit u = frame(raw, end);
    if (version_minor_ < 1) u.replaced = true;  // an HTTP/1.0 client does not expect them
    fold_reply(u);
    return u;
  }
  interim_ = false;
  resp_started_ = true;
  if (!rh.keep_alive) {
    reuse_upstream_ = false;
    keep_client_ = false;
  }
  if (upgrade_pending_ && !rh.upgrade) {
    req_.cancel_upgrade();
    upgrade_pending_ = false;
  }
  resp_chunked_ = rh.chunked;
  shaped_ = 0;
  sse_ = SseSplitter();
  sse_partial_.clear();
  events_sent_ = 0;
  if ((shape_ == Shape::sse_cut || shape_ == Shape::sse_delay) && !rh.event_stream) {
    spdlog::debug("'{}' applies to event streams; this response is {}: passing it", shape_action_.name(),
                  rh.header("content-type").value_or("without content-type"));
    shape_ = Shape::pass;
  }
  ReplyUnit u = frame(raw, end);
  if (shape_ == Shape::delay_response) u.after_us = static_cast<uint64_t>(std::max<int64_t>(0, shape_action_.ms)) * 1000;
  if (shape_ == Shape::sse_cut && shape_action_.after_events <= 0) {
    u.cut = ReplyUnit::Cut::reset;
    cut_ = true;
    return u;
  }
  if (shape_ == Shape::truncate && shape_action_.bytes <= 0 && !rh.no_body) {
    u.cut = ReplyUnit::Cut::close;
    cut_ = true;
    return u;
  }
  fold_reply(u);
  return u;
}

ReplyUnit HttpProtocol::response_body(std::string_view raw, std::string_view data, uint64_t end) {
  ReplyUnit u = frame(raw, end);
  switch (shape_) {
    case Shape::truncate: {
      const uint64_t left = static_cast<uint64_t>(shape_action_.bytes) - shaped_;
      const std::string_view part = data.substr(0, static_cast<size_t>(std::min<uint64_t>(left, data.size())));
      shaped_ += part.size();
      u.replaced = true;
      u.bytes = framed(part);
      if (shaped_ >= static_cast<uint64_t>(shape_action_.bytes)) {
        u.cut = ReplyUnit::Cut::close;
        cut_ = true;
        return u;
      }
      break;
    }
    case Shape::sse_cut:
    case Shape::sse_delay: {
      u.replaced = true;
      bool cut = false;
      std::vector<std::string> events = events_of(data, &cut);
      if (shape_ == Shape::sse_cut || events.size() <= 1) {
        for (auto& e : events) u.bytes += e;
        if (shape_ == Shape::sse_delay && !events.empty()) u.after_us = delay_us();
        if (cut) {
          u.cut = ReplyUnit::Cut::reset;
          cut_ = true;
          return u;
        }
        break;
      }
      // sse_delay: each whole event is a frame of its own, `ms` after the one before; all but the last are
      // frames of no input bytes, handed out first.
      for (size_t i = 0; i < events.size(); ++i) {
        ReplyUnit e;
        e.kind = ReplyUnit::Kind::frame;
        e.replaced = true;
        e.bytes = std::move(events[i]);
        e.after_us = delay_us();
        if (i + 1 == events.size()) {
          e.size = u.size;
          fold_reply(e);
        }
        queued_.push_back(std::move(e));
      }
      ReplyUnit first = std::move(queued_.front());
      queued_.pop_front();
      return first;
    }
    default:
      break;
  }
  fold_reply(u);
  return u;
}

ReplyUnit HttpProtocol::response_end(std::string_view raw, uint64_t end) {
  ReplyUnit u = frame(raw, end);
  if (shape_ == Shape::truncate || shape_ == Shape::sse_cut || shape_ == Shape::sse_delay) {
    u.replaced = true;
    u.bytes = end_tail();
  }
  response_over(u);
  fold_reply(u);
  return u;
}

// What a shaped (re-framed) body still owes at its end: the incomplete last event, the last chunk.
std::string HttpProtocol::end_tail() {
  std::string tail = framed(sse_partial_);
  sse_partial_.clear();
  if (resp_chunked_) tail += "0\r\n\r\n";
  return tail;
}

// Events of no bytes right after a frame belong to it: the end of a bodiless response, an accepted upgrade.
void HttpProtocol::fold_reply(ReplyUnit& u) {
  while (!rs_.events.empty() && rs_.events.front().begin == rs_.base && rs_.events.front().end == rs_.base) {
    const EventKind kind = rs_.events.front().kind;
    if (kind == EventKind::error) return;
    rs_.events.pop_front();
    if (kind == EventKind::end) {
      if (interim_) {
        interim_ = false;
        continue;
      }
      if (shape_ == Shape::truncate || shape_ == Shape::sse_cut || shape_ == Shape::sse_delay) {
        const std::string tail = end_tail();
        if (!tail.empty() && !u.replaced) {
          // Only a head came before: it goes as it came, with the tail after it.
          u.replaced = true;
          u.bytes = std::string(pending_raw_);
        }
        u.bytes += tail;
      }
      response_over(u);
    } else if (kind == EventKind::upgrade && upgrade_pending_) {
      tunnel_ = true;
      u.upstream_done = u.client_done = false;
    }
  }
}

void HttpProtocol::response_over(ReplyUnit& u) {
  u.ends = true;
  resp_done_ = true;
  u.upstream_done = !reuse_upstream_;
  u.client_done = !keep_client_;
  if (req_done_ || !body_forwarded_) state_ = State::idle;  // else the body still streams (an early answer)
}

// Decoded body bytes out again: re-framed as one chunk when the response is chunked.
std::string HttpProtocol::framed(std::string_view data) const {
  if (data.empty()) return {};
  if (!resp_chunked_) return std::string(data);
  std::string out = hex(data.size()) + "\r\n";
  out.append(data);
  out += "\r\n";
  return out;
}

// The whole events completed by `data`, each framed; the incomplete rest waits in sse_partial_. sse_cut:
// stops at the event that reaches after_events (`*cut`).
std::vector<std::string> HttpProtocol::events_of(std::string_view data, bool* cut) {
  std::vector<std::string> out;
  size_t from = 0;
  for (size_t end : sse_.feed(data)) {
    std::string event = std::move(sse_partial_);
    sse_partial_.clear();
    event.append(data.substr(from, end - from));
    from = end;
    out.push_back(framed(event));
    ++events_sent_;
    if (shape_ == Shape::sse_cut && events_sent_ >= static_cast<uint64_t>(shape_action_.after_events)) {
      *cut = true;
      return out;
    }
  }
  sse_partial_.append(data.substr(from));
  return out;
}

uint64_t HttpProtocol::delay_us() const {
  return static_cast<uint64_t>(std::max<int64_t>(0, shape_action_.ms)) * 1000;
}

ReplyUnit HttpProtocol::reply_eof() {
  ReplyUnit u;
  if (tunnel_ || resp_done_ || cut_) return u;
  scratch_.clear();
  resp_.feed_eof(scratch_);
  for (const Event& e : scratch_) {
    if (e.kind == EventKind::end && !interim_) {  // a body that ends with the connection
      reuse_upstream_ = false;
      u.kind = ReplyUnit::Kind::frame;
      if (shape_ == Shape::truncate || shape_ == Shape::sse_cut || shape_ == Shape::sse_delay) {
        u.replaced = true;
        u.bytes = end_tail();
      }
      if (shape_ == Shape::throttle) u.rate = static_cast<uint64_t>(std::max<int64_t>(1, shape_action_.bytes_per_second));
      response_over(u);
      return u;
    }
    if (e.kind == EventKind::error) {
      u.kind = ReplyUnit::Kind::error;
      u.why = "closed the connection before the response ended";
      return u;
    }
  }
  if (resp_started_) {
    u.kind = ReplyUnit::Kind::error;
    u.why = "closed the connection before the response ended";
  }
  return u;  // more: nothing of the response came
}

FailureReply HttpProtocol::upstream_failure(Failure failure, const std::string& why) {
  FailureReply r;
  if (tunnel_ || (resp_started_ && !resp_done_)) {  // the client cannot be told anything else mid-body
    r.reset = true;
    return r;
  }
  int status = 502;
  const char* type = "upstream_unreachable";
  switch (failure) {
    case Failure::unreachable: break;
    case Failure::closed: type = "upstream_closed"; break;
    case Failure::bad_reply: type = "bad_upstream_response"; break;
    case Failure::timeout:
      status = 504;
      type = "upstream_timeout";
      break;
  }
  keep_client_ = false;
  resp_done_ = true;
  r.bytes = serialize_response(error_response(status, type, why), true, head_only_);
  return r;
}

}  // namespace faultline::proxy::http
