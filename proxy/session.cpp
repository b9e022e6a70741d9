// A proxied tcp connection: accept, connect upstream (every resolved address in turn, conn.cpp), two pipes
// with optional toxic chains, half-close, backpressure; freed once both connections have closed.
#include "proxy/session.h"

#include <spdlog/spdlog.h>

#include "proxy/toxic_decision.h"

namespace faultline::proxy {

namespace {
constexpr uint64_t kConnectTimeoutMs = 5000;
constexpr uint64_t kDrainMs = 2000;
constexpr size_t kSmallChunk = 64 * 1024;

std::string format_addr(const faults::HostPort& hp) {
  if (hp.host.find(':') != std::string::npos) return "[" + hp.host + "]:" + std::to_string(hp.port);
  return hp.host + ":" + std::to_string(hp.port);
}
}  // namespace

// One direction: reads from src, passes through the toxic chain, writes to dst. The pipe is the chain's sink
// (its ToxicOutput).
struct Session::Pipe final : faults::ToxicOutput {
  Session* s = nullptr;
  Side* src = nullptr;
  Side* dst = nullptr;
  std::unique_ptr<faults::ToxicChain> chain;
  uint64_t offset = 0;
  bool paused = false;
  bool ended = false;  // end() reached the sink

  void push(faults::Chunk chunk) override {
    if (s->closing_ || ended || !dst->conn) {
      s->worker_.pool().give(std::move(chunk.buf));
      return;
    }
    dst->conn->write(std::move(chunk));
    if (!s->closing_) s->check_backpressure(*this);
  }
  void end() override {
    if (s->closing_ || ended) return;
    ended = true;
    s->shutdown_side(*dst);
  }
  void abort(bool rst) override {
    if (s->closing_) return;
    if (rst) {
      s->close_all(true);
      return;
    }
    s->drain_both();  // deliver what was pushed, then FIN both ways
  }
  size_t held() const { return (dst->conn ? dst->conn->queued() : 0) + (chain ? chain->buffered() : 0); }
};

void Session::Side::on_connected(Conn&) { s->on_connected(); }
void Session::Side::on_data(Conn& c, std::string_view bytes) {  // (TLS only; a tcp proxy has none)
  faults::Chunk chunk;
  chunk.buf = faults::Buffer::copy_of(bytes);
  chunk.len = bytes.size();
  on_chunk(c, std::move(chunk));
}
void Session::Side::on_chunk(Conn&, faults::Chunk chunk) {
  try {
    s->on_chunk(*this, std::move(chunk));
  } catch (const std::exception& e) {  // never across a libuv callback: close this session only
    spdlog::error("{} closing after an internal error: {}", s->tag(), e.what());
    s->close_all(false);
  }
}
void Session::Side::on_eof(Conn&) { s->on_eof(*this); }
void Session::Side::on_error(Conn&, const std::string& why, bool reset) {
  if (this == &s->upstream_ && !s->connected_) {
    s->proxy_.connect_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("{} upstream {}: {}", s->tag(), format_addr(s->proxy_.upstream), why);
    s->close_all(false);
    return;
  }
  // A reset or error on one side: a reset is passed on to the other, as the peer would have seen it.
  spdlog::debug("{} {} read error: {}", s->tag(), name, why);
  s->close_all(reset);
}
void Session::Side::on_drain(Conn&) {
  if (!s->closing_ && in) s->check_backpressure(*in);
}
void Session::Side::on_shut(Conn&) { s->maybe_finish(); }
void Session::Side::on_closed(Conn&) {
  conn = nullptr;
  Session* session = s;
  if (!session->closing_) session->close_all(false);
  if (--session->open_conns_ == 0) delete session;
}

Session::Session(Worker& worker, ProxyRuntime& proxy)
    : worker_(worker),
      proxy_(proxy),
      up_(std::make_unique<Pipe>()),
      down_(std::make_unique<Pipe>()) {
  client_.s = upstream_.s = this;
  client_.name = "client";
  upstream_.name = "upstream";
  up_->s = down_->s = this;
  up_->src = &client_;
  up_->dst = &upstream_;
  down_->src = &upstream_;
  down_->dst = &client_;
  client_.out = up_.get();
  client_.in = down_.get();
  upstream_.out = down_.get();
  upstream_.in = up_.get();
  proxy_.active.fetch_add(1, std::memory_order_relaxed);
  worker_.add(this);
}

Session::~Session() {
  // Chains go first: their timers may point into the pipes.
  up_->chain.reset();
  down_->chain.reset();
  proxy_.active.fetch_sub(1, std::memory_order_relaxed);
  worker_.remove(this);
}

std::string Session::tag() const { return "[" + proxy_.spec->name + " #" + std::to_string(id_) + "]"; }

void Session::accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server) {
  auto* s = new Session(worker, proxy);  // owned by its connections from here; freed when both have closed
  std::string why;
  s->client_.conn = Conn::accept(worker, server, &s->client_, &why);
  if (!s->client_.conn) {
    spdlog::warn("[{}] accept failed: {}", proxy.spec->name, why);
    delete s;
    return;
  }
  s->open_conns_ = 2;
  s->id_ = worker.runtime().next_conn_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->ordinal_ = proxy.connections.fetch_add(1, std::memory_order_relaxed) + 1;
  spdlog::debug("{} accepted (connection {} of the proxy)", s->tag(), s->ordinal_);
  s->decide_toxics();
  s->upstream_.conn = Conn::connect(worker, proxy.upstream, &s->upstream_, kConnectTimeoutMs);
}

