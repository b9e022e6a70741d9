// The message session: protocol-neutral request/reply proxying with rules, a reply queue and toxics.
#include "proxy/message_session.h"

#include <spdlog/spdlog.h>

#include "proxy/toxic_decision.h"

namespace faultline::proxy {

namespace {
constexpr uint64_t kConnectTimeoutMs = 5000;
constexpr uint64_t kLingerMs = 2000;     // after our FIN, wait this long for the peer's
constexpr size_t kResendMax = 64 * 1024;  // requests up to this size go again after a stale pooled connection
uint64_t now_us() { return uv_hrtime() / 1000; }
}  // namespace

template <typename F>
void MessageSession::guard(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {  // never across a libuv callback: close this session only
    spdlog::error("{} closing after an internal error: {}", tag(), e.what());
    close_everything(false);
  }
}

// --- handlers ---------------------------------------------------------------------------------------------

void MessageSession::ClientHandler::on_data(Conn&, std::string_view bytes) {
  s->guard([&] { s->on_client_data(bytes); });
}
void MessageSession::ClientHandler::on_eof(Conn&) { s->guard([&] { s->on_client_eof(); }); }
void MessageSession::ClientHandler::on_error(Conn& c, const std::string& why, bool reset) {
  if (why.rfind("TLS", 0) == 0)
    spdlog::warn("{} client {}: {}", s->tag(), c.peer(), why);
  else
    spdlog::debug("{} client {}: {}", s->tag(), c.peer(), why);
  s->guard([&] {
    // As the upstream's peer would have seen it: a reset is passed on; a client that is simply gone leaves
    // a drop { after_forward } to finish.
    s->client_closing_ = true;
    if (s->draining_upstream_) return;
    if (!s->traits_.pooled_upstream)
      s->close_upstream(reset);
    else if (s->awaited_ > 0 || s->protocol_->tunnel())
      s->drop_upstream(reset);
  });
}
void MessageSession::ClientHandler::on_drain(Conn&) { s->guard([&] { s->on_client_drain(); }); }
void MessageSession::ClientHandler::on_closed(Conn&) {
  s->client_ = nullptr;
  s->client_closing_ = true;
  s->hold_timer_.stop();
  s->pace_timer_.stop();
  s->paced_.clear();
  s->paced_bytes_ = 0;
  if (!s->draining_upstream_) s->guard([&] { s->close_upstream(false); });  // an idle pooled one is parked
  s->client_gone_ = true;
  s->maybe_delete();
}

void MessageSession::UpstreamHandler::on_connected(Conn& c) {
  if (&c != s->upstream_) return;
  // Over TLS the upstream counts as reached once it has said something: a failed handshake (a certificate
  // that does not verify) is reported to the client like an unreachable upstream.
  if (!s->proxy_.upstream_tls) s->upstream_up_ = true;
  s->guard([&] { s->update_reading(); });
}
void MessageSession::UpstreamHandler::on_data(Conn& c, std::string_view bytes) {
  if (&c != s->upstream_) return;
  s->upstream_up_ = true;
  s->guard([&] { s->on_upstream_data(bytes); });
}
void MessageSession::UpstreamHandler::on_eof(Conn& c) {
  if (&c == s->upstream_) s->guard([&] { s->on_upstream_eof(); });
}
void MessageSession::UpstreamHandler::on_error(Conn& c, const std::string& why, bool reset) {
  if (&c == s->upstream_) s->guard([&] { s->on_upstream_error(why, reset); });
}
void MessageSession::UpstreamHandler::on_drain(Conn&) { s->guard([&] { s->update_reading(); }); }
void MessageSession::UpstreamHandler::on_closed(Conn& c) {
  if (&c != s->upstream_) {  // one let go of
    s->upstreams_closing_ -= 1;
    s->maybe_delete();
    return;
  }
  s->upstream_ = nullptr;
  s->upstream_closing_ = true;
  s->draining_upstream_ = false;
  if (s->up_) s->up_->out.conn = nullptr;
  // The upstream is gone: what it still owed the client will not come (an unreachable one is reported
  // when the client first needs it). A pooled one is replaced by the next request that needs it.
  if (!s->traits_.pooled_upstream && s->client_ && !s->client_closing_ && s->unreachable_.empty())
    s->guard([&] { s->finish_client(false); });
  if (s->traits_.pooled_upstream) s->upstream_closing_ = false;
  s->maybe_delete();
}

void MessageSession::ChainOut::push(faults::Chunk chunk) {
  if (downstream) {
    if (s->client_ && !s->client_->closing()) s->client_->write(chunk.view());
    // Bytes a toxic let go from its own timer: what waited on the backlog may go on. Not when the push
    // comes straight through from write_client(): the caller is in the middle of sending.
    if (!s->in_down_push_) s->guard([&] { s->on_client_drain(); });
  } else if (conn && conn == s->upstream_ && !s->upstream_closing_) {
    conn->write(chunk.view());
  }
}

void MessageSession::ChainOut::end() {
  if (downstream) s->guard([&] { s->shutdown_client(); });
}

// A toxic ended the connection (reset_peer, timeout, limit_data): a reset at once, a close after what was
// already let through.
void MessageSession::ChainOut::abort(bool rst) {
  if (!downstream && conn == nullptr) return;  // the chain of a connection let go of
  s->guard([&] {
    (downstream ? s->down_aborted_ : s->up_aborted_) = true;
    if (rst) {
      s->close_everything(true);
      return;
    }
    s->client_closing_ = true;
    s->shutdown_client();
    s->close_upstream(false);
  });
}

// --- life cycle -------------------------------------------------------------------------------------------

MessageSession::MessageSession(Worker& worker, ProxyRuntime& proxy)
    : worker_(worker),
      proxy_(proxy),
      hold_timer_(worker.loop(), [this] { guard([this] { release_hold(); }); }),
      linger_timer_(worker.loop(), [this] { close_everything(false); }),
      reply_timer_(worker.loop(), [this] { guard([this] {
        if (awaited_ == 0 || reply_begun_) return;
        fail_upstream(Failure::timeout, "faultline: upstream " + proxy_.spec->upstream + " sent no response within " +
                                            std::to_string(proxy_.spec->upstream_timeout_ms) + " ms");
      }); }),
      pace_timer_(worker.loop(), [this] { guard([this] { drain_paced(); }); }) {
  client_handler_.s = this;
  upstream_handler_.s = this;
  down_out_.s = this;
  down_out_.downstream = true;
  proxy_.active.fetch_add(1, std::memory_order_relaxed);
  worker_.add(this);
}

MessageSession::~MessageSession() {
  up_.reset();  // their timers go before the members they push into
  retired_up_.clear();
  down_chain_.reset();
  proxy_.active.fetch_sub(1, std::memory_order_relaxed);
  worker_.remove(this);
}

std::string MessageSession::tag() const { return "[" + proxy_.spec->name + " #" + std::to_string(id_) + "]"; }

void MessageSession::accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server, Factory factory) {
  auto* s = new MessageSession(worker, proxy);
  std::string why;
  s->client_ = Conn::accept(worker, server, &s->client_handler_, &why);
  if (!s->client_) {
    spdlog::warn("[{}] accept failed: {}", proxy.spec->name, why);
    delete s;
    return;
  }
  s->id_ = worker.runtime().next_conn_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->ordinal_ = proxy.connections.fetch_add(1, std::memory_order_relaxed) + 1;
  s->protocol_ = factory(proxy, s->ordinal_, s->client_->peer());
  s->traits_ = s->protocol_->traits();
  if (proxy.listen_tls) s->client_->use_tls_server(proxy.listen_tls.get());
  spdlog::debug("{} accepted {} (connection {} of the proxy)", s->tag(), s->client_->peer(), s->ordinal_);
  s->start_toxics();
  if (s->closing_) return;
  if (!s->traits_.pooled_upstream) s->ensure_upstream();
  s->client_->read_start();
}

