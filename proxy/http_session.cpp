// HTTP/1.1 proxying with rules. One request at a time per client connection, so responses keep their order
// under pipelining; bytes nobody touched are forwarded exactly as they came (the codec's raw ranges).
#include "proxy/http_session.h"

#include <cmath>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "faults/decider.h"
#include "proxy/http/request_message.h"
#include "proxy/toxic_decision.h"

namespace faultline::proxy {

namespace {
constexpr size_t kLookAhead = 1024 * 1024;      // json matchers see bodies up to this size (SPEC §2.1)
constexpr size_t kMaxUnparsed = 1024 * 1024;     // pipelined client bytes held while a request is handled
constexpr size_t kMaxHeld = 1024 * 1024;         // request bytes held by delay()/hang() before reading pauses
constexpr uint64_t kConnectTimeoutMs = 5000;
constexpr size_t kResendMax = 64 * 1024;         // requests up to this size are sent again after a stale reuse
constexpr uint64_t kLingerMs = 2000;             // after our FIN, wait this long for the client's

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
    if (http::iequals(k, name)) return true;
  return false;
}

// A whole response from an action: status line, its headers, content-length, body.
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

// faultline's own errors (SPEC §6): JSON in the shape of OpenAI's, so SDKs print the message.
faults::ActionSpec error_response(int status, const std::string& type, const std::string& message,
                                  bool mark = true) {
  faults::ActionSpec a;
  a.type = faults::ActionSpec::Type::respond;
  a.status = status;
  a.headers = {{"content-type", "application/json"}};
  if (mark) a.headers.emplace_back("x-faultline-error", type);  // "this came from faultline, not the upstream"
  nlohmann::json body = {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
  a.body = body.dump() + "\n";
  return a;
}

std::string hex(size_t n) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}
}  // namespace

template <typename F>
void HttpSession::guard(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {  // never across a libuv callback: close this session only
    spdlog::error("{} closing after an internal error: {}", tag(), e.what());
    close_everything(false);
  }
}

void HttpSession::ChainOut::push(faults::Chunk chunk) {
  if (downstream) {
    if (s->client_ && !s->client_->closing()) s->client_->write(chunk.view());
    // A toxic let held bytes go (from its timer): what waited on the backlog may go on. Not when the push
    // comes straight through from to_client(): the caller is in the middle of sending and goes on itself.
    if (!s->in_down_push_) s->guard([&] { s->on_client_drain(); });
  } else if (live && s->upstream_) {
    s->upstream_->write(chunk.view());
  }
}

// A toxic ended the connection (reset_peer, timeout, limit_data): as on a tcp proxy, a reset is passed on at
// once and a close after what was already let through.
void HttpSession::ChainOut::abort(bool rst) {
  if (!live) return;
  s->guard([&] {
    s->chain_aborted_ = true;
    if (rst)
      s->close_everything(true);
    else
      s->finish_client(false);
  });
}

void HttpSession::ClientHandler::on_data(Conn&, std::string_view bytes) { s->guard([&] { s->on_client_data(bytes); }); }
void HttpSession::ClientHandler::on_eof(Conn&) { s->guard([&] { s->on_client_eof(); }); }
void HttpSession::ClientHandler::on_error(Conn&, const std::string& why, bool reset) { s->on_client_error(why, reset); }
void HttpSession::ClientHandler::on_drain(Conn&) { s->guard([&] { s->on_client_drain(); }); }
void HttpSession::ClientHandler::on_closed(Conn&) { s->on_client_closed(); }

// An upstream connection this session let go of may still call back: only the current one is listened to.
void HttpSession::UpstreamHandler::on_data(Conn& c, std::string_view bytes) {
  if (&c == s->upstream_) s->guard([&] { s->on_upstream_data(bytes); });
}
void HttpSession::UpstreamHandler::on_eof(Conn& c) {
  if (&c == s->upstream_) s->guard([&] { s->on_upstream_eof(); });
}
void HttpSession::UpstreamHandler::on_error(Conn& c, const std::string& why, bool reset) {
  if (&c == s->upstream_) s->guard([&] { s->on_upstream_error(why, reset); });
}
void HttpSession::UpstreamHandler::on_drain(Conn&) { s->guard([&] { s->update_reading(); }); }
void HttpSession::UpstreamHandler::on_closed(Conn& c) { s->on_upstream_closed(c); }

HttpSession::HttpSession(Worker& worker, ProxyRuntime& proxy)
    : worker_(worker),
      proxy_(proxy),
      action_timer_(worker.loop(), [this] { guard([this] {
        if (phase_ == Phase::delaying) {
          forward();
        } else if (phase_ == Phase::hanging) {
          spdlog::debug("{} hang over: closing the client", tag());
          finish_client(false);
        } else if (phase_ == Phase::forwarding && !resp_started_) {
          upstream_failed(504, "upstream_timeout",
                          "faultline: upstream " + proxy_.spec->upstream + " sent no response within " +
                              std::to_string(proxy_.spec->upstream_timeout_ms) + " ms");
        }
      }); }),
      piece_timer_(worker.loop(), [this] { guard([this] { drain_pieces(); }); }),
      close_timer_(worker.loop(), [this] { close_client(false); }) {
  client_handler_.s = this;
  upstream_handler_.s = this;
  proxy_.active.fetch_add(1, std::memory_order_relaxed);
  worker_.add(this);
}

