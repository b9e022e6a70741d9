// A proxied connection: accept, connect upstream, two pipes with optional toxic chains, half-close,
// backpressure, and a teardown that frees memory only in libuv close callbacks.
#include "proxy/session.h"

#include <netinet/tcp.h>

#include <spdlog/spdlog.h>

#include "proxy/conn.h"
#include "proxy/toxic_decision.h"
#include "proxy/worker.h"

namespace faultline::proxy {

namespace {
// Stop reading a side while this much is held for its peer; resume below the low mark.
constexpr size_t kHighWater = 1024 * 1024;
constexpr size_t kLowWater = 256 * 1024;
constexpr uint64_t kConnectTimeoutMs = 5000;
constexpr uint64_t kDrainMs = 2000;
constexpr size_t kSmallChunk = 64 * 1024;

uv_handle_t* as_handle(auto* h) { return reinterpret_cast<uv_handle_t*>(h); }
uv_stream_t* as_stream(auto* h) { return reinterpret_cast<uv_stream_t*>(h); }

std::string format_addr(const faults::HostPort& hp) {
  if (hp.host.find(':') != std::string::npos) return "[" + hp.host + "]:" + std::to_string(hp.port);
  return hp.host + ":" + std::to_string(hp.port);
}
}  // namespace

// One socket of the session.
struct Session::Side {
  uv_tcp_t tcp;
  Session* session = nullptr;
  const char* name = "";
  bool open = false;  // uv_tcp_init done and not yet closed
  bool reading = false;
  bool eof = false;   // its peer half-closed
  bool shut = false;  // we half-closed it (shutdown completed)
  bool shutting = false;
  size_t queued = 0;  // bytes in uv_write requests not yet completed
  faults::Buffer read_buf;
  uv_shutdown_t shutdown_req;
  struct Pipe* out = nullptr;  // the pipe that reads from this side
  struct Pipe* in = nullptr;   // the pipe that writes into this side
};

// One direction: reads from src, passes through the toxic chain, writes to dst. The pipe is the
// chain's sink (its ToxicOutput).
struct Session::Pipe final : faults::ToxicOutput {
  Session* session = nullptr;
  Side* src = nullptr;
  Side* dst = nullptr;
  faults::Stream stream = faults::Stream::upstream;
  std::unique_ptr<faults::ToxicChain> chain;
  uint64_t offset = 0;
  bool paused = false;
  bool ended = false;  // end() reached the sink