void MessageSession::start_toxics() {
  Runtime& rt = worker_.runtime();
  ActiveToxics active = decide_toxics(rt, proxy_, id_, ordinal_, tag());
  toxic_ctx_ = faults::ToxicContext{proxy_.seed, proxy_.spec->name, "", ordinal_};
  up_specs_ = std::move(active.upstream);
  if (!active.downstream.empty()) {
    down_chain_ = std::make_unique<faults::ToxicChain>(active.downstream, toxic_ctx_, worker_.env(), down_out_);
    down_chain_->start();
  }
}

// Toxiproxy's semantics: a toxic added, changed or removed through the API acts on open connections too:
// the client's chain at once; upstream, the current connection's chain and those of later connections.
void MessageSession::apply_toxic_change(const ToxicChange& change) {
  if (closing_) return;
  guard([&] {
    auto active = [this](const faults::ToxicSpec* spec) {
      if (spec->stream == faults::Stream::upstream) return std::find(up_specs_.begin(), up_specs_.end(), spec) != up_specs_.end();
      return down_chain_ && down_chain_->find(spec) < down_chain_->size();
    };
    const auto edit = decide_change(worker_.runtime(), change, id_, ordinal_, tag(), active);
    if (!edit) return;
    if (edit->stream == faults::Stream::upstream) {
      apply_edit(up_specs_, *edit, proxy_);
      if (up_aborted_ || upstream_closing_) return;
      if (up_)
        apply_edit(*up_->chain, *edit, proxy_);
      else if (upstream_ && edit->op != ToxicEdit::Op::remove)
        start_upstream_chain();  // this connection's first toxic
    } else {
      if (down_aborted_ || !client_ || client_closing_) return;
      if (!down_chain_) {
        down_chain_ = std::make_unique<faults::ToxicChain>(std::vector<const faults::ToxicSpec*>{}, toxic_ctx_,
                                                           worker_.env(), down_out_);
        down_chain_->start();
      }
      apply_edit(*down_chain_, *edit, proxy_);
    }
    update_reading();
  });
}

// --- upstream connections ---------------------------------------------------------------------------------

// A connection for what goes upstream next: one of the pool's (pooled protocols) or a new one.
void MessageSession::ensure_upstream() {
  if (upstream_ || closing_) return;
  upstream_reused_ = false;
  if (traits_.pooled_upstream) upstream_ = worker_.take_idle(&proxy_);
  if (upstream_) {
    upstream_reused_ = true;
    upstream_up_ = true;
    upstream_->set_handler(&upstream_handler_);
  } else {
    upstream_up_ = false;
    upstream_ = Conn::connect(worker_, proxy_.upstream, &upstream_handler_, kConnectTimeoutMs);
    if (proxy_.upstream_tls && !traits_.tls_request.empty())
      upstream_->use_tls_client_after(proxy_.upstream_tls.get(), proxy_.upstream.host, proxy_.spec->tls_verify,
                                      traits_.tls_request, traits_.tls_ok);
    else if (proxy_.upstream_tls)
      upstream_->use_tls_client(proxy_.upstream_tls.get(), proxy_.upstream.host, proxy_.spec->tls_verify);
  }
  upstream_closing_ = false;
  keep_upstream_ = true;
  up_in_.clear();
  start_upstream_chain();
  upstream_->read_start();
}