HttpSession::~HttpSession() {
  up_.reset();  // their timers go before the members they push into
  retired_up_.clear();
  down_chain_.reset();
  proxy_.active.fetch_sub(1, std::memory_order_relaxed);
  worker_.remove(this);
}

std::string HttpSession::tag() const { return "[" + proxy_.spec->name + " #" + std::to_string(id_) + "]"; }

void HttpSession::accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server) {
  auto* s = new HttpSession(worker, proxy);
  std::string why;
  s->client_ = Conn::accept(worker, server, &s->client_handler_, &why);
  if (!s->client_) {
    spdlog::warn("[{}] accept failed: {}", proxy.spec->name, why);
    delete s;
    return;
  }
  s->id_ = worker.runtime().next_conn_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->ordinal_ = proxy.connections.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::string& peer = s->client_->peer();
  s->client_ip_ = peer.substr(0, peer.rfind(':'));
  if (s->client_ip_.size() > 2 && s->client_ip_.front() == '[') s->client_ip_ = s->client_ip_.substr(1, s->client_ip_.size() - 2);
  if (proxy.listen_tls) s->client_->use_tls_server(proxy.listen_tls.get());
  spdlog::debug("{} accepted {} (connection {} of the proxy)", s->tag(), peer, s->ordinal_);
  s->start_toxics();
  if (s->closing_) return;
  s->client_->read_start();
}

// --- client side -------------------------------------------------------------------------------------------

void HttpSession::on_client_data(std::string_view bytes) {
  retired_up_.clear();
  if (closing_) return;  // lingering after our FIN: what the client still sends is dropped
  if (phase_ == Phase::tunnel) {
    send_upstream(bytes);
    update_reading();
    return;
  }
  in_.append(bytes);
  pump();
  update_reading();
}

// Feeds the parser while the current exchange can take what it says.
void HttpSession::pump() {
  if (pumping_) return;
  pumping_ = true;
  while (!closing_ && !in_.empty()) {
    if (phase_ == Phase::hanging || phase_ == Phase::tunnel) break;
    if (req_done_ || upgrade_pending_) break;  // the next request waits for this one's response
    req_events_.clear();
    const size_t consumed = req_.feed(in_, req_events_);
    const std::string_view in(in_);
    for (const auto& ev : req_events_) {
      if (closing_) break;
      switch (ev.kind) {
        case http::EventKind::head: on_request_head(ev, in); break;
        case http::EventKind::body: on_request_body(ev, in); break;
        case http::EventKind::end: on_request_end(ev, in); break;
        case http::EventKind::upgrade:
          if (ev.raw_size() == 0) upgrade_pending_ = true;
          break;
        case http::EventKind::error: on_request_error(req_.error().reason, req_.error().status); break;
      }
    }
    if (closing_) break;
    in_.erase(0, consumed);
    if (consumed == 0) break;  // an incomplete head: wait for more
  }
  pumping_ = false;
  flush_upstream_batch();
}

void HttpSession::on_request_head(const http::Event&, std::string_view) {
  phase_ = Phase::idle;
  held_.clear();
  body_.clear();
  body_overflow_ = false;
  req_done_ = false;
  resp_started_ = false;
  resp_done_ = false;
  keep_client_ = head().keep_alive;
  fired_.reset();
  shape_ = Shape::pass;
  // The head goes upstream rewritten: Host names the upstream, X-Forwarded-For the client.
  http::ForwardEdits edits;
  if (!proxy_.spec->mock) edits.host = proxy_.upstream_host_header;
  edits.client = client_ip_;
  const bool has_body = head().chunked || head().content_length.value_or(0) > 0;
  if (proxy_.needs_body && has_body) {
    phase_ = Phase::looking;
    if (head().expect_continue) {
      // We read the body before anyone upstream could say 100 Continue: say it ourselves, and do not ask the
      // upstream again.
      edits.drop_expect = true;
      to_client("HTTP/1.1 100 Continue\r\n\r\n");
    }
    held_ = http::serialize_forwarded_head(head(), edits);
    return;
  }
  held_ = http::serialize_forwarded_head(head(), edits);
  decide();
}

void HttpSession::on_request_body(const http::Event& ev, std::string_view in) {
  const std::string_view raw = in.substr(ev.raw_begin, ev.raw_size());
  switch (phase_) {
    case Phase::looking:
      held_.append(raw);
      if (!body_overflow_) {
        if (body_.size() + ev.data.size() > kLookAhead) {
          body_overflow_ = true;  // too big to look into: decide without the body
          body_.clear();
          decide();
        } else {
          body_.append(ev.data);
        }
      }
      return;
    case Phase::delaying:
    case Phase::hanging:
      held_.append(raw);
      return;
    case Phase::forwarding:
      send_upstream(raw);
      return;
    default:  // answered: the body is read and dropped
      return;
  }
}

