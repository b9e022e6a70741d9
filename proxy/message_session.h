// One client connection of a message protocol (http, redis, postgres): the client's requests, decided by the
// proxy's rules one by one, go upstream pipelined (http: one at a time, on connections from a keep-alive
// pool); replies come back in request order through a reply queue in which an injected reply takes exactly
// the place of the one it replaces.
//
// The protocol (protocol.h) is pure and knows the bytes; this session knows everything else: rules, the
// generic actions (delay, hang, drop, reset, drop after forward), reply pacing and cuts, toxics on both
// directions, upstream connections (one per client, or pooled), backpressure, half-close and closing. Input is consumed through a read cursor and trimmed once per read, so a pipeline
// of 10,000 requests in one read stays linear.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "faults/rule_engine.h"
#include "faults/toxic_chain.h"
#include "proxy/conn.h"
#include "proxy/protocol.h"
#include "proxy/uv_timer.h"
#include "proxy/worker.h"

namespace faultline::proxy {

class MessageSession final : public WorkerSession {
 public:
  // A protocol instance for one client connection (`ordinal` within its proxy, 1-based).
  using Factory = std::unique_ptr<Protocol> (*)(const ProxyRuntime& proxy, uint64_t ordinal, const std::string& peer);

  static void accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server, Factory factory);
  void force_close() override;
  const ProxyRuntime* proxy_runtime() const override { return &proxy_; }
  void apply_toxic_change(const ToxicChange& change) override;

  static constexpr size_t kMaxUnparsed = 1024 * 1024;  // client bytes kept while requests cannot be handled
  static constexpr size_t kMaxSlots = 100000;          // replies awaited before the client is paused

 private:
  struct ClientHandler final : ConnHandler {
    MessageSession* s;
    void on_data(Conn&, std::string_view bytes) override;
    void on_eof(Conn&) override;
    void on_error(Conn&, const std::string& why, bool reset) override;
    void on_drain(Conn&) override;
    void on_closed(Conn&) override;
  };
  // Only the current upstream connection is listened to; one let go of only reports its close.
  struct UpstreamHandler final : ConnHandler {
    MessageSession* s;
    void on_connected(Conn&) override;
    void on_data(Conn&, std::string_view bytes) override;
    void on_eof(Conn&) override;
    void on_error(Conn&, const std::string& why, bool reset) override;
    void on_drain(Conn&) override;
    void on_closed(Conn&) override;
  };
  // The end of a toxic chain: the socket of its direction. Upstream chains run per upstream connection:
  // bytes they hold belong to the connection they were sent on, never to one that replaces it.
  struct ChainOut final : faults::ToxicOutput {
    MessageSession* s = nullptr;
    bool downstream = false;
    Conn* conn = nullptr;  // upstream: the connection; null once it is let go of
    void push(faults::Chunk chunk) override;
    void end() override;
    void abort(bool rst) override;
  };
  struct UpChain {
    ChainOut out;
    std::unique_ptr<faults::ToxicChain> chain;
    uint64_t offset = 0;
  };
  // Client output released at a time (reply pacing).
  struct Paced {
    uint64_t due_us = 0;
    std::string bytes;
  };
  // One awaited or injected reply, in request order.
  struct Slot {
    enum class Kind { forwarded, injected, close };
    Kind kind = Kind::forwarded;
    uint32_t tag = 0;       // forwarded: the protocol's tag
    uint32_t count = 1;     // forwarded: this many replies in a row with that tag
    std::string bytes;      // injected
    bool close_after = false;  // injected: close both once delivered (postgres.fatal)
    bool rst = false;          // close: reset instead of FIN
    bool keep_upstream = false;  // close: drop { after_forward }: the upstream finishes what it was sent
    bool armed = true;           // close: false while the request it follows is still arriving
  };
  enum class Hold { none, delaying, hanging };

  MessageSession(Worker& worker, ProxyRuntime& proxy);
  ~MessageSession() override;
  template <typename F>
  void guard(F&& f);
  std::string tag() const;
  void start_toxics();

  // client -> upstream
  void on_client_data(std::string_view bytes);
  size_t process_client(std::string_view in);
  void resume_client();
  bool decide(const ClientUnit& unit, std::string_view raw);
  void forward_current(std::string_view raw, bool merge = true);
  void take_synthetic(const std::string& bytes);
  void arm_close();
  void release_hold();
  void send_upstream(std::string_view bytes);
  void flush_upstream();
  void write_upstream(std::string_view bytes);
  void on_client_eof();
  void maybe_done();