void MessageSession::start_upstream_chain() {
  if (up_) {
    up_->out.conn = nullptr;
    retired_up_.push_back(std::move(up_));
  }
  up_aborted_ = false;
  if (up_specs_.empty() || !upstream_) return;
  up_ = std::make_unique<UpChain>();
  up_->out.s = this;
  up_->out.conn = upstream_;
  up_->chain = std::make_unique<faults::ToxicChain>(up_specs_, toxic_ctx_, worker_.env(), up_->out);
  up_->chain->start();
}

// Lets go of the current upstream connection (pooled protocols): it closes; its close is still reported
// here (counted), so the session outlives it.
void MessageSession::drop_upstream(bool rst) {
  if (!upstream_) return;
  Conn* c = upstream_;
  upstream_ = nullptr;
  upstreams_closing_ += 1;
  if (up_) {
    up_->out.conn = nullptr;
    retired_up_.push_back(std::move(up_));
  }
  up_in_.clear();
  c->close(rst);
}

// The client is done with the upstream: an idle pooled connection goes back to the pool, anything else
// closes.
void MessageSession::release_upstream() {
  if (!upstream_) return;
  // (Once the client is gone the connection closes even when idle: its close callback is what lets this
  // session end.)
  const bool idle = !client_gone_ && awaited_ == 0 && keep_upstream_ && upstream_->connected() && !upstream_->closing() &&
                    !upstream_->peer_eof() && up_in_.empty() && !protocol_->tunnel() &&
                    (!up_ || up_->chain->buffered() == 0);
  if (!idle) {
    drop_upstream();
    return;
  }
  Conn* c = upstream_;
  upstream_ = nullptr;
  if (up_) {
    up_->out.conn = nullptr;
    retired_up_.push_back(std::move(up_));
  }
  worker_.park_idle(&proxy_, c);
}

// A reused pooled connection failed before any byte of the reply: the upstream had closed it while idle (a
// keep-alive timeout), so the request never reached it. Once, on a new connection, as browsers and proxies do.
bool MessageSession::retry_stale(const std::string& why) {
  if (!upstream_reused_ || !resend_ok_ || reply_begun_ || !up_in_.empty() || awaited_ == 0) return false;
  spdlog::debug("{} reused upstream connection failed ({}); sending the request again on a new one", tag(), why);
  std::string bytes = std::move(resend_);
  resend_.clear();
  resend_ok_ = false;
  drop_upstream();
  upstream_ = Conn::connect(worker_, proxy_.upstream, &upstream_handler_, kConnectTimeoutMs);
  if (proxy_.upstream_tls)
    upstream_->use_tls_client(proxy_.upstream_tls.get(), proxy_.upstream.host, proxy_.spec->tls_verify);
  upstream_reused_ = false;
  upstream_up_ = false;
  upstream_closing_ = false;
  keep_upstream_ = true;
  start_upstream_chain();
  upstream_->read_start();
  write_upstream(bytes);
  return true;
}

// The upstream will not answer what is awaited (pooled protocols): the client hears the protocol's error in
// place of the reply (or a reset when a reply had begun), then is closed.
void MessageSession::fail_upstream(Failure failure, const std::string& why) {
  spdlog::warn("{} {}", tag(), why.rfind("faultline: ", 0) == 0 ? why.substr(11) : why);
  reply_timer_.stop();
  drop_upstream();
  if (!client_ || client_closing_) {
    close_everything(false);
    return;
  }
  const FailureReply reply = protocol_->upstream_failure(failure, why);
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (it->kind == Slot::Kind::forwarded)
      it = slots_.erase(it);
    else
      ++it;
  }
  awaited_ = 0;
  if (reply.reset) {
    close_everything(true);
    return;
  }
  deliver_ready();
  flush_client();
  if (!reply.bytes.empty() && !client_closing_) write_client(reply.bytes);
  finish_client(false);
}

void MessageSession::pooled_upstream_eof() {
  if (protocol_->tunnel()) {
    tunnel_eof(false);
    return;
  }
  if (draining_upstream_ || awaited_ == 0) {  // a kept-alive connection closed between requests
    spdlog::debug("{} idle upstream connection closed", tag());
    drop_upstream();
    if (draining_upstream_) {
      draining_upstream_ = false;
      maybe_delete();
    }
    return;
  }
  if (retry_stale("closed")) return;
  ReplyUnit unit = protocol_->reply_eof();
  if (unit.kind == ReplyUnit::Kind::frame) {  // a body that ends with the connection
    drop_upstream();
    flush_client();
    if (!client_closing_ && unit.replaced) emit(unit.bytes, unit.after_us, unit.rate);
    reply_done(unit);
    resume_client();
    update_reading();
    return;
  }
  const std::string upstream = "faultline: upstream " + proxy_.spec->upstream;
  fail_upstream(Failure::closed, unit.kind == ReplyUnit::Kind::error
                                     ? upstream + " " + unit.why
                                     : upstream + " closed the connection without responding");
}