void HttpSession::on_request_end(const http::Event& ev, std::string_view in) {
  const std::string_view raw = in.substr(ev.raw_begin, ev.raw_size());
  req_done_ = true;
  if (phase_ == Phase::looking) {
    held_.append(raw);
    decide();
    maybe_finish_exchange();
    return;
  }
  if (phase_ == Phase::delaying || phase_ == Phase::hanging) {
    held_.append(raw);
    return;
  }
  if (phase_ == Phase::forwarding) {
    send_upstream(raw);
    request_forwarded();
    if (closing_) return;
  }
  maybe_finish_exchange();
}

void HttpSession::on_request_error(const std::string& reason, int status) {
  spdlog::warn("{} bad request from {}: {}", tag(), client_->peer(), reason);
  if (resp_started_ || phase_ == Phase::tunnel) {
    close_everything(false);
    return;
  }
  if (phase_ == Phase::forwarding) drop_upstream();  // it holds half a request
  phase_ = Phase::answered;
  const bool too_large = status == 431;
  to_client(serialize_response(
      error_response(status, too_large ? "request_header_fields_too_large" : "invalid_request",
                     "faultline: " + std::string(too_large ? "request header block too large: " : "malformed request: ") +
                         reason),
      true, false));
  finish_client(false);
}

void HttpSession::on_client_eof() {
  req_events_.clear();
  req_.feed_eof(req_events_);
  for (const auto& ev : req_events_)
    if (ev.kind == http::EventKind::error) {
      spdlog::debug("{} client closed mid-request", tag());
      close_everything(false);
      return;
    }
  if (phase_ == Phase::tunnel) {
    if (upstream_) upstream_->shutdown();
    if (upstream_ == nullptr || upstream_->peer_eof()) close_everything(false);
    return;
  }
  keep_client_ = false;
  // Between requests: done, and the upstream connection goes back to the pool (on_client_closed). With a
  // request held here: nothing will be delivered. Otherwise the response still goes out.
  if (phase_ == Phase::idle || closing_)
    close_client(false);
  else if (phase_ == Phase::hanging || phase_ == Phase::delaying)
    close_everything(false);
  else
    maybe_finish_exchange();
}

void HttpSession::on_client_error(const std::string& why, bool reset) {
  if (why.rfind("TLS", 0) == 0)
    spdlog::warn("{} client {}: {}", tag(), client_ ? client_->peer() : "?", why);
  else
    spdlog::debug("{} client {}: {}", tag(), client_ ? client_->peer() : "?", why);
  guard([&] {
    // Pass a reset on to the upstream, as the upstream's peer would have seen it.
    if (upstream_ && phase_ != Phase::idle) {
      upstream_->close(reset);
    }
  });
}

void HttpSession::on_client_drain() {
  check_flushed();
  if (closing_) return;
  drain_pieces();
  update_reading();
}

// A close that waited for the client's backlog to go out.
void HttpSession::check_flushed() {
  if (close_when_flushed_ && client_ && client_backlog() == 0) {
    close_when_flushed_ = false;
    if (close_rst_) {
      close_everything(true);
    } else {
      client_->shutdown();
      close_timer_.start(kLingerMs * 1000);
    }
  }
}

void HttpSession::on_client_closed() {
  client_ = nullptr;
  client_closed_ = true;
  closing_ = true;
  piece_timer_.stop();
  close_timer_.stop();
  if (upstream_) {
    if (drop_after_forward_ && phase_ == Phase::forwarding && !resp_done_) {
      return;  // the response is read (and dropped) so the upstream finishes what it was asked
    }
    action_timer_.stop();
    if (phase_ == Phase::idle && reuse_upstream_ && upstream_->connected() && !upstream_->closing()) {
      Conn* c = upstream_;
      upstream_ = nullptr;
      worker_.park_idle(&proxy_, c);
    } else {
      drop_upstream();
    }
  }
  action_timer_.stop();
  maybe_delete();
}

void HttpSession::maybe_delete() {
  if (client_closed_ && upstream_ == nullptr && upstreams_closing_ == 0) delete this;
}

// --- decisions ---------------------------------------------------------------------------------------------

void HttpSession::decide() {
  phase_ = Phase::forwarding;  // the default below may be overridden by the action
  if (proxy_.rules) {
    http::RequestMessage msg(head(), ordinal_);
    if (!body_overflow_ && !body_.empty()) msg.set_body(body_);
    const double now_s = static_cast<double>(uv_hrtime() - worker_.runtime().start_ns) / 1e9;
    fired_ = proxy_.rules->evaluate(msg, id_, now_s);
  }
  if (!fired_) {
    forward();
    return;
  }
  spdlog::debug("{} rule '{}' fires: {} on {} {}", tag(), fired_->rule->name, fired_->action.name(), head().method,
                head().target);
  act(fired_->action);
}