  void push(faults::Chunk chunk) override {
    if (session->closing_ || ended) {
      session->worker_.pool().give(std::move(chunk.buf));
      return;
    }
    session->write(*dst, std::move(chunk));
    if (!session->closing_) session->check_backpressure(*this);
  }
  void end() override {
    if (session->closing_ || ended) return;
    ended = true;
    session->shutdown_side(*dst);
  }
  void abort(bool rst) override {
    if (session->closing_) return;
    if (rst) {
      session->close_all(true);
      return;
    }
    // Deliver what was pushed, then FIN both ways: shutdowns queue behind pending writes.
    up_and_down_end();
  }
  void up_and_down_end();
  size_t held() const { return dst->queued + (chain ? chain->buffered() : 0); }
};

struct Session::WriteReq {
  uv_write_t req;
  faults::Chunk chunk;
  Side* side;
};

// abort(false): FIN both ways after what was already pushed. Reading goes on, discarding, until both
// peers close or kDrainMs passes: closing a socket with unread input would send RST, and the client
// could lose the bytes it was meant to get.
void Session::Pipe::up_and_down_end() {
  Session* s = session;
  s->draining_ = true;
  s->up_->ended = true;
  s->down_->ended = true;
  s->shutdown_side(*s->upstream_);
  s->shutdown_side(*s->client_);
  s->start_reading(*s->client_);
  s->start_reading(*s->upstream_);
  uv_timer_start(
      &s->connect_timer_, [](uv_timer_t* t) { static_cast<Session*>(t->data)->close_all(false); }, kDrainMs, 0);
  s->maybe_finish();
}

Session::Session(Worker& worker, ProxyRuntime& proxy)
    : worker_(worker),
      proxy_(proxy),
      client_(std::make_unique<Side>()),
      upstream_(std::make_unique<Side>()),
      up_(std::make_unique<Pipe>()),
      down_(std::make_unique<Pipe>()) {
  client_->session = this;
  client_->name = "client";
  upstream_->session = this;
  upstream_->name = "upstream";
  up_->session = this;
  up_->src = client_.get();
  up_->dst = upstream_.get();
  up_->stream = faults::Stream::upstream;
  down_->session = this;
  down_->src = upstream_.get();
  down_->dst = client_.get();
  down_->stream = faults::Stream::downstream;
  client_->out = up_.get();
  client_->in = down_.get();
  upstream_->out = down_.get();
  upstream_->in = up_.get();
  connect_timer_.data = this;
  resolve_req_.data = this;
  connect_req_.data = this;
  proxy_.active.fetch_add(1, std::memory_order_relaxed);
  worker_.add(this);
}

Session::~Session() {
  // Chains go first: their timers may point into the pipes.
  up_->chain.reset();
  down_->chain.reset();
  for (Side* side : {client_.get(), upstream_.get()})
    if (side->read_buf) worker_.pool().give(std::move(side->read_buf));
  proxy_.active.fetch_sub(1, std::memory_order_relaxed);
  worker_.remove(this);
}

std::string Session::tag() const { return "[" + proxy_.spec->name + " #" + std::to_string(id_) + "]"; }

void Session::accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server) {
  auto* s = new Session(worker, proxy);  // owned by its handles from here; freed in on_handle_closed
  uv_tcp_init(worker.loop(), &s->client_->tcp);
  s->client_->tcp.data = s->client_.get();
  s->client_->open = true;
  s->pending_closes_ = 1;
  uv_timer_init(worker.loop(), &s->connect_timer_);
  s->pending_closes_ += 1;
  if (int rc = uv_accept(server, as_stream(&s->client_->tcp)); rc != 0) {
    spdlog::warn("[{}] accept failed: {}", proxy.spec->name, uv_strerror(rc));
    s->close_all(false);
    return;
  }
  s->id_ = worker.runtime().next_conn_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->ordinal_ = proxy.connections.fetch_add(1, std::memory_order_relaxed) + 1;
  uv_tcp_nodelay(&s->client_->tcp, 1);
  spdlog::debug("{} accepted (connection {} of the proxy)", s->tag(), s->ordinal_);
  s->decide_toxics();
  s->start_connect();
}

void Session::decide_toxics() {
  Runtime& rt = worker_.runtime();
  ActiveToxics active = proxy::decide_toxics(rt, proxy_, id_, ordinal_, tag());
  faults::ToxicContext ctx{rt.scenario.seed, proxy_.spec->name, "", ordinal_};
  if (!active.upstream.empty())
    up_->chain = std::make_unique<faults::ToxicChain>(active.upstream, ctx, worker_.env(), *up_);
  if (!active.downstream.empty())
    down_->chain = std::make_unique<faults::ToxicChain>(active.downstream, ctx, worker_.env(), *down_);
}

void Session::start_connect() {
  uv_timer_start(
      &connect_timer_,
      [](uv_timer_t* t) {
        auto* s = static_cast<Session*>(t->data);
        s->fail_connect("connect timed out after " + std::to_string(kConnectTimeoutMs) + " ms");
      },
      kConnectTimeoutMs, 0);
  const auto& up = proxy_.upstream;
  sockaddr_storage addr{};
  if (literal_address(up, &addr)) {
    addrs_.push_back(addr);
    connect_next();
    return;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  resolving_ = true;
  const std::string port = std::to_string(up.port);
  int rc = uv_getaddrinfo(
      worker_.loop(), &resolve_req_,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* s = static_cast<Session*>(req->data);
        s->resolving_ = false;
        if (!s->closing_) {
          if (status != 0 || !res)
            s->fail_connect(std::string("cannot resolve: ") + uv_strerror(status));
          else {
            s->addrs_ = resolved_addresses(res, Conn::kMaxAddresses);
            s->connect_next();
          }
        }
        uv_freeaddrinfo(res);
        s->on_handle_closed();  // the resolve held the session open like a handle
      },
      up.host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    resolving_ = false;
    fail_connect(std::string("cannot resolve: ") + uv_strerror(rc));
    return;
  }
  pending_closes_ += 1;
}