void MessageSession::pooled_upstream_error(const std::string& why, bool reset) {
  const std::string what = "faultline: upstream " + proxy_.spec->upstream + ": " + why;
  if (protocol_->tunnel()) {
    spdlog::debug("{} {}", tag(), what);
    drop_upstream();
    close_everything(reset);
    return;
  }
  if (draining_upstream_ || awaited_ == 0) {
    spdlog::debug("{} {}", tag(), what);
    drop_upstream();
    if (draining_upstream_) {
      draining_upstream_ = false;
      maybe_delete();
    }
    return;
  }
  if (retry_stale(why)) return;
  fail_upstream(Failure::unreachable, what);
  if (reset && client_ && !closing_) close_everything(true);
}

// A tunnel passes each side's FIN on; both sent: done.
void MessageSession::tunnel_eof(bool from_client) {
  if (from_client) {
    if (upstream_) upstream_->shutdown();
    if (!upstream_ || upstream_->peer_eof()) close_everything(false);
    return;
  }
  if (client_) client_->shutdown();
  if (!client_ || client_eof_) close_everything(false);
}

void MessageSession::arm_reply_timer() {
  reply_begun_ = false;
  reply_asked_us_ = now_us();
  if (traits_.reply_timeout && proxy_.spec->upstream_timeout_ms > 0)
    reply_timer_.start(static_cast<uint64_t>(proxy_.spec->upstream_timeout_ms) * 1000);
}

void MessageSession::force_close() { close_everything(false); }

void MessageSession::maybe_delete() {
  if (client_gone_ && upstream_ == nullptr && upstreams_closing_ == 0) delete this;
}

// --- client -> upstream -----------------------------------------------------------------------------------

// Parsed straight from the read when nothing is left over from the last one; only an incomplete tail (or
// everything after a held request) is copied.
void MessageSession::on_client_data(std::string_view bytes) {
  retired_up_.clear();
  proxy_.bytes_up.fetch_add(bytes.size(), std::memory_order_relaxed);
  if (client_closing_ || closing_ || stop_input_) return;
  if (in_.empty()) {
    const size_t used = process_client(bytes);
    if (used < bytes.size()) in_.assign(bytes.substr(used));
  } else {
    in_.append(bytes);
    resume_client();
  }
  update_reading();
}

void MessageSession::resume_client() {
  if (processing_ || in_.empty()) return;
  const size_t used = process_client(in_);
  if (used > 0) in_.erase(0, used);  // once per call, however many requests it held
  maybe_done();
}

// Handles the requests in `in` in order until one must wait; returns the bytes consumed.
size_t MessageSession::process_client(std::string_view in) {
  processing_ = true;
  size_t pos = 0;
  while (pos < in.size() && !closing_ && !client_closing_ && !stop_input_ && !held_) {
    if (!slots_.empty() && (awaited_ >= kMaxSlots || protocol_->wait_for_replies())) break;
    ClientUnit unit = protocol_->client(in.substr(pos));
    if (unit.kind == ClientUnit::Kind::more) break;
    const std::string_view raw = in.substr(pos, unit.size);
    switch (unit.kind) {
      case ClientUnit::Kind::pass:
        send_upstream(raw);
        await_replies(unit.slots, unit.tag, true);
        if (!unit.synthetic.empty()) take_synthetic(unit.synthetic);
        break;
      case ClientUnit::Kind::skip:
        break;
      case ClientUnit::Kind::answer:
        enqueue_injected(std::move(unit.reply), false);
        break;
      case ClientUnit::Kind::error:
        spdlog::warn("{} bad request from {}: {}", tag(), client_ ? client_->peer() : "?", unit.why);
        if (traits_.pooled_upstream && protocol_->request_open() && awaited_ > 0) {
          // The upstream holds half of this request: its reply will not come.
          up_pending_ = {};
          drop_upstream();
          reply_timer_.stop();
          for (auto it = slots_.begin(); it != slots_.end();)
            it = it->kind == Slot::Kind::forwarded ? slots_.erase(it) : std::next(it);
          awaited_ = 0;
        }
        if (!unit.reply.empty()) enqueue_injected(std::move(unit.reply), false);
        enqueue_close(false, false);
        pos = in.size();  // nothing after it is read
        continue;
      case ClientUnit::Kind::message:
        if (!decide(unit, raw)) {
          flush_upstream();
          processing_ = false;
          return pos;  // held: it stays first in what is kept
        }
        break;
      case ClientUnit::Kind::more:
        break;
    }
    pos += unit.size;
    if (unarmed_close_ && !protocol_->request_open()) arm_close();
  }
  flush_upstream();
  processing_ = false;
  report_unreachable();
  return pos;
}

