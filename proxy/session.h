// One client connection of a tcp proxy paired with its upstream connection: two pipes, one per direction,
// each with its optional toxic chain, over the shared connection type (conn.h) in its zero-copy mode: a
// pooled read buffer moves into the other side's write, never copied.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "faults/chunk.h"
#include "faults/toxic_chain.h"
#include "proxy/conn.h"
#include "proxy/uv_timer.h"
#include "proxy/worker.h"

namespace faultline::proxy {

class Session final : public WorkerSession {
 public:
  // Accepts one pending connection on `server` and starts connecting upstream.
  static void accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server);

  // Grace period over: close now, FIN where possible.
  void force_close() override;
  const ProxyRuntime* proxy_runtime() const override { return &proxy_; }
  void apply_toxic_change(const ToxicChange& change) override;

 private:
  struct Pipe;
  // One connection of the session and what it reports.
  struct Side final : ConnHandler {
    Session* s = nullptr;
    Conn* conn = nullptr;  // null once closed
    const char* name = "";
    Pipe* out = nullptr;   // the pipe that reads from this side
    Pipe* in = nullptr;    // the pipe that writes into this side

    bool wants_chunks() const override { return true; }
    void on_connected(Conn&) override;
    void on_data(Conn&, std::string_view bytes) override;
    void on_chunk(Conn&, faults::Chunk chunk) override;
    void on_eof(Conn&) override;
    void on_error(Conn&, const std::string& why, bool reset) override;
    void on_drain(Conn&) override;
    void on_shut(Conn&) override;
    void on_closed(Conn&) override;
  };

  Session(Worker& worker, ProxyRuntime& proxy);
  ~Session() override;

  void decide_toxics();
  void on_connected();
  void on_chunk(Side& side, faults::Chunk chunk);
  void on_eof(Side& side);
  void check_backpressure(Pipe& pipe);
  void shutdown_side(Side& side);
  void drain_both();
  void maybe_finish();
  void close_all(bool rst);
  std::string tag() const;

  Worker& worker_;
  ProxyRuntime& proxy_;
  uint64_t id_ = 0;       // process-wide connection number
  uint64_t ordinal_ = 0;  // connection ordinal within the proxy
  Side client_;
  Side upstream_;
  std::unique_ptr<Pipe> up_;    // client -> upstream
  std::unique_ptr<Pipe> down_;  // upstream -> client
  std::unique_ptr<UvTimer> drain_timer_;  // made when needed: an idle connection holds no timer
  int open_conns_ = 0;
  bool connected_ = false;
  bool closing_ = false;
  bool draining_ = false;  // aborted with FIN: discard input until both peers close
};

}  // namespace faultline::proxy