// The next resolved address, or the last failure once none is left.
void Session::connect_next() {
  if (closing_) return;
  if (next_addr_ >= addrs_.size()) {
    fail_connect(connect_error_.empty() ? "no address to connect to" : connect_error_);
    return;
  }
  const auto* addr = reinterpret_cast<const sockaddr*>(&addrs_[next_addr_++]);
  uv_tcp_init(worker_.loop(), &upstream_->tcp);
  upstream_->tcp.data = upstream_.get();
  upstream_->open = true;
  pending_closes_ += 1;
  int rc = uv_tcp_connect(&connect_req_, &upstream_->tcp, addr, [](uv_connect_t* req, int status) {
    static_cast<Session*>(req->data)->on_connected(status);
  });
  if (rc != 0) attempt_failed(rc);
}

// One address failed: its socket is closed, then the next one is tried (from the close callback).
void Session::attempt_failed(int status) {
  connect_error_ = uv_strerror(status);
  upstream_->open = false;
  upstream_->tcp.data = this;
  uv_close(as_handle(&upstream_->tcp), [](uv_handle_t* h) {
    auto* s = static_cast<Session*>(h->data);
    if (s->closing_) {
      s->on_handle_closed();
      return;
    }
    s->pending_closes_ -= 1;  // the connect timer is still open: never the last handle here
    s->connect_next();
  });
}

void Session::fail_connect(const std::string& why) {
  if (closing_) return;
  spdlog::warn("{} upstream {}: {}", tag(), format_addr(proxy_.upstream), why);
  close_all(false);
}

void Session::on_connected(int status) {
  if (closing_) return;
  if (status != 0) {
    attempt_failed(status);
    return;
  }
  connected_ = true;
  uv_timer_stop(&connect_timer_);
  uv_tcp_nodelay(&upstream_->tcp, 1);
  spdlog::debug("{} connected to upstream {}", tag(), format_addr(proxy_.upstream));
  if (up_->chain) up_->chain->start();
  if (closing_) return;
  if (down_->chain) down_->chain->start();
  if (closing_) return;
  start_reading(*client_);
  start_reading(*upstream_);
}

void Session::start_reading(Side& side) {
  if (side.reading || side.eof || closing_) return;
  side.reading = true;
  uv_read_start(
      as_stream(&side.tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* sd = static_cast<Side*>(h->data);
        if (!sd->read_buf) sd->read_buf = sd->session->worker_.pool().take();
        *buf = uv_buf_init(sd->read_buf.data(), static_cast<unsigned>(sd->read_buf.capacity()));
      },
      [](uv_stream_t* st, ssize_t nread, const uv_buf_t*) {
        auto* sd = static_cast<Side*>(st->data);
        Session* s = sd->session;
        try {
          s->on_read(*sd, nread);
        } catch (const std::exception& e) {  // never across a libuv callback: close this session only
          spdlog::error("{} closing after an internal error: {}", s->tag(), e.what());
          s->close_all(false);
        }
      });
}

