// One client connection paired with its upstream connection: two pipes, one per direction.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "faults/chunk.h"
#include "faults/toxic_chain.h"
#include "proxy/worker.h"

namespace faultline::proxy {


class Session final : public WorkerSession {
 public:
  // Accepts one pending connection on `server` and starts connecting upstream.
  static void accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server);

  // Grace period over: close now, FIN where possible.
  void force_close() override;

 private:
  struct Side;
  struct Pipe;
  struct WriteReq;

  Session(Worker& worker, ProxyRuntime& proxy);
  ~Session();

  void decide_toxics();
  void start_connect();
  void connect_next();
  void attempt_failed(int status);
  void on_connected(int status);
  void fail_connect(const std::string& why);
  void start_reading(Side& side);
  void on_read(Side& side, ssize_t nread);
  void write(Side& side, faults::Chunk chunk);
  void shutdown_side(Side& side);
  void maybe_finish();
  void check_backpressure(Pipe& pipe);
  void close_all(bool rst);
  void on_handle_closed();
  std::string tag() const;

  Worker& worker_;
  ProxyRuntime& proxy_;
  uint64_t id_ = 0;       // process-wide connection number
  uint64_t ordinal_ = 0;  // connection ordinal within the proxy
  std::unique_ptr<Side> client_;
  std::unique_ptr<Side> upstream_;
  std::unique_ptr<Pipe> up_;    // client -> upstream
  std::unique_ptr<Pipe> down_;  // upstream -> client
  uv_timer_t connect_timer_;
  uv_getaddrinfo_t resolve_req_;
  uv_connect_t connect_req_;
  std::vector<sockaddr_storage> addrs_;  // the upstream's addresses, tried in order
  size_t next_addr_ = 0;
  std::string connect_error_;
  bool resolving_ = false;
  bool connected_ = false;
  bool closing_ = false;
  bool draining_ = false;  // aborted with FIN: discard input until both peers close
  int pending_closes_ = 0;
};

}  // namespace faultline::proxy