// The rules decide one request. False when it is held (delay, hang).
bool MessageSession::decide(const ClientUnit& unit, std::string_view raw) {
  proxy_.messages.fetch_add(1, std::memory_order_relaxed);
  std::optional<faults::RuleEngine::Fired> fired;
  if (proxy_.rules && unit.msg) {
    const double now_s = proxy_.seconds();
    fired = proxy_.rules->evaluate(*unit.msg, id_, now_s);
  }
  if (!fired) {
    forward_current(raw);
    return true;
  }
  const faults::ActionSpec& a = fired->action;
  spdlog::debug("{} rule '{}' fires: {}", tag(), fired->rule->name, a.name());
  using T = faults::ActionSpec::Type;
  switch (a.type) {
    case T::pass:
      forward_current(raw);
      return true;
    case T::delay:
      held_ = unit;
      hold_ = Hold::delaying;
      hold_timer_.start(static_cast<uint64_t>(fired_delay_ms(proxy_.seed, *fired)) * 1000);
      return false;
    case T::hang:
      held_ = unit;
      hold_ = Hold::hanging;
      if (a.ms > 0) hold_timer_.start(static_cast<uint64_t>(a.ms) * 1000);
      return false;
    case T::drop:
      if (a.after_forward) {
        // Earlier replies go out, then the client is closed; the upstream still gets the request and
        // answers it (into the void): "did my COMMIT happen?" The close takes the place of the replies.
        // A request still arriving (an http body) is forwarded whole first.
        const size_t before = slots_.size();
        Slot close;
        close.kind = Slot::Kind::close;
        close.keep_upstream = true;
        close.armed = false;
        slots_.insert(slots_.begin() + static_cast<std::ptrdiff_t>(before), std::move(close));
        unarmed_close_ = true;
        forward_current(raw, /*merge=*/false);
        if (!protocol_->request_open()) arm_close();
        return true;
      }
      enqueue_close(false, false);
      return true;
    case T::reset:
      enqueue_close(true, false);
      return true;
    default: {  // this protocol's own actions (the loader allows no other protocol's)
      Injected injected = protocol_->inject(a);
      if (injected.forward) {  // it shapes the reply
        forward_current(raw);
        return true;
      }
      enqueue_injected(std::move(injected.bytes), injected.close_after);
      if (!injected.upstream.empty()) {
        flush_upstream();
        write_upstream(injected.upstream);
      }
      await_replies(injected.upstream_slots, injected.upstream_tag, true);
      return true;
    }
  }
}

void MessageSession::forward_current(std::string_view raw, bool merge) {
  Forward f = protocol_->forward();
  if (traits_.pooled_upstream && awaited_ == 0) {
    // A request starts on the current connection (reused: it may have gone stale) or a new one.
    resend_.clear();
    resend_ok_ = true;
    upstream_reused_ = upstream_ != nullptr;
  }
  if (f.raw) {
    send_upstream(raw);
  } else if (!f.bytes.empty()) {
    flush_upstream();
    write_upstream(f.bytes);
  }
  await_replies(f.slots, f.tag, merge);
  if (!f.local.empty()) enqueue_injected(std::move(f.local), false);
  if (!f.synthetic.empty()) take_synthetic(f.synthetic);
}

// A reply made without an upstream (http's mock), read as if the upstream had sent it.
void MessageSession::take_synthetic(const std::string& bytes) {
  flush_upstream();
  const size_t used = process_replies(bytes);
  if (used < bytes.size()) spdlog::debug("{} {} byte(s) of a made reply left unread", tag(), bytes.size() - used);
}

// The close of a drop { after_forward } whose request has now gone upstream whole.
void MessageSession::arm_close() {
  unarmed_close_ = false;
  stop_input_ = true;
  for (Slot& slot : slots_)
    if (slot.kind == Slot::Kind::close) slot.armed = true;
  deliver_ready();
}

// A delay is over (forward the request, go on with what came after it), or a hang with `ms` (close).
void MessageSession::release_hold() {
  if (!held_) return;
  const Hold hold = hold_;
  hold_ = Hold::none;
  if (hold == Hold::hanging) {
    held_.reset();
    spdlog::debug("{} hang over: closing", tag());
    close_everything(false);
    return;
  }
  const size_t size = held_->size;
  held_.reset();
  forward_current(std::string_view(in_).substr(0, size));
  flush_upstream();
  in_.erase(0, size);
  resume_client();
  update_reading();
}

// Forwarded bytes that lie next to each other in the read are written as one.
void MessageSession::send_upstream(std::string_view bytes) {
  if (bytes.empty()) return;
  if (!up_pending_.empty() && up_pending_.data() + up_pending_.size() == bytes.data()) {
    up_pending_ = std::string_view(up_pending_.data(), up_pending_.size() + bytes.size());
    return;
  }
  flush_upstream();
  up_pending_ = bytes;
}

void MessageSession::flush_upstream() {
  if (up_pending_.empty()) return;
  const std::string_view bytes = up_pending_;
  up_pending_ = {};
  write_upstream(bytes);
}

void MessageSession::write_upstream(std::string_view bytes) {
  if (bytes.empty()) return;
  if (traits_.pooled_upstream && !upstream_) ensure_upstream();
  if (!upstream_ || upstream_closing_) return;
  if (resend_ok_ && upstream_reused_) {
    if (resend_.size() + bytes.size() <= kResendMax)
      resend_.append(bytes);
    else
      resend_ok_ = false;
  }
  if (!up_) {
    upstream_->write(bytes);
    return;
  }
  if (up_aborted_) return;
  faults::Chunk chunk;
  chunk.buf = faults::Buffer::copy_of(bytes);
  chunk.len = bytes.size();
  chunk.offset = up_->offset;
  chunk.arrived_us = now_us();
  up_->offset += bytes.size();
  up_->chain->push(std::move(chunk));
}

