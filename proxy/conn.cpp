// A TCP (optionally TLS) connection for the protocol-aware sessions. Memory is freed only once every handle
// and request has called back, so a handler may close the Conn from inside any of its callbacks.
#include "proxy/conn.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "proxy/tls.h"
#include "proxy/worker.h"

namespace faultline::proxy {

namespace {
uv_handle_t* as_handle(auto* h) { return reinterpret_cast<uv_handle_t*>(h); }
uv_stream_t* as_stream(auto* h) { return reinterpret_cast<uv_stream_t*>(h); }

std::string peer_text(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
}
}  // namespace

struct Conn::Connecting {
  uv_timer_t timer;  // connect timeout, and failures reported on the next loop turn
  uv_getaddrinfo_t resolve;
  uv_connect_t req;
  std::vector<sockaddr_storage> addrs;  // resolved addresses, tried in order
  size_t next = 0;
  std::string error;  // the last connect attempt's failure
};

struct Conn::StartTls {
  SSL_CTX* ctx = nullptr;
  std::string sni;
  bool verify = true;
  std::string request;
  char ok = 0;
  bool sent = false;  // the request went out: its answer is awaited
};

struct Conn::WriteReq {
  uv_write_t req;
  std::string bytes;
  faults::Chunk chunk;  // a zero-copy write (bytes unused)
  Conn* conn;
  size_t size() const { return chunk.buf ? chunk.len : bytes.size(); }
};

bool literal_address(const faults::HostPort& to, sockaddr_storage* out) {
  *out = sockaddr_storage{};
  return uv_ip4_addr(to.host.c_str(), to.port, reinterpret_cast<sockaddr_in*>(out)) == 0 ||
         uv_ip6_addr(to.host.c_str(), to.port, reinterpret_cast<sockaddr_in6*>(out)) == 0;
}

// Every address, in the resolver's order: "localhost" may give ::1 first to an upstream that listens on
// 127.0.0.1 only, so each is tried before giving up.
std::vector<sockaddr_storage> resolved_addresses(const addrinfo* res, size_t max) {
  std::vector<sockaddr_storage> out;
  for (const addrinfo* ai = res; ai && out.size() < max; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, std::min<size_t>(ai->ai_addrlen, sizeof ss));
    out.push_back(ss);
  }
  return out;
}

Conn::Conn(Worker& worker, ConnHandler* handler) : worker_(worker), handler_(handler) {
  tcp_.data = this;
  shutdown_req_.data = this;
}

Conn::~Conn() {
  if (read_buf_) worker_.pool().give(std::move(read_buf_));
}

Conn* Conn::accept(Worker& worker, uv_stream_t* server, ConnHandler* handler, std::string* why) {
  auto* c = new Conn(worker, handler);
  uv_tcp_init(worker.loop(), &c->tcp_);
  c->tcp_open_ = true;
  c->outstanding_ = 1;
  if (int rc = uv_accept(server, as_stream(&c->tcp_)); rc != 0) {
    *why = uv_strerror(rc);
    c->handler_ = nullptr;
    c->close();
    return nullptr;
  }
  c->connected_ = true;
  c->peer_ = peer_text(&c->tcp_);
  uv_tcp_nodelay(&c->tcp_, 1);
  return c;
}

Conn* Conn::connect(Worker& worker, const faults::HostPort& to, ConnHandler* handler, uint64_t timeout_ms) {
  auto* c = new Conn(worker, handler);
  c->peer_ = to.host.find(':') != std::string::npos ? "[" + to.host + "]:" + std::to_string(to.port)
                                                     : to.host + ":" + std::to_string(to.port);
  c->start_connect(to, timeout_ms);
  return c;
}

Conn* Conn::connect(Worker& worker, std::vector<sockaddr_storage> addresses, std::string peer, ConnHandler* handler,
                    uint64_t timeout_ms) {
  auto* c = new Conn(worker, handler);
  c->peer_ = std::move(peer);
  c->start_timer(timeout_ms);
  c->connecting_->addrs = std::move(addresses);
  c->connect_next();
  return c;
}

