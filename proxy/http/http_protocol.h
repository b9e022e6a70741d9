// HTTP/1.1 on the message session (protocol.h): requests are heads (the message a rule sees) followed by
// body pieces that stream upstream as they come; one request is answered before the next is read (depth 1,
// so responses keep their order under pipelining); responses are shaped here by http.* actions (pacing and
// cuts the session carries out); an accepted Upgrade or CONNECT turns the connection into a tunnel.
//
// Bytes nobody touched pass as they came (the codec's raw ranges); the request head goes upstream rewritten
// (Host names the upstream, X-Forwarded-For the client).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "faults/rule.h"
#include "proxy/http/codec.h"
#include "proxy/http/request_message.h"
#include "proxy/http/sse.h"
#include "proxy/protocol.h"

namespace faultline::proxy {
struct ProxyRuntime;
}

namespace faultline::proxy::http {

// A whole response from an action: status line, its headers, content-length, body.
std::string serialize_response(const faults::ActionSpec& action, bool close, bool head_only);
// faultline's own errors (SPEC §6): JSON in the shape of OpenAI's, so SDKs print the message.
faults::ActionSpec error_response(int status, const std::string& type, const std::string& message, bool mark = true);

class HttpProtocol final : public Protocol {
 public:
  static constexpr size_t kLookAhead = 1024 * 1024;  // json matchers see bodies up to this size (SPEC §2.1)

  HttpProtocol(const ProxyRuntime& proxy, uint64_t connection, std::string client_ip);
  static std::unique_ptr<Protocol> make(const ProxyRuntime& proxy, uint64_t connection, const std::string& peer);

  ClientUnit client(std::string_view in) override;
  Forward forward() override;
  Injected inject(const faults::ActionSpec& action) override;
  bool wait_for_replies() const override { return state_ != State::body && !tunnel_; }
  bool request_open() const override { return state_ == State::body; }
  bool tunnel() const override { return tunnel_; }
  Traits traits() const override {
    Traits t;
    t.pooled_upstream = true;
    t.reply_timeout = true;
    return t;
  }

  ReplyUnit reply(std::string_view in, uint32_t head_tag) override;
  ReplyUnit reply_eof() override;
  FailureReply upstream_failure(Failure failure, const std::string& why) override;

 private:
  // An event of the codec, by stream offsets (the buffers the session passes move between calls).
  struct Ev {
    EventKind kind;
    uint64_t begin = 0, end = 0;
    uint64_t data_begin = 0, data_end = 0;
  };
  struct Stream {
    std::deque<Ev> events;
    uint64_t base = 0;  // stream offset of the first byte not yet handed out
    uint64_t fed = 0;   // stream offset up to which the parser has been fed
  };
  enum class State {
    idle,     // waiting for a request head
    looking,  // buffering the body for json matchers (or the mock) before the decision
    decide,   // a head (and what was looked at) handed out as a message: forward() or inject() comes next
    body,     // decided: the body streams (upstream, or dropped when answered here)
    done,     // the whole request went: its response is awaited
  };
  enum class Shape { pass, delay_response, throttle, truncate, sse_cut, sse_delay };

  template <typename Parser>
  bool fill(Stream& st, Parser& parser, std::string_view in);
  static std::string_view data_of(const Stream& st, const Ev& ev, std::string_view in);
  void fold_client(Stream& st);
  ClientUnit message_unit(std::string_view in, uint64_t end);
  void request_ended();
  std::string mock_response();
  ClientUnit bad_request();

  ReplyUnit response_head(std::string_view raw, uint64_t end);
  ReplyUnit response_body(std::string_view raw, std::string_view data, uint64_t end);
  ReplyUnit response_end(std::string_view raw, uint64_t end);
  ReplyUnit frame(std::string_view raw, uint64_t end);
  void fold_reply(ReplyUnit& u);
  void response_over(ReplyUnit& u);
  std::string end_tail();
  std::string framed(std::string_view data) const;
  std::vector<std::string> events_of(std::string_view data, bool* cut);
  uint64_t delay_us() const;

  const ProxyRuntime& proxy_;
  uint64_t connection_ = 0;
  std::string client_ip_;

  RequestParser req_;
  ResponseParser resp_;
  std::vector<Event> scratch_;
  Stream cs_;  // client
  Stream rs_;  // upstream

  State state_ = State::idle;
  bool tunnel_ = false;
  std::optional<RequestMessage> msg_;
  std::string forwarded_;       // the rewritten head (and the body looked at) for forward()
  std::string body_;            // decoded body, for json matchers and the mock (bounded)
  bool body_overflow_ = false;
  uint64_t head_end_ = 0;       // looking: stream offset just after the head
  bool continue_sent_ = false;  // looking: 100 Continue answered here
  bool body_forwarded_ = true;  // the body goes upstream (not answered here)
  bool req_done_ = false;       // the request's end was handed out
  bool resp_done_ = true;       // its response ended (or was made here)
  bool keep_client_ = true;     // the client may send another request
  bool upgrade_pending_ = false;
  std::string method_;          // of the request being answered
  bool head_only_ = false;      // HEAD
  int version_minor_ = 1;

  // The response being read.
  Shape shape_ = Shape::pass;
  faults::ActionSpec shape_action_;
  bool interim_ = false;        // a 1xx head was read: its end is not the response's
  bool resp_started_ = false;   // the final head went to the client
  bool resp_chunked_ = false;   // shaped body pieces are re-framed as chunks
  bool reuse_upstream_ = true;
  uint64_t shaped_ = 0;         // truncate: body bytes let through; throttle: bytes scheduled
  SseSplitter sse_;
  std::string sse_partial_;     // the incomplete event at the end of what arrived
  uint64_t events_sent_ = 0;
  bool cut_ = false;            // the response was cut: nothing more of it counts
  std::string_view pending_raw_;  // the raw bytes of the frame being built (valid during reply())
  std::deque<ReplyUnit> queued_;  // frames made from one event, handed out one per call (sse_delay)
};

}  // namespace faultline::proxy::http