void MessageSession::on_client_eof() {
  client_eof_ = true;
  if (client_closing_) {  // our FIN went first; this is the answer to it
    if (client_) client_->close();
    return;
  }
  if (protocol_->tunnel()) {
    tunnel_eof(true);
    return;
  }
  // A hang: nothing would ever come of it. Pooled (http): a request held or cut short by the close is
  // not delivered.
  if ((held_ && hold_ == Hold::hanging) ||
      (traits_.pooled_upstream && (held_ || protocol_->request_open() || (!in_.empty() && slots_.empty())))) {
    close_everything(false);
    return;
  }
  if (!in_.empty() && !held_ && !protocol_->wait_for_replies())
    spdlog::debug("{} client closed in the middle of a request ({} bytes)", tag(), in_.size());
  maybe_done();
}

// The client said all it had to say: once everything it asked for is answered, both sides close.
void MessageSession::maybe_done() {
  if (!client_eof_ || held_ || !slots_.empty() || closing_) return;
  close_upstream(false);
  finish_client(false);
}

// --- upstream -> client -----------------------------------------------------------------------------------

void MessageSession::on_upstream_data(std::string_view bytes) {
  proxy_.bytes_down.fetch_add(bytes.size(), std::memory_order_relaxed);
  if (closing_) return;
  retired_up_.clear();
  if (up_in_.empty()) {
    const size_t used = process_replies(bytes);
    if (used < bytes.size() && !closing_) up_in_.assign(bytes.substr(used));
  } else {
    up_in_.append(bytes);
    const size_t used = process_replies(up_in_);
    up_in_.erase(0, used);
  }
  update_reading();
}

// The slot the next reply frame belongs to: the first one, or the one behind the close of a
// drop { after_forward } still waiting for its request to go upstream whole.
std::deque<MessageSession::Slot>::iterator MessageSession::head_slot() {
  auto it = slots_.begin();
  if (it != slots_.end() && it->kind == Slot::Kind::close && !it->armed) ++it;
  return it;
}

size_t MessageSession::process_replies(std::string_view in) {
  size_t pos = 0;
  deliver_ready();
  while (pos < in.size() && !closing_) {
    const auto head = head_slot();
    const bool awaited = head != slots_.end() && head->kind == Slot::Kind::forwarded;
    ReplyUnit unit = protocol_->reply(in.substr(pos), awaited ? head->tag : Protocol::kNoSlot);
    if (unit.kind == ReplyUnit::Kind::more) break;
    if (unit.kind == ReplyUnit::Kind::stray) {
      spdlog::debug("{} {}; not using that upstream connection again", tag(), unit.why);
      drop_upstream();
      pos = in.size();
      break;
    }
    if (unit.kind == ReplyUnit::Kind::error) {
      spdlog::warn("{} bad reply from upstream {}: {}", tag(), proxy_.spec->upstream, unit.why);
      pos = in.size();
      if (traits_.pooled_upstream) {
        flush_client();
        fail_upstream(Failure::bad_reply, "faultline: " + unit.why);
        break;
      }
      flush_client();
      close_everything(false);
      break;
    }
    const std::string_view raw = in.substr(pos, unit.size);
    pos += unit.size;
    if (unit.kind == ReplyUnit::Kind::frame) {
      if (!awaited) spdlog::debug("{} upstream sent a reply no request was waiting for; passed on", tag());
      if (!reply_begun_ && awaited && reply_asked_us_ != 0)
        proxy_.upstream_latency.observe(now_us() - reply_asked_us_);
      reply_begun_ = true;
      reply_timer_.stop();
      resend_ok_ = false;
      resend_.clear();
    }
    const bool quiet = client_closing_ || (!slots_.empty() && slots_.front().kind == Slot::Kind::close);
    if (!quiet) {
      const std::string_view bytes = unit.replaced ? std::string_view(unit.bytes) : raw;
      if (unit.after_us == 0 && unit.rate == 0 && paced_.empty() && !unit.replaced) {
        send_client(raw);
      } else if (!bytes.empty()) {
        flush_client();
        emit(bytes, unit.after_us, unit.rate);
      }
    }
    if (unit.kind == ReplyUnit::Kind::frame && awaited && unit.cut != ReplyUnit::Cut::none) {
      // The rest of this reply is not wanted: the client is closed once what it got has gone out.
      if (--head->count == 0) slots_.erase(head);
      --awaited_;
      if (traits_.pooled_upstream)
        drop_upstream();
      else
        close_upstream(true);
      flush_client();
      enqueue_close(unit.cut == ReplyUnit::Cut::reset, false);
      pos = in.size();
      break;
    }
    if (unit.kind == ReplyUnit::Kind::frame && awaited && unit.ends) reply_done(unit);
  }
  flush_client();
  if (awaited_ < kMaxSlots) resume_client();  // what waited for these replies may go on
  if (slots_.empty()) maybe_done();
  return pos;
}

// The head slot's reply is complete.
void MessageSession::reply_done(const ReplyUnit& unit) {
  const auto head = head_slot();
  if (head != slots_.end() && head->kind == Slot::Kind::forwarded) {
    if (--head->count == 0) slots_.erase(head);
    --awaited_;
  }
  if (unit.upstream_done) keep_upstream_ = false;
  if (traits_.pooled_upstream && awaited_ == 0 && !keep_upstream_ && !draining_upstream_) drop_upstream();
  if (awaited_ > 0) arm_reply_timer();
  deliver_ready();
  if (unit.client_done && !client_closing_) enqueue_close(false, false);
}