void HttpSession::act(const faults::ActionSpec& a) {
  using T = faults::ActionSpec::Type;
  switch (a.type) {
    case T::pass:
      forward();
      return;
    case T::delay:
      phase_ = Phase::delaying;
      action_timer_.start(static_cast<uint64_t>(fired_delay_ms(worker_.runtime(), *fired_)) * 1000);
      return;
    case T::hang:
      phase_ = Phase::hanging;
      if (a.ms > 0) action_timer_.start(static_cast<uint64_t>(a.ms) * 1000);
      return;
    case T::drop:
      if (a.after_forward) {
        drop_after_forward_ = true;
        forward();
        return;
      }
      phase_ = Phase::answered;
      finish_client(false);
      return;
    case T::reset:
      phase_ = Phase::answered;
      close_everything(true);
      return;
    case T::respond:
      answer(a);
      return;
    case T::delay_response:
      shape_ = Shape::delay_response;
      break;
    case T::throttle:
      shape_ = Shape::throttle;
      break;
    case T::truncate:
      shape_ = Shape::truncate;
      break;
    case T::sse_cut:
      shape_ = Shape::sse_cut;
      break;
    case T::sse_delay:
      shape_ = Shape::sse_delay;
      break;
    default:  // redis/postgres actions: the loader refuses them on http proxies
      spdlog::warn("{} action '{}' does not apply to http; passing", tag(), a.name());
      break;
  }
  shape_action_ = a;
  forward();
}

// A response made here. The client may still be sending the body: it is read and dropped.
void HttpSession::answer(const faults::ActionSpec& a) {
  phase_ = Phase::answered;
  // A client that waits for 100 Continue would otherwise send its body as the next request: close after.
  if (head().expect_continue && !req_done_) keep_client_ = false;
  const bool head_only = head().method == "HEAD";
  to_client(serialize_response(a, !keep_client_, head_only));
  resp_started_ = true;
  resp_done_ = true;
  maybe_finish_exchange();
}

void HttpSession::forward() {
  phase_ = Phase::forwarding;
  if (proxy_.spec->mock) {
    held_.clear();
  } else {
    ensure_upstream();
    resp_.expect_response_to(head().method);
    std::string bytes = std::move(held_);
    held_.clear();
    send_upstream(bytes);
    if (proxy_.spec->upstream_timeout_ms > 0)
      action_timer_.start(static_cast<uint64_t>(proxy_.spec->upstream_timeout_ms) * 1000);
  }
  if (req_done_) request_forwarded();
  update_reading();  // what was held went out: the client may be read again
}

// The whole request went upstream (or to the mock).
void HttpSession::request_forwarded() {
  if (drop_after_forward_) {
    spdlog::debug("{} request forwarded: dropping the client before the response", tag());
    shape_ = Shape::discard;
    if (proxy_.spec->mock) {  // the mock "handled" it; nobody waits for an answer
      finish_client(false);
      return;
    }
    closing_ = true;
    close_client(false);  // the upstream's answer is still read, and dropped, in on_client_closed's wake
    return;
  }
  if (proxy_.spec->mock) mock_respond();
}

// --- upstream ----------------------------------------------------------------------------------------------

void HttpSession::ensure_upstream() {
  resend_.clear();
  resend_ok_ = true;
  if (upstream_ && !upstream_->closing()) {
    upstream_reused_ = true;
    return;
  }
  upstream_ = worker_.take_idle(&proxy_);
  upstream_reused_ = upstream_ != nullptr;
  if (upstream_) {
    upstream_->set_handler(&upstream_handler_);
  } else {
    upstream_ = Conn::connect(worker_, proxy_.upstream, &upstream_handler_, kConnectTimeoutMs);
    if (proxy_.upstream_tls) upstream_->use_tls_client(proxy_.upstream_tls.get(), proxy_.upstream.host, proxy_.spec->tls_verify);
  }
  start_upstream_chain();
  reuse_upstream_ = true;
  resp_ = http::ResponseParser();
  up_in_.clear();
  upstream_->read_start();
}

// Bytes for the upstream: while one read of the client is parsed they are gathered (a request head and its
// body go out in one write, not one per event).
void HttpSession::send_upstream(std::string_view bytes) {
  if (!upstream_) return;
  if (pumping_) {
    up_batch_.append(bytes);
    return;
  }
  send_upstream_now(bytes);
}

void HttpSession::flush_upstream_batch() {
  if (up_batch_.empty()) return;
  std::string bytes = std::move(up_batch_);
  up_batch_.clear();
  if (upstream_) send_upstream_now(bytes);
}

void HttpSession::send_upstream_now(std::string_view bytes) {
  if (resend_ok_ && upstream_reused_) {
    if (resend_.size() + bytes.size() <= kResendMax)
      resend_.append(bytes);
    else
      resend_ok_ = false;
  }
  if (up_) {
    faults::Chunk chunk;
    chunk.buf = faults::Buffer::copy_of(bytes);
    chunk.len = bytes.size();
    chunk.offset = up_->offset;
    chunk.arrived_us = now_us();
    up_->offset += bytes.size();
    up_->chain->push(std::move(chunk));
    return;
  }
  upstream_->write(bytes);
}