void Session::decide_toxics() {
  Runtime& rt = worker_.runtime();
  ActiveToxics active = proxy::decide_toxics(rt, proxy_, id_, ordinal_, tag());
  faults::ToxicContext ctx{proxy_.seed, proxy_.spec->name, "", ordinal_};
  if (!active.upstream.empty())
    up_->chain = std::make_unique<faults::ToxicChain>(active.upstream, ctx, worker_.env(), *up_);
  if (!active.downstream.empty())
    down_->chain = std::make_unique<faults::ToxicChain>(active.downstream, ctx, worker_.env(), *down_);
}

// Toxiproxy's semantics: a toxic added, changed or removed through the API acts on open connections too.
void Session::apply_toxic_change(const ToxicChange& change) {
  if (closing_ || draining_) return;
  auto active = [this](const faults::ToxicSpec* spec) {
    Pipe& pipe = spec->stream == faults::Stream::upstream ? *up_ : *down_;
    return pipe.chain && pipe.chain->find(spec) < pipe.chain->size();
  };
  const auto edit = proxy::decide_change(worker_.runtime(), change, id_, ordinal_, tag(), active);
  if (!edit) return;
  Pipe& pipe = edit->stream == faults::Stream::upstream ? *up_ : *down_;
  if (!pipe.chain) {
    faults::ToxicContext ctx{proxy_.seed, proxy_.spec->name, "", ordinal_};
    pipe.chain = std::make_unique<faults::ToxicChain>(std::vector<const faults::ToxicSpec*>{}, ctx, worker_.env(), pipe);
    if (connected_) pipe.chain->start();
  }
  // A chain whose stream has ended takes nothing new; one that lets go of an end closes that side.
  if (pipe.ended) return;
  proxy::apply_edit(*pipe.chain, *edit, proxy_);
  if (!closing_) check_backpressure(pipe);
}

void Session::on_connected() {
  if (closing_) return;
  connected_ = true;
  spdlog::debug("{} connected to upstream {}", tag(), format_addr(proxy_.upstream));
  if (up_->chain) up_->chain->start();
  if (closing_) return;
  if (down_->chain) down_->chain->start();
  if (closing_) return;
  client_.conn->read_start();
  if (upstream_.conn) upstream_.conn->read_start();
}

void Session::on_chunk(Side& side, faults::Chunk chunk) {
  Pipe& pipe = *side.out;
  if (draining_ || closing_) {
    worker_.pool().give(std::move(chunk.buf));
    return;
  }
  chunk.offset = pipe.offset;
  pipe.offset += chunk.len;
  (&side == &client_ ? proxy_.bytes_up : proxy_.bytes_down).fetch_add(chunk.len, std::memory_order_relaxed);
  if (pipe.chain) {
    chunk.arrived_us = uv_hrtime() / 1000;
    // Toxics may hold chunks for a while (latency, bandwidth): a small read must not pin a whole pooled
    // buffer, or 1 MiB of held 10-byte replies would pin gigabytes.
    if (chunk.len < kSmallChunk) {
      faults::Buffer exact = faults::Buffer::copy_of(chunk.view());
      worker_.pool().give(std::move(chunk.buf));
      chunk.buf = std::move(exact);
    }
    pipe.chain->push(std::move(chunk));
  } else {
    pipe.push(std::move(chunk));
  }
  if (!closing_) check_backpressure(pipe);
}

void Session::on_eof(Side& side) {
  spdlog::debug("{} {} half-closed", tag(), side.name);
  Pipe& pipe = *side.out;
  if (!draining_) {
    if (pipe.chain)
      pipe.chain->end();
    else
      pipe.end();
  }
  maybe_finish();
}

void Session::check_backpressure(Pipe& pipe) {
  const size_t held = pipe.held();
  if (!pipe.paused && held > Conn::kHighWater) {
    pipe.paused = true;
    if (pipe.src->conn) pipe.src->conn->read_stop();
  } else if (pipe.paused && held < Conn::kLowWater) {
    pipe.paused = false;
    if (connected_ && pipe.src->conn) pipe.src->conn->read_start();
  }
}

void Session::shutdown_side(Side& side) {
  if (!side.conn || closing_) return;
  side.conn->shutdown();
  maybe_finish();
}

// abort(false): FIN both ways after what was already pushed. Reading goes on, discarding, until both peers
// close or kDrainMs passes: closing a socket with unread input would send RST, and the client could lose the
// bytes it was meant to get.
void Session::drain_both() {
  draining_ = true;
  up_->ended = true;
  down_->ended = true;
  shutdown_side(upstream_);
  shutdown_side(client_);
  if (closing_) return;
  if (client_.conn) client_.conn->read_start();
  if (upstream_.conn) upstream_.conn->read_start();
  if (!drain_timer_) drain_timer_ = std::make_unique<UvTimer>(worker_.loop(), [this] { close_all(false); });
  drain_timer_->start(kDrainMs * 1000);
  maybe_finish();
}

// Both directions are over once each side has been half-closed by us and has half-closed to us.
void Session::maybe_finish() {
  if (closing_ || !client_.conn || !upstream_.conn) return;
  if (client_.conn->shut() && upstream_.conn->shut() && client_.conn->peer_eof() && upstream_.conn->peer_eof())
    close_all(false);
}

void Session::force_close() {
  if (!closing_) close_all(false);
}

void Session::close_all(bool rst) {
  if (closing_) return;
  closing_ = true;
  if (drain_timer_) drain_timer_->stop();
  if (client_.conn) client_.conn->close(rst);
  if (upstream_.conn) upstream_.conn->close(rst && connected_);
}

}  // namespace faultline::proxy