// Client output on a schedule: `after_us` after the later of now and the last paced output; with a rate,
// in slices of 1/20 s.
void MessageSession::emit(std::string_view bytes, uint64_t after_us, uint64_t rate) {
  const uint64_t now = now_us();
  if (rate == 0) {
    pace_due_us_ = std::max(pace_due_us_, now) + after_us;
    paced_.push_back({pace_due_us_, std::string(bytes)});
    paced_bytes_ += bytes.size();
  } else {
    const size_t slice = static_cast<size_t>(std::max<uint64_t>(1, rate / 20));
    for (size_t at = 0; at < bytes.size(); at += slice) {
      const std::string_view part = bytes.substr(at, slice);
      pace_due_us_ = std::max(pace_due_us_, now) + part.size() * 1000000 / rate;
      paced_.push_back({pace_due_us_, std::string(part)});
      paced_bytes_ += part.size();
    }
  }
  drain_paced();
}

void MessageSession::drain_paced() {
  if (!client_ || client_closing_ || closing_) return;
  const uint64_t now = now_us();
  while (!paced_.empty() && paced_.front().due_us <= now + 500) {
    if (socket_backlog() > Conn::kHighWater) return;  // on_client_drain goes on
    // Off the queue before it is sent: sending may run a toxic that ends the connection.
    Paced piece = std::move(paced_.front());
    paced_.pop_front();
    paced_bytes_ -= piece.bytes.size();
    write_client_now(piece.bytes);
    if (!client_ || client_closing_ || closing_) return;
  }
  if (!paced_.empty()) {
    pace_timer_.start(paced_.front().due_us - now);
    return;
  }
  if (finish_after_paced_ != 0) {
    const bool rst = finish_after_paced_ == 2;
    finish_after_paced_ = 0;
    finish_client(rst);
    return;
  }
  update_reading();
}

void MessageSession::on_client_drain() {
  if (finish_when_flushed_ && client_ && socket_backlog() == 0) {
    finish_when_flushed_ = false;
    close_everything(true);
    return;
  }
  drain_paced();
  update_reading();
}

// Injected replies and closes at the head of the queue: their turn has come.
void MessageSession::deliver_ready() {
  while (!slots_.empty() && slots_.front().kind != Slot::Kind::forwarded && !closing_) {
    if (slots_.front().kind == Slot::Kind::close && !slots_.front().armed) break;
    Slot slot = std::move(slots_.front());
    slots_.pop_front();
    if (slot.kind == Slot::Kind::injected) {
      if (!client_closing_) {
        flush_client();
        write_client(slot.bytes);
      }
      if (slot.close_after) {
        finish_client(false);
        close_upstream(false);
        return;
      }
      continue;
    }
    // close: a reset goes after what the client was sent
    if (slot.rst) {
      close_upstream(true);
      finish_client(true);
      return;
    }
    if (slot.keep_upstream) {
      draining_upstream_ = true;
      finish_client(false);
    } else {
      finish_client(false);
      close_upstream(false);
    }
    break;
  }
  if (draining_upstream_ && awaited_ == 0) {
    draining_upstream_ = false;
    close_upstream(false);
  }
}

// Reply bytes that lie next to each other in the read are written as one.
void MessageSession::send_client(std::string_view bytes) {
  if (bytes.empty()) return;
  if (!down_pending_.empty() && down_pending_.data() + down_pending_.size() == bytes.data()) {
    down_pending_ = std::string_view(down_pending_.data(), down_pending_.size() + bytes.size());
    return;
  }
  flush_client();
  down_pending_ = bytes;
}

void MessageSession::flush_client() {
  if (down_pending_.empty()) return;
  const std::string_view bytes = down_pending_;
  down_pending_ = {};
  write_client(bytes);
}

void MessageSession::write_client(std::string_view bytes) {
  if (!client_ || bytes.empty()) return;
  if (!paced_.empty()) {  // behind what is paced
    paced_.push_back({pace_due_us_, std::string(bytes)});
    paced_bytes_ += bytes.size();
    return;
  }
  write_client_now(bytes);
}