// The reused connection failed before any byte of the response: the upstream had closed it while idle (a
// keep-alive timeout), so the request never reached it. Once, on a new connection, as browsers and proxies do.
bool HttpSession::retry_on_fresh_upstream(const std::string& why) {
  if (!upstream_reused_ || !resend_ok_ || resp_started_ || !up_in_.empty() || phase_ != Phase::forwarding) return false;
  spdlog::debug("{} reused upstream connection failed ({}); sending the request again on a new one", tag(), why);
  std::string bytes = std::move(resend_);
  drop_upstream();
  upstream_ = Conn::connect(worker_, proxy_.upstream, &upstream_handler_, kConnectTimeoutMs);
  if (proxy_.upstream_tls)
    upstream_->use_tls_client(proxy_.upstream_tls.get(), proxy_.upstream.host, proxy_.spec->tls_verify);
  start_upstream_chain();
  upstream_reused_ = false;
  resend_.clear();
  resp_ = http::ResponseParser();
  resp_.expect_response_to(head().method);
  upstream_->read_start();
  send_upstream_now(bytes);
  return true;
}

void HttpSession::on_upstream_data(std::string_view bytes) {
  if (phase_ == Phase::tunnel) {
    if (client_) to_client(bytes);
    update_reading();
    return;
  }
  if (phase_ != Phase::forwarding || resp_done_) {
    // Bytes nobody asked for (a response after the one we read, or to nothing): this connection is not
    // safe to reuse.
    spdlog::debug("{} upstream sent {} unexpected byte(s); closing it", tag(), bytes.size());
    drop_upstream();
    return;
  }
  if (up_in_.empty()) {
    handle_response_events(bytes);
  } else {
    up_in_.append(bytes);
    std::string pending = std::move(up_in_);
    up_in_.clear();
    handle_response_events(pending);
  }
  update_reading();
}

void HttpSession::handle_response_events(std::string_view in) {
  const bool outer = !in_response_;
  in_response_ = true;
  size_t offset = 0;
  bool ended = false;
  while (offset < in.size() && !closing_ && phase_ == Phase::forwarding && !resp_done_) {
    resp_events_.clear();
    const std::string_view rest = in.substr(offset);
    const size_t consumed = resp_.feed(rest, resp_events_);
    bool tunnel = false;
    for (const auto& ev : resp_events_) {
      if (closing_ || phase_ != Phase::forwarding) break;
      const std::string_view raw = rest.substr(ev.raw_begin, ev.raw_size());
      switch (ev.kind) {
        case http::EventKind::head: on_response_head(raw); break;
        case http::EventKind::body: on_response_body(raw, ev.data); break;
        case http::EventKind::end:
          if (resp_.head().status < 200 && !resp_.head().upgrade) break;  // a 1xx: the real response follows
          ended = !resp_.in_tunnel();
          on_response_end(raw);
          break;
        case http::EventKind::upgrade:
          if (ev.raw_size() == 0 && upgrade_pending_) tunnel = true;
          break;
        case http::EventKind::error:
          spdlog::warn("{} bad response from upstream {}: {}", tag(), proxy_.spec->upstream, resp_.error().reason);
          upstream_failed(502, "bad_upstream_response", "faultline: " + resp_.error().reason);
          offset = in.size();
          break;
      }
    }
    if (tunnel && !closing_) {
      // Accepted: from here on, bytes both ways, whatever they are.
      phase_ = Phase::tunnel;
      action_timer_.stop();
      if (client_) to_client(rest.substr(consumed));
      if (!in_.empty()) send_upstream(in_);
      in_.clear();
      offset = in.size();
      break;
    }
    if (offset >= in.size()) break;
    if (consumed == 0) {  // an incomplete head: keep it for the next read
      up_in_.assign(rest);
      break;
    }
    offset += consumed;
    if (ended) break;
  }
  if (ended && offset < in.size()) {
    spdlog::debug("{} upstream sent bytes after its response; not reusing it", tag());
    drop_upstream();
  }
  if (outer) {
    in_response_ = false;
    flush_client_batch();
    if (repump_ && !closing_) {
      repump_ = false;
      pump();
      update_reading();
    }
  }
}

void HttpSession::on_response_head(std::string_view raw) {
  const http::ResponseHead& rh = resp_.head();
  if (rh.status < 200 && !rh.upgrade) {  // 100 Continue, 103 Early Hints: passed on as they are
    if (head().version_minor >= 1 && shape_ != Shape::discard) to_client(raw);
    return;
  }
  action_timer_.stop();
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
  shape_start_us_ = now_us();
  last_due_us_ = shape_start_us_;
  shaped_bytes_ = 0;
  sse_ = http::SseSplitter();
  sse_partial_.clear();
  events_sent_ = 0;
  if ((shape_ == Shape::sse_cut || shape_ == Shape::sse_delay) && !rh.event_stream) {
    spdlog::debug("{} '{}' applies to event streams; this response is {}: passing it", tag(), shape_action_.name(),
                  rh.header("content-type").value_or("without content-type"));
    shape_ = Shape::pass;
  }
  if (shape_ == Shape::delay_response) last_due_us_ = shape_start_us_ + static_cast<uint64_t>(shape_action_.ms) * 1000;
  emit(raw);
  if (shape_ == Shape::sse_cut && shape_action_.after_events <= 0) cut(true);
  if (shape_ == Shape::truncate && shape_action_.bytes <= 0 && !rh.no_body) cut(false);
}

