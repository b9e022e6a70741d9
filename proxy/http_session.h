// One client connection of a protocol = "http" proxy: requests parsed one at a time, each decided by the
// proxy's rules, then forwarded (to a keep-alive upstream connection, or the mock) or answered here.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "faults/rule_engine.h"
#include "faults/toxic_chain.h"
#include "proxy/conn.h"
#include "proxy/http/codec.h"
#include "proxy/http/sse.h"
#include "proxy/uv_timer.h"
#include "proxy/worker.h"

namespace faultline::proxy {

class HttpSession final : public WorkerSession {
 public:
  static void accept(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server);
  void force_close() override;

 private:
  struct ClientHandler : ConnHandler {
    HttpSession* s;
    void on_data(Conn&, std::string_view bytes) override;
    void on_eof(Conn&) override;
    void on_error(Conn&, const std::string& why, bool reset) override;
    void on_drain(Conn&) override;
    void on_closed(Conn&) override;
  };
  struct UpstreamHandler : ConnHandler {
    HttpSession* s;
    void on_data(Conn& c, std::string_view bytes) override;
    void on_eof(Conn& c) override;
    void on_error(Conn& c, const std::string& why, bool reset) override;
    void on_drain(Conn&) override;
    void on_closed(Conn& c) override;
  };

  // The end of a toxic chain (SPEC §2.4 toxics on an http proxy act on the bytes of each direction).
  struct ChainOut final : faults::ToxicOutput {
    HttpSession* s;
    bool downstream;
    bool live = true;  // an upstream chain whose connection is gone: what it still lets go is dropped
    void push(faults::Chunk chunk) override;
    void end() override {}
    void abort(bool rst) override;
  };

  // How the current response reaches the client.
  enum class Shape { pass, delay_response, throttle, truncate, sse_cut, sse_delay, discard };
  enum class Phase {
    idle,        // waiting for a request head
    looking,     // buffering the request body for json matchers (or the mock)
    delaying,    // delay(): waiting before forwarding
    hanging,     // hang(): holding the request
    forwarding,  // sent upstream (or to the mock); the response has not ended
    answered,    // answered here; the rest of the request body is read and dropped
    tunnel,      // Upgrade/CONNECT accepted: bytes both ways
    closing,     // the client is being closed
  };
  // A piece of response output, released at `due_us` (throttle, sse_delay, delay_response).
  struct Piece {
    uint64_t due_us = 0;
    std::string bytes;
  };

  HttpSession(Worker& worker, ProxyRuntime& proxy);
  ~HttpSession() override;

  template <typename F>
  void guard(F&& f);
  std::string tag() const;

  // client side
  void on_client_data(std::string_view bytes);
  void on_client_eof();
  void on_client_error(const std::string& why, bool reset);
  void on_client_drain();
  void on_client_closed();
  void pump();
  void on_request_head(const http::Event& ev, std::string_view in);
  void on_request_body(const http::Event& ev, std::string_view in);
  void on_request_end(const http::Event& ev, std::string_view in);
  void on_request_error(const std::string& reason, int status);
  void decide();
  void act(const faults::ActionSpec& action);
  void forward();
  void request_forwarded();
  void answer(const faults::ActionSpec& action);

  // upstream side
  void ensure_upstream();
  void send_upstream(std::string_view bytes);
  void send_upstream_now(std::string_view bytes);
  void flush_upstream_batch();
  void flush_client_batch();
  void on_upstream_data(std::string_view bytes);
  void on_upstream_eof();
  void on_upstream_error(const std::string& why, bool reset);
  void on_upstream_closed(Conn& c);
  void handle_response_events(std::string_view in);
  void on_response_head(std::string_view raw);
  void on_response_body(std::string_view raw, std::string_view data);
  void on_response_end(std::string_view raw);
  void upstream_failed(int status, const std::string& type, const std::string& why);
  void mock_respond();
  void drop_upstream();
  void detach_upstream();
  bool retry_on_fresh_upstream(const std::string& why);
  void maybe_delete();

  // output shaping
  void emit(std::string_view bytes, uint64_t due_us = 0);
  void emit_body(std::string_view data);
  void emit_events(std::string_view data);
  void cut(bool rst);
  void drain_pieces();
  size_t pending_output() const;