void MessageSession::write_client_now(std::string_view bytes) {
  if (!client_ || bytes.empty()) return;
  if (!down_chain_) {
    client_->write(bytes);
    return;
  }
  if (down_aborted_) return;
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

void MessageSession::on_upstream_eof() {
  if (upstream_closing_) {  // the answer to our own close
    if (upstream_) upstream_->close();
    return;
  }
  if (traits_.pooled_upstream) {
    pooled_upstream_eof();
    return;
  }
  spdlog::debug("{} upstream closed the connection", tag());
  // What is ready goes out first (injected replies ahead of the first awaited one), then the client is closed.
  deliver_ready();
  flush_client();
  upstream_closing_ = true;
  if (upstream_) upstream_->close();
  finish_client(false);
}

void MessageSession::on_upstream_error(const std::string& why, bool reset) {
  if (!upstream_up_) proxy_.connect_errors.fetch_add(1, std::memory_order_relaxed);
  if (traits_.pooled_upstream) {
    pooled_upstream_error(why, reset);
    return;
  }
  upstream_closing_ = true;
  if (!upstream_up_) {
    unreachable_ = "faultline: upstream " + proxy_.spec->upstream + " unreachable: " + why;
    spdlog::warn("{} {}", tag(), unreachable_);
    report_unreachable();
    return;
  }
  spdlog::debug("{} upstream {}: {}", tag(), upstream_ ? upstream_->peer() : "?", why);
  if (draining_upstream_) return;
  if (reset) {
    close_everything(true);
    return;
  }
  deliver_ready();
  finish_client(false);
}

// The client hears that the upstream is unreachable as the answer to its first request that needed it (a
// PostgreSQL client first negotiates SSL, which faultline answers itself).
void MessageSession::report_unreachable() {
  if (unreachable_.empty() || awaited_ == 0 || client_closing_) return;
  flush_client();
  deliver_ready();
  if (client_ && !client_closing_) write_client(protocol_->upstream_failure(Failure::unreachable, unreachable_).bytes);
  finish_client(false);
}

// --- the queue, reading, closing --------------------------------------------------------------------------

// `n` more replies with `tag` are awaited. A run of them is one slot with a count (a pipeline of 10,000
// commands is one slot, not 10,000); `merge` false keeps them apart from the run before.
void MessageSession::await_replies(unsigned n, uint32_t tag, bool merge) {
  if (n == 0) return;
  if (awaited_ == 0) arm_reply_timer();
  awaited_ += n;
  if (merge && !slots_.empty() && slots_.back().kind == Slot::Kind::forwarded && slots_.back().tag == tag) {
    slots_.back().count += n;
    return;
  }
  Slot slot;
  slot.tag = tag;
  slot.count = n;
  slots_.push_back(std::move(slot));
}

void MessageSession::enqueue_injected(std::string bytes, bool close_after) {
  Slot slot;
  slot.kind = Slot::Kind::injected;
  slot.bytes = std::move(bytes);
  slot.close_after = close_after;
  slots_.push_back(std::move(slot));
  if (close_after) stop_input_ = true;
  deliver_ready();
}

void MessageSession::enqueue_close(bool rst, bool keep_upstream) {
  stop_input_ = true;
  Slot slot;
  slot.kind = Slot::Kind::close;
  slot.rst = rst;
  slot.keep_upstream = keep_upstream;
  slots_.push_back(std::move(slot));
  deliver_ready();
}

// Written to the client but not yet out: in the socket's queue or held by its toxics.
size_t MessageSession::socket_backlog() const {
  if (!client_) return 0;
  return client_->queued() + (down_chain_ && !down_aborted_ ? down_chain_->buffered() : 0);
}

size_t MessageSession::client_backlog() const { return socket_backlog() + paced_bytes_; }

size_t MessageSession::upstream_backlog() const {
  if (!upstream_) return 0;
  return upstream_->queued() + (up_ && !up_aborted_ ? up_->chain->buffered() : 0);
}

// Reads only what can be handled: the client while the upstream's queue, the replies awaited and the
// bytes kept are small; the upstream while the client's queue is.
void MessageSession::update_reading() {
  if (closing_) return;
  if (client_ && !client_closing_ && !client_eof_) {
    const bool waiting = held_ || stop_input_ || (!slots_.empty() && protocol_->wait_for_replies());
    const bool pause = upstream_backlog() > Conn::kHighWater || awaited_ >= kMaxSlots ||
                       (waiting && in_.size() >= kMaxUnparsed);
    if (pause)
      client_->read_stop();
    else
      client_->read_start();
  }
  if (upstream_ && !upstream_closing_) {
    if (client_backlog() > Conn::kHighWater && !draining_upstream_)
      upstream_->read_stop();
    else
      upstream_->read_start();
  }
}

// Closes the client after what was written has gone out: FIN (through the toxics, which may hold it),
// or a reset at once.
void MessageSession::finish_client(bool rst) {
  if (!client_ || client_closing_) return;
  flush_client();
  if (!paced_.empty()) {  // after the paced output
    stop_input_ = true;
    finish_after_paced_ = std::max(finish_after_paced_, rst ? 2 : 1);
    return;
  }
  client_closing_ = true;
  hold_timer_.stop();
  if (rst) {
    if (socket_backlog() > 0) {  // what it was sent goes out first
      finish_when_flushed_ = true;
      return;
    }
    close_everything(true);
    return;
  }
  if (down_chain_ && !down_aborted_) {
    down_chain_->end();  // ChainOut::end shuts the socket down once the toxics let go
    return;
  }
  shutdown_client();
}

void MessageSession::shutdown_client() {
  if (!client_ || client_->closing()) return;
  client_->shutdown();
  if (client_eof_) {
    client_->close();
    return;
  }
  client_->read_start();  // to see the client's FIN
  linger_timer_.start(kLingerMs * 1000);
}

void MessageSession::close_upstream(bool rst) {
  if (traits_.pooled_upstream) {
    if (rst)
      drop_upstream(true);
    else
      release_upstream();
    return;
  }
  if (!upstream_ || upstream_closing_) return;
  upstream_closing_ = true;
  if (rst || !upstream_up_) {
    upstream_->close(rst);
    return;
  }
  const std::string bye = protocol_->goodbye();
  if (!bye.empty()) upstream_->write(bye);
  upstream_->shutdown();
  upstream_->read_start();  // the upstream's FIN closes it (on_upstream_eof), or the linger does
  linger_timer_.start(kLingerMs * 1000);
}

void MessageSession::close_everything(bool rst) {
  if (closing_) return;
  closing_ = true;
  hold_timer_.stop();
  linger_timer_.stop();
  reply_timer_.stop();
  pace_timer_.stop();
  upstream_closing_ = client_closing_ = true;
  if (upstream_) upstream_->close(rst);
  if (client_) client_->close(rst);
}

}  // namespace faultline::proxy