void HttpSession::on_response_body(std::string_view raw, std::string_view data) {
  switch (shape_) {
    case Shape::truncate:
    case Shape::sse_cut:
    case Shape::sse_delay:
      if (shape_ == Shape::truncate) {
        const uint64_t left = static_cast<uint64_t>(shape_action_.bytes) - shaped_bytes_;
        const std::string_view part = data.substr(0, static_cast<size_t>(std::min<uint64_t>(left, data.size())));
        shaped_bytes_ += part.size();
        emit_body(part);
        if (shaped_bytes_ >= static_cast<uint64_t>(shape_action_.bytes)) cut(false);
      } else {
        emit_events(data);
      }
      return;
    default:
      emit(raw);
  }
}

void HttpSession::on_response_end(std::string_view raw) {
  resp_done_ = true;
  action_timer_.stop();
  if (!client_) {  // drop { after_forward }: the client is gone, the upstream has answered
    drop_upstream();
    return;
  }
  switch (shape_) {
    case Shape::truncate:
    case Shape::sse_cut:
    case Shape::sse_delay:
      if (cut_pending_) break;
      if (sse_.finish() && !sse_partial_.empty()) {  // a last event ended by the end of the body
        emit_body(sse_partial_);
        sse_partial_.clear();
      }
      if (!sse_partial_.empty()) emit_body(sse_partial_);
      sse_partial_.clear();
      if (resp_chunked_) emit("0\r\n\r\n", shape_ == Shape::sse_delay ? last_due_us_ : 0);
      break;
    default:
      emit(raw);
  }
  maybe_finish_exchange();
}

void HttpSession::on_upstream_eof() {
  if (phase_ == Phase::tunnel) {
    if (client_) client_->shutdown();
    if (client_ == nullptr || client_->peer_eof()) close_everything(false);
    return;
  }
  if (phase_ == Phase::forwarding && !resp_done_) {
    if (retry_on_fresh_upstream("closed")) return;
    if (!resp_started_ && up_in_.empty() && resp_.idle()) {
      upstream_failed(502, "upstream_closed",
                      "faultline: upstream " + proxy_.spec->upstream + " closed the connection without responding");
      return;
    }
    resp_events_.clear();
    resp_.feed_eof(resp_events_);
    in_response_ = true;  // a finished exchange starts the next request only after this
    for (const auto& ev : resp_events_) {
      if (ev.kind == http::EventKind::end) {
        drop_upstream();
        on_response_end({});
      } else if (ev.kind == http::EventKind::error) {
        in_response_ = false;
        flush_client_batch();
        upstream_failed(502, "upstream_closed", "faultline: upstream " + proxy_.spec->upstream +
                                                    " closed the connection before the response ended");
        return;
      }
    }
    in_response_ = false;
    flush_client_batch();
  }
  drop_upstream();
  if (repump_ && !closing_) {
    repump_ = false;
    pump();
    update_reading();
  }
}

void HttpSession::on_upstream_error(const std::string& why, bool reset) {
  const std::string what = "faultline: upstream " + proxy_.spec->upstream + ": " + why;
  if (phase_ == Phase::forwarding && !resp_done_) {
    if (retry_on_fresh_upstream(why)) return;
    spdlog::warn("{} {}", tag(), what.substr(11));
    detach_upstream();  // it closes by itself
    upstream_failed(502, "upstream_unreachable", what);
    if (reset && client_) close_everything(true);
    return;
  }
  spdlog::debug("{} {}", tag(), what);
  detach_upstream();
  if (phase_ == Phase::tunnel) close_everything(reset);
}

void HttpSession::on_upstream_closed(Conn& c) {
  if (upstream_ == &c)
    upstream_ = nullptr;
  else
    upstreams_closing_ -= 1;
  maybe_delete();
}

// The upstream failed before the response was complete: a JSON error if nothing was sent yet, else the
// client's connection is cut (it cannot be told anything else mid-body).
void HttpSession::upstream_failed(int status, const std::string& type, const std::string& why) {
  if (type != "upstream_unreachable" && type != "bad_upstream_response")  // those two were logged already
    spdlog::warn("{} {} ({} {})", tag(), why.substr(11), head().method, head().target);
  drop_upstream();
  if (!client_ || closing_) {
    close_everything(false);
    return;
  }
  if (resp_started_) {
    close_everything(true);
    return;
  }
  phase_ = Phase::answered;
  keep_client_ = false;
  to_client(serialize_response(error_response(status, type, why), true, head().method == "HEAD"));
  resp_started_ = true;
  resp_done_ = true;
  finish_client(false);
}