void Conn::start_connect(const faults::HostPort& to, uint64_t timeout_ms) {
  start_timer(timeout_ms);
  sockaddr_storage addr{};
  if (literal_address(to, &addr)) {
    connecting_->addrs.push_back(addr);
    connect_next();
    return;
  }
  resolve(to);
}

void Conn::start_timer(uint64_t timeout_ms) {
  connecting_ = std::make_unique<Connecting>();
  connecting_->timer.data = connecting_->resolve.data = connecting_->req.data = this;
  uv_timer_init(worker_.loop(), &connecting_->timer);
  timer_open_ = true;
  outstanding_ += 1;
  uv_timer_start(
      &connecting_->timer,
      [](uv_timer_t* t) {
        auto* c = static_cast<Conn*>(t->data);
        c->fail(c->connecting_->error.empty() ? "connect timed out" : c->connecting_->error, false);
      },
      timeout_ms, 0);
}

void Conn::resolve(const faults::HostPort& to) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string port = std::to_string(to.port);
  int rc = uv_getaddrinfo(
      worker_.loop(), &connecting_->resolve,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* c = static_cast<Conn*>(req->data);
        c->resolving_ = false;
        if (!c->closing_) {
          if (status != 0 || !res) {
            c->fail(std::string("cannot resolve: ") + uv_strerror(status), false);
          } else {
            c->connecting_->addrs = resolved_addresses(res, kMaxAddresses);
            c->connect_next();
          }
        }
        uv_freeaddrinfo(res);
        c->release();
      },
      to.host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    fail_soon(std::string("cannot resolve: ") + uv_strerror(rc));
    return;
  }
  resolving_ = true;
  outstanding_ += 1;
}

// The next resolved address; with none left, the last failure is reported. Always from a callback, never
// from inside Conn::connect: the caller holds the Conn before it can hear that it failed.
void Conn::connect_next() {
  if (closing_) return;
  Connecting& cg = *connecting_;
  if (cg.next >= cg.addrs.size()) {
    fail_soon(cg.error.empty() ? "no address to connect to" : cg.error);
    return;
  }
  const sockaddr* addr = reinterpret_cast<const sockaddr*>(&cg.addrs[cg.next++]);
  uv_tcp_init(worker_.loop(), &tcp_);
  tcp_open_ = true;
  outstanding_ += 1;
  int rc = uv_tcp_connect(&cg.req, &tcp_, addr, [](uv_connect_t* req, int status) {
    static_cast<Conn*>(req->data)->on_connect(status);
  });
  if (rc != 0) attempt_failed(rc);
}

// One address failed: its socket is closed, then the next one is tried.
void Conn::attempt_failed(int status) {
  connecting_->error = uv_strerror(status);
  tcp_open_ = false;
  uv_close(as_handle(&tcp_), [](uv_handle_t* h) {
    auto* c = static_cast<Conn*>(h->data);
    if (c->closing_) {
      c->release();
      return;
    }
    c->outstanding_ -= 1;  // the timer is still open: never the last reference here
    c->connect_next();
  });
}

// A failure found synchronously, reported from the connect timer's callback on the next loop turn.
void Conn::fail_soon(const std::string& why) {
  connecting_->error = why;
  if (timer_open_) uv_timer_start(&connecting_->timer, [](uv_timer_t* t) {
    auto* c = static_cast<Conn*>(t->data);
    c->fail(c->connecting_->error, false);
  }, 0, 0);
}

