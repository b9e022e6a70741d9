// The seam between a message session and one wire protocol (DESIGN.md, "one message session"): a Protocol
// is pure — one instance per client connection, no sockets, no timers — and says how client bytes split into
// requests, how upstream bytes split into replies, which replies are asynchronous, and what an injected
// reply looks like. MessageSession (message_session.h) does everything else: rules, generic actions, the
// reply queue, toxics, backpressure and closing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "faults/message.h"
#include "faults/rule.h"

namespace faultline::proxy {

// The next unit of client input.
struct ClientUnit {
  enum class Kind {
    more,     // incomplete: wait for more bytes
    message,  // a request rules decide on (msg); then forward() or inject() is called
    pass,     // bytes that go upstream as they are, without a decision (auth exchange, COPY data)
    skip,     // bytes consumed and dropped (what a server would ignore, e.g. up to Sync after an error)
    answer,   // answered here without a decision and without going upstream (SSLRequest → "N")
    error,    // malformed: `reply` (may be empty) goes to the client after what is queued, then both close
  };
  Kind kind = Kind::more;
  size_t size = 0;                        // bytes of input covered (all kinds but more)
  const faults::Message* msg = nullptr;   // message: valid until the next call into the protocol
  unsigned slots = 0;                     // pass: reply slots the bytes open (postgres startup: 1)
  uint32_t tag = 0;                       // pass: the tag of those slots
  std::string reply;                      // answer, error
  std::string why;                        // error: for the log, naming what was wrong and where
  // pass: no upstream (http's mock): these bytes are the reply to the request the unit completes, read
  // through reply() as if the upstream had sent them.
  std::string synthetic;
};

// What goes upstream for a request that rules let pass.
struct Forward {
  bool raw = true;         // send the request's bytes as they came
  std::string bytes;       // otherwise these (EXEC sent as DISCARD, COMMIT as ROLLBACK)
  unsigned slots = 1;      // reply slots the request opens (0: no reply expected, e.g. CLIENT REPLY OFF)
  uint32_t tag = 0;        // handed back with the slot's reply frames (protocol-defined)
  std::string local;       // non-empty: answered here instead, in its place in the reply order (nothing sent)
  std::string synthetic;   // as ClientUnit::synthetic, when the request is already complete
};

// An injected reply (a protocol action such as redis.error or postgres.error).
struct Injected {
  std::string bytes;
  bool close_after = false;  // postgres.fatal: close both sides once it is delivered
  // Sent upstream as well, so the server's state follows (e.g. DISCARD for an EXEC a rule answered); its
  // replies come back under `upstream_tag`, and the protocol swallows them.
  std::string upstream;
  unsigned upstream_slots = 0;
  uint32_t upstream_tag = 0;
  // The request is forwarded as if no rule had fired, and the action shapes its reply (http.throttle,
  // http.truncate...): the reply units then carry the pacing and the cut.
  bool forward = false;
};

// The next unit of upstream input. `head_tag` is the tag of the oldest reply slot still waiting, or
// kNoSlot.
struct ReplyUnit {
  enum class Kind {
    more,   // incomplete
    frame,  // part of the head slot's reply; `ends` when it completes it
    async,  // out of band (RESP3 push, pub/sub message, NoticeResponse...): takes no slot
    error,  // malformed: the session closes both sides (or answers upstream_failure(bad_reply))
    stray,  // bytes no request asked for: this upstream connection is not safe to use (pooled upstreams)
  };
  enum class Cut { none, close, reset };
  Kind kind = Kind::more;
  size_t size = 0;
  bool ends = false;
  bool replaced = false;   // send `bytes` instead of the frame's own
  std::string bytes;
  std::string why;
  // Pacing: the frame goes to the client no earlier than this long after the later of now and the moment
  // the previous paced frame goes (http.delay_response, http.throttle, http.sse_delay).
  uint64_t after_us = 0;
  // Pacing by rate: the frame is released in slices of 1/20 s at this many bytes per second (http.throttle).
  uint64_t rate = 0;
  // The reply is cut after this frame: the upstream connection is dropped and the client closed (FIN or
  // reset) once what went before has gone out (http.truncate, http.sse_cut).
  Cut cut = Cut::none;
  // With `ends`: the upstream connection may not serve another request / the client connection ends after
  // this reply.
  bool upstream_done = false;
  bool client_done = false;
};

// Why the upstream did not answer an awaited reply.
enum class Failure { unreachable, closed, bad_reply, timeout };

// What the client gets then: `bytes` in place of the reply, then the client is closed (with a reset when
// `reset`, e.g. a reply that had begun and cannot be completed).
struct FailureReply {
  std::string bytes;
  bool reset = false;
};

// How the session treats the upstream for a protocol.
struct Traits {
  // Upstream connections are opened when a request needs one, come from and go back to a keep-alive pool,
  // may close between replies (the next request opens another), and a reused one that turns out closed
  // before any reply byte gets the request again once on a fresh connection (http). Otherwise: one upstream
  // connection per client connection, opened at accept, and its close ends the client's.
  bool pooled_upstream = false;
  // upstream_timeout applies: no reply byte this long after a request is an upstream failure (http).
  bool reply_timeout = false;
  // TLS to the upstream starts only once this in-clear request is answered with `tls_ok` (PostgreSQL's
  // SSLRequest, answered 'S'); empty: the handshake starts at connect.
  std::string tls_request;
  char tls_ok = 0;
};

class Protocol {
 public:
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  virtual ~Protocol() = default;

  // Client side. `in` starts at the first byte not yet consumed; it may only have grown since a `more`.
  virtual ClientUnit client(std::string_view in) = 0;
  // The last `message` unit goes upstream / was answered by an action of this protocol.
  virtual Forward forward() = 0;
  virtual Injected inject(const faults::ActionSpec& action) = 0;
  // Nothing more is parsed while this is true and replies are still awaited (the protocol needs to see
  // them before it can decide what comes next, e.g. the transaction status after an injected error).
  virtual bool wait_for_replies() const { return false; }
  // The last request decided on is still arriving (an http body): what follows it is part of it.
  virtual bool request_open() const { return false; }
  // The connection has become a tunnel (an accepted http Upgrade or CONNECT): client units are all `pass`,
  // replies all `async`, and each side's FIN is passed on.
  virtual bool tunnel() const { return false; }
  virtual Traits traits() const { return {}; }

  // Upstream side.
  virtual ReplyUnit reply(std::string_view in, uint32_t head_tag) = 0;
  // The upstream closed while a reply was awaited (pooled upstreams): a reply that ends with the connection
  // (a frame that `ends`), or `more` when nothing of it came, or `error` when it was cut short.
  virtual ReplyUnit reply_eof() { return {}; }

  // What the client gets when the upstream cannot be reached or breaks while replies are awaited
  // (already framed for the protocol); empty bytes: just close.
  virtual FailureReply upstream_failure(Failure failure, const std::string& why) = 0;
  // Sent upstream before a deliberate close (postgres Terminate), or empty.
  virtual std::string goodbye() const { return ""; }
};

}  // namespace faultline::proxy