  void start_toxics();
  void to_client(std::string_view bytes);
  size_t client_backlog() const;
  void check_flushed();
  void maybe_finish_exchange();
  void reset_exchange();
  void finish_client(bool rst);
  void close_client(bool rst);
  void close_everything(bool rst);
  void update_reading();
  uint64_t now_us() const { return uv_hrtime() / 1000; }
  // The request being handled: the parser holds it until the next request's head, which is parsed only once
  // this exchange is over.
  const http::RequestHead& head() const { return req_.head(); }

  Worker& worker_;
  ProxyRuntime& proxy_;
  ClientHandler client_handler_;
  UpstreamHandler upstream_handler_;
  uint64_t id_ = 0;
  uint64_t ordinal_ = 0;
  Conn* client_ = nullptr;
  Conn* upstream_ = nullptr;
  std::string client_ip_;

  http::RequestParser req_;
  http::ResponseParser resp_;
  std::vector<http::Event> req_events_;
  std::vector<http::Event> resp_events_;
  bool pumping_ = false;      // pump() is on the stack: a nested call would feed bytes it has not consumed
  bool in_response_ = false;  // handle_response_events() is on the stack
  bool repump_ = false;       // an exchange ended inside it: pump once it returns
  int upstreams_closing_ = 0; // upstream connections closed but not yet called back
  std::string in_;     // client bytes the parser has not consumed yet
  std::string up_in_;  // upstream bytes the parser has not consumed yet
  std::string batch_;     // response bytes gathered during one upstream read, written once at its end
  std::string up_batch_;  // request bytes gathered during one client read

  // The current exchange.
  Phase phase_ = Phase::idle;
  std::string held_;          // request bytes held until the decision (rewritten head + raw body)
  std::string body_;          // decoded body, for json matchers (bounded)
  bool body_overflow_ = false;
  bool req_done_ = false;     // the request's end was seen
  bool resp_started_ = false; // the final response head went to the client (or was emitted)
  bool resp_done_ = false;
  bool upgrade_pending_ = false;
  bool keep_client_ = true;     // the client may send another request afterwards
  bool reuse_upstream_ = true;  // the upstream connection may serve another request
  bool drop_after_forward_ = false;
  // A kept-alive upstream connection may have been closed by the upstream just as we reused it: what was sent
  // on it (if small) is kept until the first response byte, to be sent again once on a new connection.
  bool upstream_reused_ = false;
  bool resend_ok_ = false;
  std::string resend_;
  std::optional<faults::RuleEngine::Fired> fired_;
  Shape shape_ = Shape::pass;
  faults::ActionSpec shape_action_;
  bool resp_chunked_ = false;  // re-frame decoded body pieces as chunks (truncate, sse_*)
  uint64_t shaped_bytes_ = 0;  // truncate: body bytes sent; throttle: bytes scheduled
  uint64_t shape_start_us_ = 0;
  uint64_t last_due_us_ = 0;
  http::SseSplitter sse_;
  std::string sse_partial_;  // the incomplete event at the end of what arrived
  uint64_t events_sent_ = 0;
  bool cut_pending_ = false;  // close after the pieces: a cut
  bool cut_rst_ = false;
  std::deque<Piece> pieces_;
  size_t pieces_bytes_ = 0;
  UvTimer action_timer_;  // delay, hang, upstream response timeout
  UvTimer piece_timer_;
  UvTimer close_timer_;   // closing: give the client a moment to read before the socket closes
  // The upstream toxics run per upstream connection: bytes they hold belong to the connection they were
  // sent on, never to the one that replaces it. A retired chain is freed at the next client read (not
  // from inside its own callbacks).
  struct UpChain {
    ChainOut out;
    std::unique_ptr<faults::ToxicChain> chain;
    uint64_t offset = 0;
  };
  void start_upstream_chain();
  void retire_upstream_chain();
  std::vector<const faults::ToxicSpec*> up_specs_;
  faults::ToxicContext toxic_ctx_;
  std::unique_ptr<UpChain> up_;
  std::vector<std::unique_ptr<UpChain>> retired_up_;
  std::unique_ptr<faults::ToxicChain> down_chain_;
  ChainOut down_out_;
  uint64_t down_offset_ = 0;
  bool chain_aborted_ = false;
  bool in_down_push_ = false;  // to_client() is pushing into the downstream chain
  bool closing_ = false;
  bool client_closed_ = false;
  bool close_when_flushed_ = false;
  bool close_rst_ = false;
};

}  // namespace faultline::proxy