void Session::on_read(Side& side, ssize_t nread) {
  Pipe& pipe = *side.out;
  if (nread > 0 && draining_) {
    worker_.pool().give(std::move(side.read_buf));
    return;
  }
  if (nread > 0) {
    faults::Chunk chunk;
    chunk.buf = std::move(side.read_buf);
    chunk.len = static_cast<size_t>(nread);
    chunk.offset = pipe.offset;
    pipe.offset += static_cast<uint64_t>(nread);
    if (pipe.chain) {
      chunk.arrived_us = uv_hrtime() / 1000;
      // Toxics may hold chunks for a while (latency, bandwidth): a small read must not pin a whole
      // pooled buffer, or 1 MiB of held 10-byte replies would pin gigabytes.
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
    return;
  }
  if (side.read_buf) worker_.pool().give(std::move(side.read_buf));
  if (nread == 0) return;
  uv_read_stop(as_stream(&side.tcp));
  side.reading = false;
  if (nread == UV_EOF) {
    side.eof = true;
    spdlog::debug("{} {} half-closed", tag(), side.name);
    if (!draining_) {
      if (pipe.chain)
        pipe.chain->end();
      else
        pipe.end();
    }
    maybe_finish();
    return;
  }
  // A reset or error on one side: pass a reset on to the other, as the peer would have seen it.
  const bool reset = nread == UV_ECONNRESET;
  spdlog::debug("{} {} read error: {}", tag(), side.name, uv_strerror(static_cast<int>(nread)));
  close_all(reset);
}

void Session::write(Side& side, faults::Chunk chunk) {
  if (!side.open || side.shutting || side.shut) {
    worker_.pool().give(std::move(chunk.buf));
    return;
  }
  if (side.queued == 0) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(chunk.data()), static_cast<unsigned>(chunk.len));
    int n = uv_try_write(as_stream(&side.tcp), &b, 1);
    if (n == static_cast<int>(chunk.len)) {
      worker_.pool().give(std::move(chunk.buf));
      return;
    }
    if (n > 0) {
      chunk.begin += static_cast<size_t>(n);
      chunk.len -= static_cast<size_t>(n);
    } else if (n != UV_EAGAIN) {
      spdlog::debug("{} write to {} failed: {}", tag(), side.name, uv_strerror(n));
      worker_.pool().give(std::move(chunk.buf));
      close_all(n == UV_ECONNRESET);
      return;
    }
  }
  auto* req = new WriteReq{};
  req->chunk = std::move(chunk);
  req->side = &side;
  req->req.data = req;
  side.queued += req->chunk.len;
  uv_buf_t b = uv_buf_init(const_cast<char*>(req->chunk.data()), static_cast<unsigned>(req->chunk.len));
  int rc = uv_write(&req->req, as_stream(&side.tcp), &b, 1, [](uv_write_t* w, int status) {
    std::unique_ptr<WriteReq> r(static_cast<WriteReq*>(w->data));
    Side* sd = r->side;
    Session* s = sd->session;
    sd->queued -= r->chunk.len;
    s->worker_.pool().give(std::move(r->chunk.buf));
    if (s->closing_) return;
    if (status < 0) {
      spdlog::debug("{} write to {} failed: {}", s->tag(), sd->name, uv_strerror(status));
      s->close_all(status == UV_ECONNRESET);
      return;
    }
    s->check_backpressure(*sd->in);
  });
  if (rc != 0) {
    side.queued -= req->chunk.len;
    worker_.pool().give(std::move(req->chunk.buf));
    delete req;
    close_all(false);
  }
}

void Session::check_backpressure(Pipe& pipe) {
  const size_t held = pipe.held();
  if (!pipe.paused && held > kHighWater) {
    pipe.paused = true;
    if (pipe.src->reading) {
      uv_read_stop(as_stream(&pipe.src->tcp));
      pipe.src->reading = false;
    }
  } else if (pipe.paused && held < kLowWater) {
    pipe.paused = false;
    if (connected_) start_reading(*pipe.src);
  }
}

void Session::shutdown_side(Side& side) {
  if (!side.open || side.shutting || side.shut || closing_) return;
  side.shutting = true;
  side.shutdown_req.data = &side;
  int rc = uv_shutdown(&side.shutdown_req, as_stream(&side.tcp), [](uv_shutdown_t* req, int status) {
    auto* sd = static_cast<Side*>(req->data);
    Session* s = sd->session;
    sd->shutting = false;
    sd->shut = true;
    if (s->closing_) return;
    if (status < 0 && status != UV_ENOTCONN)
      spdlog::debug("{} shutdown {}: {}", s->tag(), sd->name, uv_strerror(status));
    s->maybe_finish();
  });
  if (rc != 0) {
    side.shutting = false;
    side.shut = true;
    maybe_finish();
  }
}

// Both directions are over once each side has been half-closed by us and has half-closed to us.
void Session::maybe_finish() {
  if (closing_) return;
  if (client_->shut && upstream_->shut && client_->eof && upstream_->eof) close_all(false);
}

void Session::force_close() {
  if (!closing_) close_all(false);
}

void Session::close_all(bool rst) {
  if (closing_) return;
  closing_ = true;
  uv_timer_stop(&connect_timer_);
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_req_));
  auto close_cb = [](uv_handle_t* h) {
    // Listener-style data pointers differ per handle; all of ours lead back to the session.
    auto* s = static_cast<Session*>(h->data);
    s->on_handle_closed();
  };
  for (Side* side : {client_.get(), upstream_.get()}) {
    if (!side->open) continue;
    side->open = false;
    side->tcp.data = this;
    if (side->reading) uv_read_stop(as_stream(&side->tcp));
    side->reading = false;
    const bool can_reset = rst && (side == client_.get() || connected_);
    if (can_reset)
      uv_tcp_close_reset(&side->tcp, close_cb);
    else
      uv_close(as_handle(&side->tcp), close_cb);
  }
  uv_close(as_handle(&connect_timer_), close_cb);
}

void Session::on_handle_closed() {
  if (--pending_closes_ == 0) delete this;
}

}  // namespace faultline::proxy