// upstream = "mock": chat completions get the openai_api defaults, anything else a 404 like the API's.
void HttpSession::mock_respond() {
  const std::string path = head().path();
  const bool chat = head().method == "POST" && path.ends_with("/chat/completions");
  faults::ActionSpec a;
  if (chat) {
    http::RequestMessage msg(head(), ordinal_);
    msg.set_body(body_);
    const nlohmann::json* stream = msg.json_field("stream");
    a = stream && stream->is_boolean() && stream->get<bool>() ? *proxy_.spec->mock_stream : *proxy_.spec->mock_completion;
  } else {
    a = error_response(404, "invalid_request_error",
                       "Invalid URL (" + head().method + " " + path + "): faultline's mock serves POST .../chat/completions",
                       false);
  }
  // Through the response path, so sse_cut, truncate and the rest act on mock answers too.
  resp_ = http::ResponseParser();
  resp_.expect_response_to(head().method);
  handle_response_events(serialize_response(a, false, false));
}

// Closes the upstream connection; its close callback still comes here (counted), so the session outlives it.
void HttpSession::drop_upstream() {
  if (!upstream_) return;
  Conn* c = upstream_;
  detach_upstream();
  c->close();
}

void HttpSession::detach_upstream() {
  up_batch_.clear();
  retire_upstream_chain();
  if (!upstream_) return;
  upstream_ = nullptr;
  upstreams_closing_ += 1;
}

// --- response shaping --------------------------------------------------------------------------------------

void HttpSession::emit(std::string_view bytes, uint64_t due_us) {
  if (bytes.empty() || !client_ || shape_ == Shape::discard) return;
  if (shape_ == Shape::throttle) {
    // Slices of 1/20 s each, released on the byte schedule the rate gives.
    const uint64_t rate = static_cast<uint64_t>(std::max<int64_t>(1, shape_action_.bytes_per_second));
    const size_t slice = static_cast<size_t>(std::max<uint64_t>(1, rate / 20));
    for (size_t at = 0; at < bytes.size(); at += slice) {
      const std::string_view part = bytes.substr(at, slice);
      shaped_bytes_ += part.size();
      pieces_.push_back({shape_start_us_ + shaped_bytes_ * 1000000 / rate, std::string(part)});
      pieces_bytes_ += part.size();
    }
    drain_pieces();
    return;
  }
  if (shape_ == Shape::delay_response) due_us = std::max(due_us, last_due_us_);
  if (due_us == 0 && pieces_.empty()) {
    if (in_response_) {
      batch_.append(bytes);  // one write per upstream read, not one per event
      return;
    }
    to_client(bytes);
    return;
  }
  pieces_.push_back({due_us, std::string(bytes)});
  pieces_bytes_ += bytes.size();
  drain_pieces();
}

// Decoded body bytes out again: re-framed as one chunk when the response is chunked.
void HttpSession::emit_body(std::string_view data) {
  if (data.empty()) return;
  const uint64_t due = shape_ == Shape::sse_delay ? last_due_us_ : 0;
  if (!resp_chunked_) {
    emit(data, due);
    return;
  }
  std::string framed = hex(data.size()) + "\r\n";
  framed.append(data);
  framed += "\r\n";
  emit(framed, due);
}

// Whole events only: sse_cut forwards N of them then cuts; sse_delay holds each one `ms` after the last.
void HttpSession::emit_events(std::string_view data) {
  size_t from = 0;
  for (size_t end : sse_.feed(data)) {
    if (cut_pending_) return;
    std::string event = std::move(sse_partial_);
    sse_partial_.clear();
    event.append(data.substr(from, end - from));
    from = end;
    if (shape_ == Shape::sse_delay)
      last_due_us_ = std::max(last_due_us_, now_us()) + static_cast<uint64_t>(shape_action_.ms) * 1000;
    emit_body(event);
    ++events_sent_;
    if (shape_ == Shape::sse_cut && events_sent_ >= static_cast<uint64_t>(shape_action_.after_events)) {
      cut(true);
      return;
    }
  }
  sse_partial_.append(data.substr(from));
}

// Ends the response early once what was emitted has gone out: the upstream connection cannot be reused, the
// client sees the body stop short (truncate: FIN; sse_cut: a reset, as a network failure would).
void HttpSession::cut(bool rst) {
  if (cut_pending_) return;
  spdlog::debug("{} cutting the response ({})", tag(), rst ? "reset" : "close");
  cut_pending_ = true;
  cut_rst_ = rst;
  drop_upstream();
  drain_pieces();
}

void HttpSession::drain_pieces() {
  if (!client_ || closing_) return;
  const uint64_t now = now_us();
  while (!pieces_.empty() && pieces_.front().due_us <= now + 500) {
    if (client_backlog() > Conn::kHighWater) return;  // on_client_drain resumes
    // Off the queue before it is sent: sending may run a toxic that ends the connection.
    const Piece piece = std::move(pieces_.front());
    pieces_.pop_front();
    pieces_bytes_ -= piece.bytes.size();
    to_client(piece.bytes);
    if (!client_ || closing_) return;
  }
  if (!pieces_.empty()) {
    piece_timer_.start(pieces_.front().due_us - now);
    return;
  }
  if (cut_pending_) {
    finish_client(cut_rst_);
    return;
  }
  maybe_finish_exchange();
}

void HttpSession::flush_client_batch() {
  if (batch_.empty()) return;
  std::string bytes = std::move(batch_);
  batch_.clear();
  to_client(bytes);
}