void Conn::on_connect(int status) {
  if (closing_) return;
  if (status != 0) {
    attempt_failed(status);
    return;
  }
  uv_tcp_nodelay(&tcp_, 1);
  if (starttls_) {
    // The in-clear request first; the rest waits for its answer (starttls_answer), under the same timeout.
    starttls_->sent = true;
    send_raw(starttls_->request);
    if (!closing_) read_socket();
    return;
  }
  connected_ = true;
  if (timer_open_) {  // what connecting needed goes once its timer has closed
    timer_open_ = false;
    uv_close(as_handle(&connecting_->timer), [](uv_handle_t* h) {
      auto* c = static_cast<Conn*>(h->data);
      if (!c->closing_) c->connecting_.reset();
      c->release();
    });
  }
  if (tls_) {
    tls_->start();
    flush_tls();
  }
  if (!unsent_.empty()) {
    std::string bytes = std::move(unsent_);
    unsent_.clear();
    write(bytes);
  }
  if (closing_) return;
  // What piled up before the connection was up may have gone out at once (no write callback then): a
  // handler that paused its source on our queue must hear that it is short again.
  if (above_high_ && queued() < kLowWater) {
    above_high_ = false;
    if (handler_) handler_->on_drain(*this);
    if (closing_) return;
  }
  if (want_read_) read_start();
  if (shutdown_wanted_) finish_shutdown();
  if (!closing_ && handler_) handler_->on_connected(*this);
}

void Conn::use_tls_client(SSL_CTX* ctx, const std::string& sni_host, bool verify) {
  tls_ = tls::Engine::client(ctx, sni_host, verify);
}

void Conn::use_tls_server(SSL_CTX* ctx) { tls_ = tls::Engine::server(ctx); }

void Conn::use_tls_client_after(SSL_CTX* ctx, const std::string& sni_host, bool verify, std::string request, char ok) {
  starttls_ = std::make_unique<StartTls>();
  starttls_->ctx = ctx;
  starttls_->sni = sni_host;
  starttls_->verify = verify;
  starttls_->request = std::move(request);
  starttls_->ok = ok;
}

// The server's one-byte answer to the in-clear request: TLS starts, and what waited goes through it.
void Conn::starttls_answer(std::string_view bytes) {
  if (bytes.front() != starttls_->ok) {
    fail("refused TLS (answered '" + std::string(1, bytes.front()) + "' to the request for it)", false);
    return;
  }
  if (bytes.size() > 1) {  // a TLS server never speaks before our hello
    fail("sent " + std::to_string(bytes.size() - 1) + " unexpected byte(s) after accepting TLS", false);
    return;
  }
  tls_ = tls::Engine::client(starttls_->ctx, starttls_->sni, starttls_->verify);
  starttls_.reset();
  reading_ = false;
  uv_read_stop(as_stream(&tcp_));
  on_connect(0);  // now as any TLS client connection
}

void Conn::read_start() {
  want_read_ = true;
  if (reading_ || closing_ || !connected_ || eof_) return;
  read_socket();
}

void Conn::read_socket() {
  reading_ = true;
  uv_read_start(
      as_stream(&tcp_),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(h->data);
        if (!c->tls_ && c->handler_ && c->handler_->wants_chunks()) {
          if (!c->read_buf_) c->read_buf_ = c->worker_.pool().take();
          *buf = uv_buf_init(c->read_buf_.data(), static_cast<unsigned>(c->read_buf_.capacity()));
          return;
        }
        faults::Buffer& b = c->worker_.read_buffer();
        *buf = uv_buf_init(b.data(), static_cast<unsigned>(b.capacity()));
      },
      [](uv_stream_t* st, ssize_t nread, const uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(st->data);
        try {
          c->on_read(nread, buf->base);
        } catch (const std::exception& e) {  // never across a libuv callback: close this connection only
          spdlog::error("connection {}: closing after an internal error: {}", c->peer_, e.what());
          c->fail(std::string("internal error: ") + e.what(), false);
        }
      });
}

void Conn::read_stop() {
  want_read_ = false;
  if (!reading_) return;
  reading_ = false;
  uv_read_stop(as_stream(&tcp_));
}