  // upstream -> client
  void on_upstream_data(std::string_view bytes);
  size_t process_replies(std::string_view in);
  void deliver_ready();
  void send_client(std::string_view bytes);
  void flush_client();
  void write_client(std::string_view bytes);
  void write_client_now(std::string_view bytes);
  void on_client_drain();
  std::deque<Slot>::iterator head_slot();
  void on_upstream_eof();
  void on_upstream_error(const std::string& why, bool reset);
  void report_unreachable();
  void reply_done(const ReplyUnit& unit);
  void emit(std::string_view bytes, uint64_t after_us, uint64_t rate);
  void drain_paced();

  // upstream connections
  void ensure_upstream();
  void start_upstream_chain();
  void drop_upstream(bool rst = false);
  void release_upstream();
  bool retry_stale(const std::string& why);
  void fail_upstream(Failure failure, const std::string& why);
  void pooled_upstream_eof();
  void pooled_upstream_error(const std::string& why, bool reset);
  void arm_reply_timer();
  void tunnel_eof(bool from_client);

  void await_replies(unsigned n, uint32_t tag, bool merge);
  void enqueue_injected(std::string bytes, bool close_after);
  void enqueue_close(bool rst, bool keep_upstream);
  size_t socket_backlog() const;
  size_t client_backlog() const;
  size_t upstream_backlog() const;
  void update_reading();
  void finish_client(bool rst);
  void shutdown_client();
  void close_upstream(bool rst);
  void close_everything(bool rst);
  void maybe_delete();

  Worker& worker_;
  ProxyRuntime& proxy_;
  std::unique_ptr<Protocol> protocol_;
  ClientHandler client_handler_;
  UpstreamHandler upstream_handler_;
  uint64_t id_ = 0;
  uint64_t ordinal_ = 0;
  Traits traits_;
  Conn* client_ = nullptr;
  Conn* upstream_ = nullptr;    // the current upstream connection
  int upstreams_closing_ = 0;   // let go of, their close not yet reported
  bool client_gone_ = false;    // closed callback came
  bool upstream_up_ = false;    // connected once
  std::string unreachable_;     // why the upstream could not be reached, until the client hears it

  std::string in_;        // client bytes not yet consumed (kept only across reads)
  std::string up_in_;     // upstream bytes not yet consumed
  std::string_view up_pending_;    // forwarded bytes gathered during one client read, written once
  std::string_view down_pending_;  // reply bytes gathered during one upstream read, written once
  bool processing_ = false;        // process_client() is on the stack

  std::deque<Slot> slots_;
  size_t awaited_ = 0;    // replies awaited (the counts of the forwarded slots)
  std::optional<ClientUnit> held_;  // the request a delay or hang holds (and all input after it)
  Hold hold_ = Hold::none;
  UvTimer hold_timer_;
  UvTimer linger_timer_;
  UvTimer reply_timer_;   // upstream_timeout: the awaited reply's first byte
  bool reply_begun_ = false;  // a frame of the head slot's reply came
  uint64_t reply_asked_us_ = 0;  // when the head slot's reply began to be awaited (latency metric)

  std::deque<Paced> paced_;
  size_t paced_bytes_ = 0;
  uint64_t pace_due_us_ = 0;
  UvTimer pace_timer_;
  int finish_after_paced_ = 0;  // 1: FIN, 2: reset, once the paced output has gone
  bool finish_when_flushed_ = false;  // a reset waits for what was written to go out

  // Pooled upstreams: a reused connection may have been closed by the upstream just as it was taken; what
  // was sent on it (if small) is kept until the first reply byte, to go again once on a fresh connection.
  bool upstream_reused_ = false;
  bool resend_ok_ = false;
  std::string resend_;
  bool keep_upstream_ = true;  // the current upstream connection may serve another request

  bool client_eof_ = false;     // the client sent FIN
  bool client_closing_ = false;
  bool upstream_closing_ = false;
  bool draining_upstream_ = false;  // the client is gone; the upstream finishes what it was sent
  bool closing_ = false;

  std::vector<const faults::ToxicSpec*> up_specs_;
  faults::ToxicContext toxic_ctx_;
  std::unique_ptr<UpChain> up_;
  std::vector<std::unique_ptr<UpChain>> retired_up_;  // freed at the next client read, not inside their callbacks
  std::unique_ptr<faults::ToxicChain> down_chain_;
  ChainOut down_out_;
  uint64_t down_offset_ = 0;
  bool in_down_push_ = false;
  bool up_aborted_ = false;    // a toxic ended its chain: nothing more goes through it
  bool down_aborted_ = false;
  bool stop_input_ = false;    // a drop, reset or malformed request: nothing after it is read
  bool unarmed_close_ = false; // a drop { after_forward } waits for its request to go upstream whole
};

}  // namespace faultline::proxy
