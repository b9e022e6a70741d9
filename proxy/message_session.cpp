// The message session: protocol-neutral request/reply proxying with rules, a reply queue and toxics.
#include "proxy/message_session.h"

#include <spdlog/spdlog.h>

#include "proxy/toxic_decision.h"

namespace faultline::proxy {

namespace {
constexpr uint64_t kConnectTimeoutMs = 5000;
constexpr uint64_t kLingerMs = 2000;  // after our FIN, wait this long for the peer's
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
  spdlog::debug("{} client {}: {}", s->tag(), c.peer(), why);
  s->guard([&] {
    // As the upstream's peer would have seen it: a reset is passed on; a client that is simply gone leaves
    // a drop { after_forward } to finish.
    s->client_closing_ = true;
    if (!s->draining_upstream_) s->close_upstream(reset);
  });
}
void MessageSession::ClientHandler::on_drain(Conn&) { s->guard([&] { s->update_reading(); }); }
void MessageSession::ClientHandler::on_closed(Conn&) {
  s->client_ = nullptr;
  s->client_gone_ = true;
  s->client_closing_ = true;
  s->hold_timer_.stop();
  if (!s->draining_upstream_) s->close_upstream(false);
  s->maybe_delete();
}

void MessageSession::UpstreamHandler::on_connected(Conn&) {
  s->upstream_up_ = true;
  s->guard([&] { s->update_reading(); });
}
void MessageSession::UpstreamHandler::on_data(Conn&, std::string_view bytes) {
  s->guard([&] { s->on_upstream_data(bytes); });
}
void MessageSession::UpstreamHandler::on_eof(Conn&) { s->guard([&] { s->on_upstream_eof(); }); }
void MessageSession::UpstreamHandler::on_error(Conn&, const std::string& why, bool reset) {
  s->guard([&] { s->on_upstream_error(why, reset); });
}
void MessageSession::UpstreamHandler::on_drain(Conn&) { s->guard([&] { s->update_reading(); }); }
void MessageSession::UpstreamHandler::on_closed(Conn&) {
  s->upstream_ = nullptr;
  s->upstream_gone_ = true;
  s->upstream_closing_ = true;
  s->draining_upstream_ = false;
  // The upstream is gone: what it still owed the client will not come (an unreachable one is reported
  // when the client first needs it).
  if (s->client_ && !s->client_closing_ && s->unreachable_.empty()) s->guard([&] { s->finish_client(false); });
  s->maybe_delete();
}

void MessageSession::ChainOut::push(faults::Chunk chunk) {
  if (downstream) {
    if (s->client_ && !s->client_->closing()) s->client_->write(chunk.view());
    // Bytes a toxic let go from its own timer: the upstream may be read again. Not when the push comes
    // straight through from write_client(): the caller is in the middle of sending.
    if (!s->in_down_push_) s->guard([&] { s->update_reading(); });
  } else if (s->upstream_ && !s->upstream_closing_) {
    s->upstream_->write(chunk.view());
  }
}

void MessageSession::ChainOut::end() {
  if (downstream) s->guard([&] { s->shutdown_client(); });
}

// A toxic ended the connection (reset_peer, timeout, limit_data): a reset at once, a close after what was
// already let through.
void MessageSession::ChainOut::abort(bool rst) {
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
      linger_timer_(worker.loop(), [this] { close_everything(false); }) {
  client_handler_.s = this;
  upstream_handler_.s = this;
  up_out_.s = this;
  down_out_.s = this;
  down_out_.downstream = true;
  proxy_.active.fetch_add(1, std::memory_order_relaxed);
  worker_.add(this);
}

MessageSession::~MessageSession() {
  up_chain_.reset();  // their timers go before the members they push into
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
  s->protocol_ = factory(proxy, s->ordinal_);
  spdlog::debug("{} accepted {} (connection {} of the proxy)", s->tag(), s->client_->peer(), s->ordinal_);
  s->start_toxics();
  s->upstream_ = Conn::connect(worker, proxy.upstream, &s->upstream_handler_, kConnectTimeoutMs);
  if (proxy.upstream_tls)
    s->upstream_->use_tls_client(proxy.upstream_tls.get(), proxy.upstream.host, proxy.spec->tls_verify);
  s->upstream_->read_start();
  s->client_->read_start();
}

void MessageSession::start_toxics() {
  Runtime& rt = worker_.runtime();
  ActiveToxics active = decide_toxics(rt, proxy_, id_, ordinal_, tag());
  const faults::ToxicContext ctx{rt.scenario.seed, proxy_.spec->name, "", ordinal_};
  if (!active.upstream.empty()) {
    up_chain_ = std::make_unique<faults::ToxicChain>(active.upstream, ctx, worker_.env(), up_out_);
    up_chain_->start();
  }
  if (!active.downstream.empty()) {
    down_chain_ = std::make_unique<faults::ToxicChain>(active.downstream, ctx, worker_.env(), down_out_);
    down_chain_->start();
  }
}

void MessageSession::force_close() { close_everything(false); }

void MessageSession::maybe_delete() {
  if (client_gone_ && upstream_gone_) delete this;
}

// --- client -> upstream -----------------------------------------------------------------------------------

// Parsed straight from the read when nothing is left over from the last one; only an incomplete tail (or
// everything after a held request) is copied.
void MessageSession::on_client_data(std::string_view bytes) {
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
        break;
      case ClientUnit::Kind::skip:
        break;
      case ClientUnit::Kind::answer:
        enqueue_injected(std::move(unit.reply), false);
        break;
      case ClientUnit::Kind::error:
        spdlog::warn("{} bad request from {}: {}", tag(), client_ ? client_->peer() : "?", unit.why);
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
  }
  flush_upstream();
  processing_ = false;
  report_unreachable();
  return pos;
}

// The rules decide one request. False when it is held (delay, hang).
bool MessageSession::decide(const ClientUnit& unit, std::string_view raw) {
  std::optional<faults::RuleEngine::Fired> fired;
  if (proxy_.rules && unit.msg) {
    const double now_s = static_cast<double>(uv_hrtime() - worker_.runtime().start_ns) / 1e9;
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
      hold_timer_.start(static_cast<uint64_t>(fired_delay_ms(worker_.runtime(), *fired)) * 1000);
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
        const size_t before = slots_.size();
        forward_current(raw, /*merge=*/false);
        stop_input_ = true;
        Slot close;
        close.kind = Slot::Kind::close;
        close.keep_upstream = true;
        slots_.insert(slots_.begin() + static_cast<std::ptrdiff_t>(before), std::move(close));
        deliver_ready();
        return true;
      }
      enqueue_close(false, false);
      return true;
    case T::reset:
      enqueue_close(true, false);
      return true;
    default: {  // this protocol's own actions (the loader allows no other protocol's)
      Injected injected = protocol_->inject(a);
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
  if (f.raw) {
    send_upstream(raw);
  } else if (!f.bytes.empty()) {
    flush_upstream();
    write_upstream(f.bytes);
  }
  await_replies(f.slots, f.tag, merge);
  if (!f.local.empty()) enqueue_injected(std::move(f.local), false);
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
  if (!upstream_ || upstream_closing_ || bytes.empty()) return;
  if (!up_chain_) {
    upstream_->write(bytes);
    return;
  }
  if (up_aborted_) return;
  faults::Chunk chunk;
  chunk.buf = faults::Buffer::copy_of(bytes);
  chunk.len = bytes.size();
  chunk.offset = up_offset_;
  chunk.arrived_us = uv_hrtime() / 1000;
  up_offset_ += bytes.size();
  up_chain_->push(std::move(chunk));
}

void MessageSession::on_client_eof() {
  client_eof_ = true;
  if (client_closing_) {  // our FIN went first; this is the answer to it
    if (client_) client_->close();
    return;
  }
  if (held_ && hold_ == Hold::hanging) {  // nothing would ever come of it
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
  if (closing_) return;
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

size_t MessageSession::process_replies(std::string_view in) {
  size_t pos = 0;
  deliver_ready();
  while (pos < in.size() && !closing_) {
    const bool awaited = !slots_.empty() && slots_.front().kind == Slot::Kind::forwarded;
    ReplyUnit unit = protocol_->reply(in.substr(pos), awaited ? slots_.front().tag : Protocol::kNoSlot);
    if (unit.kind == ReplyUnit::Kind::more) break;
    if (unit.kind == ReplyUnit::Kind::error) {
      spdlog::warn("{} bad reply from upstream {}: {}", tag(), upstream_ ? upstream_->peer() : "?", unit.why);
      flush_client();
      close_everything(false);
      pos = in.size();
      break;
    }
    const std::string_view raw = in.substr(pos, unit.size);
    pos += unit.size;
    if (unit.kind == ReplyUnit::Kind::frame && !awaited)
      spdlog::debug("{} upstream sent a reply no request was waiting for; passed on", tag());
    if (!client_closing_) {
      if (!unit.replaced) {
        send_client(raw);
      } else if (!unit.bytes.empty()) {
        flush_client();
        write_client(unit.bytes);
      }
    }
    if (unit.kind == ReplyUnit::Kind::frame && awaited && unit.ends) {
      if (--slots_.front().count == 0) slots_.pop_front();
      --awaited_;
      deliver_ready();
    }
  }
  flush_client();
  if (awaited_ < kMaxSlots) resume_client();  // what waited for these replies may go on
  if (slots_.empty()) maybe_done();
  return pos;
}

// Injected replies and closes at the head of the queue: their turn has come.
void MessageSession::deliver_ready() {
  while (!slots_.empty() && slots_.front().kind != Slot::Kind::forwarded && !closing_) {
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
    // close
    if (slot.rst) {
      close_everything(true);
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
  if (!down_chain_) {
    client_->write(bytes);
    return;
  }
  if (down_aborted_) return;
  faults::Chunk chunk;
  chunk.buf = faults::Buffer::copy_of(bytes);
  chunk.len = bytes.size();
  chunk.offset = down_offset_;
  chunk.arrived_us = uv_hrtime() / 1000;
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
  spdlog::debug("{} upstream closed the connection", tag());
  // What is ready goes out first (injected replies ahead of the first awaited one), then the client is closed.
  deliver_ready();
  flush_client();
  upstream_closing_ = true;
  if (upstream_) upstream_->close();
  finish_client(false);
}

void MessageSession::on_upstream_error(const std::string& why, bool reset) {
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
  if (client_ && !client_closing_) write_client(protocol_->upstream_failure(unreachable_));
  finish_client(false);
}

// --- the queue, reading, closing --------------------------------------------------------------------------

// `n` more replies with `tag` are awaited. A run of them is one slot with a count (a pipeline of 10,000
// commands is one slot, not 10,000); `merge` false keeps them apart from the run before.
void MessageSession::await_replies(unsigned n, uint32_t tag, bool merge) {
  if (n == 0) return;
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

size_t MessageSession::client_backlog() const {
  if (!client_) return 0;
  return client_->queued() + (down_chain_ && !down_aborted_ ? down_chain_->buffered() : 0);
}

size_t MessageSession::upstream_backlog() const {
  if (!upstream_) return 0;
  return upstream_->queued() + (up_chain_ && !up_aborted_ ? up_chain_->buffered() : 0);
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
  client_closing_ = true;
  flush_client();
  hold_timer_.stop();
  if (rst) {
    client_->close(true);
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
  upstream_closing_ = client_closing_ = true;
  if (upstream_) upstream_->close(rst);
  if (client_) client_->close(rst);
}

}  // namespace faultline::proxy