void Conn::on_read(ssize_t nread, const char* data) {
  const bool chunked = read_buf_ && data == read_buf_.data();
  if (chunked && (nread <= 0 || closing_ || !handler_)) worker_.pool().give(std::move(read_buf_));
  if (closing_) return;
  if (starttls_ && starttls_->sent) {
    if (nread > 0) {
      starttls_answer(std::string_view(data, static_cast<size_t>(nread)));
    } else if (nread < 0) {
      fail(nread == UV_EOF ? "closed the connection instead of answering the request for TLS"
                           : uv_strerror(static_cast<int>(nread)),
           nread == UV_ECONNRESET);
    }
    return;
  }
  if (nread > 0 && chunked && handler_) {
    faults::Chunk chunk;
    chunk.buf = std::move(read_buf_);
    chunk.len = static_cast<size_t>(nread);
    handler_->on_chunk(*this, std::move(chunk));
    return;
  }
  if (nread > 0) {
    std::string_view bytes(data, static_cast<size_t>(nread));
    if (!tls_) {
      if (handler_) handler_->on_data(*this, bytes);
      return;
    }
    std::string plain;
    const bool ok = tls_->feed(bytes, &plain);
    flush_tls();
    // The handshake may just have let held plaintext go, perhaps at once (no write callback then).
    if (above_high_ && queued() < kLowWater && ok && !closing_) {
      above_high_ = false;
      if (handler_) handler_->on_drain(*this);
      if (closing_) return;
    }
    if (!plain.empty() && handler_ && !closing_) handler_->on_data(*this, plain);
    if (!ok && !closing_) fail("TLS: " + tls_->error(), false);
    return;
  }
  if (nread == 0) return;
  read_stop();
  if (nread == UV_EOF) {
    eof_ = true;
    if (handler_) handler_->on_eof(*this);
    return;
  }
  fail(uv_strerror(static_cast<int>(nread)), nread == UV_ECONNRESET);
}

void Conn::write(std::string_view bytes) {
  if (closing_ || shut_ || bytes.empty()) return;
  if (!connected_) {
    unsent_.append(bytes);
    if (queued() > kHighWater) above_high_ = true;
    return;
  }
  if (tls_) {
    if (!tls_->write(bytes)) {
      fail("TLS: " + tls_->error(), false);
      return;
    }
    flush_tls();
    if (queued() > kHighWater) above_high_ = true;
    return;
  }
  send_raw(bytes);
}

void Conn::write(faults::Chunk chunk) {
  if (closing_ || shut_ || chunk.len == 0 || !connected_ || tls_) {
    write(chunk.view());  // (copied, or dropped)
    worker_.pool().give(std::move(chunk.buf));
    return;
  }
  if (queued_ == 0) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(chunk.data()), static_cast<unsigned>(chunk.len));
    int n = uv_try_write(as_stream(&tcp_), &b, 1);
    if (n == static_cast<int>(chunk.len)) {
      worker_.pool().give(std::move(chunk.buf));
      return;
    }
    if (n > 0) {
      chunk.begin += static_cast<size_t>(n);
      chunk.len -= static_cast<size_t>(n);
    } else if (n != UV_EAGAIN) {
      worker_.pool().give(std::move(chunk.buf));
      fail(std::string("write failed: ") + uv_strerror(n), n == UV_ECONNRESET);
      return;
    }
  }
  auto* req = new WriteReq{};
  req->chunk = std::move(chunk);
  queue_write(req);
}

size_t Conn::queued() const { return queued_ + unsent_.size() + (tls_ ? tls_->buffered() : 0); }

void Conn::flush_tls() {
  if (!tls_ || !connected_ || closing_ || !tls_->has_output()) return;
  send_raw(tls_->take_output());
}

void Conn::send_raw(std::string_view bytes) {
  if (queued_ == 0) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    int n = uv_try_write(as_stream(&tcp_), &b, 1);
    if (n == static_cast<int>(bytes.size())) return;
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n != UV_EAGAIN) {
      fail(std::string("write failed: ") + uv_strerror(n), n == UV_ECONNRESET);
      return;
    }
  }
  auto* req = new WriteReq{};
  req->bytes.assign(bytes);
  queue_write(req);
}