void HttpSession::to_client(std::string_view bytes) {
  flush_client_batch();  // whatever was gathered goes first
  if (!client_ || bytes.empty()) return;
  if (!down_chain_) {
    client_->write(bytes);
    return;
  }
  if (chain_aborted_) return;
  faults::Chunk chunk;
  chunk.buf = faults::Buffer::copy_of(bytes);
  chunk.len = bytes.size();
  chunk.offset = down_offset_;
  chunk.arrived_us = now_us();
  down_offset_ += bytes.size();
  in_down_push_ = true;
  down_chain_->push(std::move(chunk));
  in_down_push_ = false;
}

// Bytes written to the client but not yet out: in the socket's queue, or held by its toxics.
size_t HttpSession::client_backlog() const {
  if (!client_) return 0;
  return client_->queued() + (down_chain_ && !chain_aborted_ ? down_chain_->buffered() : 0);
}

void HttpSession::start_toxics() {
  Runtime& rt = worker_.runtime();
  ActiveToxics active = decide_toxics(rt, proxy_, id_, ordinal_, tag());
  faults::ToxicContext ctx{rt.scenario.seed, proxy_.spec->name, "", ordinal_};
  down_out_.s = this;
  down_out_.downstream = true;
  up_specs_ = std::move(active.upstream);
  toxic_ctx_ = ctx;
  if (!active.downstream.empty())
    down_chain_ = std::make_unique<faults::ToxicChain>(active.downstream, ctx, worker_.env(), down_out_);
  if (down_chain_) down_chain_->start();
}

void HttpSession::start_upstream_chain() {
  if (up_specs_.empty() || !upstream_) return;
  retire_upstream_chain();
  up_ = std::make_unique<UpChain>();
  up_->out.s = this;
  up_->out.downstream = false;
  up_->chain = std::make_unique<faults::ToxicChain>(up_specs_, toxic_ctx_, worker_.env(), up_->out);
  up_->chain->start();
}

void HttpSession::retire_upstream_chain() {
  if (!up_) return;
  up_->out.live = false;
  retired_up_.push_back(std::move(up_));
}

size_t HttpSession::pending_output() const { return pieces_bytes_ + (client_ ? client_backlog() : 0); }

// --- exchange and connection ends ---------------------------------------------------------------------------

void HttpSession::maybe_finish_exchange() {
  if (closing_ || !client_) return;
  if (!(req_done_ && resp_done_) || !pieces_.empty() || cut_pending_) return;
  if (upgrade_pending_ && resp_.in_tunnel()) return;  // a 101: the upgrade event comes next
  if (phase_ != Phase::forwarding && phase_ != Phase::answered) return;
  if (!reuse_upstream_) drop_upstream();
  if (!keep_client_) {
    finish_client(false);
    return;
  }
  reset_exchange();
  if (in_response_) {
    repump_ = true;
    return;
  }
  pump();
  update_reading();
}

void HttpSession::reset_exchange() {
  phase_ = Phase::idle;
  req_done_ = false;
  resp_done_ = false;
  resp_started_ = false;
  upgrade_pending_ = false;
  drop_after_forward_ = false;
  shape_ = Shape::pass;
  fired_.reset();
  held_.clear();
  body_.clear();
}

// Closes the client after what was written has gone out: FIN (then a short linger for the client's own),
// or a reset.
void HttpSession::finish_client(bool rst) {
  if (!client_ || closing_) return;
  flush_client_batch();
  closing_ = true;
  piece_timer_.stop();
  if (drop_after_forward_ && phase_ == Phase::forwarding) {
    shape_ = Shape::discard;  // the upstream's answer is read and dropped
  } else {
    phase_ = Phase::closing;
    action_timer_.stop();
    drop_upstream();
  }
  if (client_backlog() > 0) {
    close_when_flushed_ = true;
    close_rst_ = rst;
    return;
  }
  if (rst) {
    close_everything(true);
    return;
  }
  client_->shutdown();
  close_timer_.start(kLingerMs * 1000);
}

// The client connection only: an idle upstream connection is parked, a dropped request's upstream still
// answers (on_client_closed decides).
void HttpSession::close_client(bool rst) {
  closing_ = true;
  if (client_) client_->close(rst);
}

void HttpSession::close_everything(bool rst) {
  closing_ = true;
  drop_upstream();
  if (client_) {
    client_->close(rst);
  } else {
    maybe_delete();
  }
}

void HttpSession::force_close() { close_everything(false); }

// Reads only what can be handled: the client while its unparsed bytes and the upstream's queue are small, the
// upstream while the client's queue is.
void HttpSession::update_reading() {
  if (!client_ || client_closed_) return;
  const bool up_full = upstream_ && upstream_->queued() > Conn::kHighWater;
  // The request held by delay()/hang() counts too: a client streaming a large body is paused, not buffered.
  if (closing_ || (in_.size() < kMaxUnparsed && held_.size() < kMaxHeld && !up_full))
    client_->read_start();
  else
    client_->read_stop();
  if (upstream_ && !upstream_->closing()) {
    if (pending_output() > Conn::kHighWater)
      upstream_->read_stop();
    else
      upstream_->read_start();
  }
}

}  // namespace faultline::proxy
