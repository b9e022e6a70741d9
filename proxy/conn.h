// One TCP connection on a worker's loop, optionally TLS, for every session: writes go out at once when the
// socket takes them and are queued otherwise; reads arrive as plaintext views, or (tcp sessions) as pooled
// buffers the handler may move into another connection's write without a copy; the object frees itself in
// libuv's close callback.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "faults/address.h"
#include "faults/chunk.h"

using SSL_CTX = struct ssl_ctx_st;

namespace faultline::proxy {

class Worker;
class Conn;
namespace tls {
class Engine;
}

// The connector's address handling, shared with the tcp session: an IP literal needs no resolver; a name's
// addresses are all kept, in the resolver's order, to be tried one after the other.
bool literal_address(const faults::HostPort& to, sockaddr_storage* out);
std::vector<sockaddr_storage> resolved_addresses(const addrinfo* res, size_t max);

// What a Conn reports. Every call may close the Conn (or others); on_closed is the last call, after which
// the Conn is freed.
class ConnHandler {
 public:
  virtual ~ConnHandler() = default;
  virtual void on_connected(Conn&) {}
  virtual void on_data(Conn&, std::string_view bytes) = 0;
  virtual void on_eof(Conn&) = 0;
  // A connect failure, a reset, a failed write or a TLS error; the Conn closes right after.
  virtual void on_error(Conn&, const std::string& why, bool reset) = 0;
  // The write queue fell below the low-water mark after having been above the high one.
  virtual void on_drain(Conn&) {}
  virtual void on_closed(Conn&) = 0;
  // Reads as pooled buffers (plaintext connections): on_chunk instead of on_data, and the chunk is the
  // handler's to keep or to pass to Conn::write(Chunk).
  virtual bool wants_chunks() const { return false; }
  virtual void on_chunk(Conn& c, faults::Chunk chunk) { on_data(c, chunk.view()); }
  // Our FIN went out (the shutdown completed).
  virtual void on_shut(Conn&) {}
};

class Conn {
 public:
  static constexpr size_t kHighWater = 1024 * 1024;
  static constexpr size_t kLowWater = 256 * 1024;
  static constexpr size_t kMaxAddresses = 16;  // of one name, tried in order

  // Takes one pending connection from `server`; nullptr when accept failed (why says so).
  static Conn* accept(Worker& worker, uv_stream_t* server, ConnHandler* handler, std::string* why);
  // Resolves and connects; on_connected or on_error follows. Writes before that are queued.
  static Conn* connect(Worker& worker, const faults::HostPort& to, ConnHandler* handler, uint64_t timeout_ms);
  // The same to addresses already known, tried in order until one accepts (`peer` names them in logs).
  static Conn* connect(Worker& worker, std::vector<sockaddr_storage> addresses, std::string peer,
                       ConnHandler* handler, uint64_t timeout_ms);

  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // TLS on this connection: as a client (to an https upstream) or as a server (terminating). Call before
  // reading or writing; the client handshake starts once connected.
  void use_tls_client(SSL_CTX* ctx, const std::string& sni_host, bool verify);
  // TLS after an in-clear request the server must accept first (PostgreSQL's SSLRequest, answered 'S'):
  // once connected, `request` goes out, and the one-byte answer `ok` starts the handshake; any other
  // answer is an error ("refused TLS"). Writes wait meanwhile, and on_connected comes once TLS is set.
  void use_tls_client_after(SSL_CTX* ctx, const std::string& sni_host, bool verify, std::string request, char ok);
  void use_tls_server(SSL_CTX* ctx);

  void set_handler(ConnHandler* handler) { handler_ = handler; }
  void read_start();
  void read_stop();
  void write(std::string_view bytes);
  // The same without a copy: what the socket does not take at once stays in the chunk's buffer, which
  // goes back to the worker's pool once written (or dropped).
  void write(faults::Chunk chunk);
  // FIN once everything queued is written (TLS: after close_notify).
  void shutdown();
  // Closes now; with rst the peer gets a reset. Unsent bytes are dropped.
  void close(bool rst = false);

  size_t queued() const;
  bool connected() const { return connected_; }
  bool closing() const { return closing_; }
  bool peer_eof() const { return eof_; }
  bool shut() const { return shut_done_; }  // our FIN went out
  const std::string& peer() const { return peer_; }  // "ip:port", for logs

 private:
  struct WriteReq;
  Conn(Worker& worker, ConnHandler* handler);
  ~Conn();

  void start_connect(const faults::HostPort& to, uint64_t timeout_ms);
  void start_timer(uint64_t timeout_ms);
  void resolve(const faults::HostPort& to);
  void connect_next();
  void attempt_failed(int status);
  void fail_soon(const std::string& why);
  void on_connect(int status);
  void fail(const std::string& why, bool reset);
  void on_read(ssize_t nread, const char* data);
  void send_raw(std::string_view bytes);
  void queue_write(WriteReq* req);
  void flush_tls();
  void finish_shutdown();
  void release();

  Worker& worker_;
  ConnHandler* handler_;
  uv_tcp_t tcp_;
  // Only while connecting (freed once connected, so an established connection carries none of it).
  struct Connecting;
  std::unique_ptr<Connecting> connecting_;
  uv_shutdown_t shutdown_req_;
  std::unique_ptr<tls::Engine> tls_;
  std::string unsent_;   // written before the connection was up
  faults::Buffer read_buf_;  // chunk reads: the buffer of the read in progress
  std::string peer_;
  size_t queued_ = 0;    // bytes in uv_write requests not yet completed
  int outstanding_ = 0;  // handles and requests still to call back before the Conn may be freed
  bool tcp_open_ = false;
  bool timer_open_ = false;
  bool resolving_ = false;
  bool connected_ = false;
  bool reading_ = false;
  bool want_read_ = false;
  bool eof_ = false;
  bool shutdown_wanted_ = false;
  bool shut_ = false;
  bool shut_done_ = false;
  bool closing_ = false;
  bool above_high_ = false;
  bool tls_client_start_ = false;
  // use_tls_client_after: what the handshake waits for.
  struct StartTls;
  std::unique_ptr<StartTls> starttls_;
  void starttls_answer(std::string_view bytes);
  void read_socket();
};

}  // namespace faultline::proxy