// What the socket did not take at once, in a write request of its own (the bytes stay where they are).
void Conn::queue_write(WriteReq* req) {
  req->conn = this;
  req->req.data = req;
  const size_t size = req->size();
  queued_ += size;
  if (queued_ > kHighWater) above_high_ = true;
  outstanding_ += 1;
  uv_buf_t b = req->chunk.buf ? uv_buf_init(const_cast<char*>(req->chunk.data()), static_cast<unsigned>(size))
                              : uv_buf_init(req->bytes.data(), static_cast<unsigned>(size));
  int rc = uv_write(&req->req, as_stream(&tcp_), &b, 1, [](uv_write_t* w, int status) {
    std::unique_ptr<WriteReq> r(static_cast<WriteReq*>(w->data));
    Conn* c = r->conn;
    c->queued_ -= r->size();
    if (r->chunk.buf) c->worker_.pool().give(std::move(r->chunk.buf));
    if (!c->closing_) {
      if (status < 0) {
        c->fail(std::string("write failed: ") + uv_strerror(status), status == UV_ECONNRESET);
      } else if (c->above_high_ && c->queued_ < kLowWater) {
        c->above_high_ = false;
        if (c->handler_) c->handler_->on_drain(*c);
      } else if (c->queued_ == 0 && c->handler_) {
        c->handler_->on_drain(*c);
      }
    }
    c->release();
  });
  if (rc != 0) {
    queued_ -= size;
    outstanding_ -= 1;
    if (req->chunk.buf) worker_.pool().give(std::move(req->chunk.buf));
    delete req;
    fail(std::string("write failed: ") + uv_strerror(rc), false);
  }
}

void Conn::shutdown() {
  if (closing_ || shut_ || shutdown_wanted_) return;
  shutdown_wanted_ = true;
  if (connected_) finish_shutdown();
}

void Conn::finish_shutdown() {
  if (shut_ || closing_) return;
  if (tls_) {
    tls_->shutdown();
    flush_tls();
  }
  shut_ = true;
  outstanding_ += 1;
  int rc = uv_shutdown(&shutdown_req_, as_stream(&tcp_), [](uv_shutdown_t* req, int) {
    auto* c = static_cast<Conn*>(req->data);
    c->shut_done_ = true;
    if (!c->closing_ && c->handler_) c->handler_->on_shut(*c);
    c->release();
  });
  if (rc != 0) {
    outstanding_ -= 1;
    shut_done_ = true;  // (not connected any more: nothing to wait for)
  }
}

void Conn::fail(const std::string& why, bool reset) {
  if (closing_) return;
  ConnHandler* h = handler_;
  if (h) h->on_error(*this, why, reset);
  close(reset);
}

void Conn::close(bool rst) {
  if (closing_) return;
  closing_ = true;
  auto close_cb = [](uv_handle_t* h) { static_cast<Conn*>(h->data)->release(); };
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&connecting_->resolve));
  if (timer_open_) {
    timer_open_ = false;
    uv_close(as_handle(&connecting_->timer), close_cb);
  }
  if (tcp_open_) {
    tcp_open_ = false;
    if (reading_) uv_read_stop(as_stream(&tcp_));
    reading_ = false;
    // A reset is impossible once a shutdown is under way (libuv refuses it): then a plain close.
    if (!(rst && connected_ && !shut_ && uv_tcp_close_reset(&tcp_, close_cb) == 0)) uv_close(as_handle(&tcp_), close_cb);
  }
  if (outstanding_ == 0) {  // nothing was ever opened
    outstanding_ = 1;
    release();
  }
}

void Conn::release() {
  if (--outstanding_ > 0) return;
  if (handler_) handler_->on_closed(*this);
  delete this;
}

}  // namespace faultline::proxy
