#include "proxy/admin/admin_server.h"

#include <openssl/crypto.h>

#include <spdlog/spdlog.h>

#include "proxy/admin/metrics.h"
#include "proxy/admin/native_api.h"
#include "proxy/admin/toxiproxy_api.h"
#include "proxy/conn.h"
#include "proxy/http/codec.h"
#include "proxy/http/http_protocol.h"
#include "proxy/worker.h"

namespace faultline::proxy::admin {

namespace {

constexpr size_t kMaxPending = 64 * 1024;  // unparsed bytes beyond a body: a request head never needs more

bool token_matches(std::string_view given, const std::string& token) {
  const std::string want = "Bearer " + token;
  return given.size() == want.size() && CRYPTO_memcmp(given.data(), want.data(), want.size()) == 0;
}

// One connection to the control API: requests one after the other (keep-alive), each answered in full.
class Connection final : public WorkerSession, public ConnHandler {
 public:
  Connection(Worker& worker, const Options& options) : worker_(worker), options_(options) { worker_.add(this); }
  ~Connection() override { worker_.remove(this); }

  void start(Conn* conn) {
    conn_ = conn;
    conn_->read_start();
  }
  void force_close() override {
    if (conn_) conn_->close();
  }

  void on_data(Conn&, std::string_view bytes) override {
    if (closing_) return;
    in_.append(bytes);
    try {
      pump();
    } catch (const std::exception& e) {  // never across a libuv callback
      spdlog::error("control API: internal error: {}", e.what());
      reply(error(500, std::string("internal error: ") + e.what()), true);
    }
  }
  void on_eof(Conn&) override {
    if (conn_) conn_->close();
  }
  void on_error(Conn&, const std::string& why, bool) override { spdlog::debug("control API connection: {}", why); }
  void on_closed(Conn&) override {
    conn_ = nullptr;
    delete this;
  }

 private:
  void pump() {
    while (!closing_ && !in_.empty()) {
      events_.clear();
      const size_t used = parser_.feed(in_, events_);
      bool done = false;
      for (const http::Event& ev : events_) {
        if (ev.kind == http::EventKind::head) {
          body_.clear();
          const auto& head = parser_.head();
          if (head.content_length && *head.content_length > options_.max_body) {
            reply(error(413, "request body over " + std::to_string(options_.max_body) + " bytes"), true);
            return;
          }
        } else if (ev.kind == http::EventKind::body) {
          if (body_.size() + ev.data.size() > options_.max_body) {
            reply(error(413, "request body over " + std::to_string(options_.max_body) + " bytes"), true);
            return;
          }
          body_.append(ev.data);
        } else if (ev.kind == http::EventKind::end) {
          done = true;
        } else if (ev.kind == http::EventKind::error || ev.kind == http::EventKind::upgrade) {
          const std::string reason = ev.kind == http::EventKind::error ? parser_.error().reason : "upgrade refused";
          reply(error(400, "malformed request: " + reason), true);
          return;
        }
      }
      in_.erase(0, used);
      if (done) {
        handle();
        continue;
      }
      if (used == 0) {
        if (in_.size() > kMaxPending) reply(error(431, "request head too large"), true);
        return;  // an incomplete head: wait for more
      }
    }
  }

  void handle() {
    const http::RequestHead& head = parser_.head();
    const bool close = !head.keep_alive;
    if (!options_.token.empty() && !token_matches(head.header("authorization").value_or(""), options_.token)) {
      reply(error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)"), close, true);
      return;
    }
    // As Toxiproxy does: a browser (or a page in one) has no business here.
    if (head.header("user-agent").value_or("").starts_with("Mozilla/")) {
      reply(error(403, "User agent not allowed"), close);
      return;
    }
    Request req;
    req.method = head.method;
    req.path = head.path();
    req.query = head.query();
    req.body = std::move(body_);
    body_.clear();
    Runtime& rt = worker_.runtime();
    const double now_s = static_cast<double>(uv_hrtime() - rt.start_ns) / 1e9;
    Response resp;
    if (req.path == "/metrics" || req.path == "/faultline/v1/metrics") {
      if (req.method == "GET" || req.method == "HEAD")
        resp = {200, metrics_text(rt, now_s), "text/plain; version=0.0.4; charset=utf-8"};
      else
        resp = error(405, req.method + " " + req.path + ": use GET");
    } else if (req.path == "/faultline/v1" || req.path.rfind("/faultline/v1/", 0) == 0) {
      resp = native(req, rt);
    } else if (is_toxiproxy_path(req.path)) {
      resp = toxiproxy(req, rt);
    } else {
      resp = error(404, "no such endpoint: " + req.method + " " + req.path + " (the native API is under /faultline/v1)");
    }
    spdlog::debug("control API: {} {} -> {}", req.method, req.path, resp.status);
    reply(resp, close, false, req.method == "HEAD");
  }

  void reply(const Response& resp, bool close, bool challenge = false, bool head_only = false) {
    if (!conn_) return;
    faults::ActionSpec a;
    a.status = resp.status;
    a.headers = {{"content-type", resp.content_type}};
    if (challenge) a.headers.emplace_back("www-authenticate", "Bearer");
    a.body = resp.body;
    conn_->write(http::serialize_response(a, close, head_only));
    if (close) {
      closing_ = true;
      conn_->shutdown();
    }
  }

  Worker& worker_;
  const Options& options_;
  Conn* conn_ = nullptr;
  http::RequestParser parser_;
  std::vector<http::Event> events_;
  std::string in_;
  std::string body_;
  bool closing_ = false;
};

}  // namespace

void accept(Worker& worker, uv_stream_t* server, const Options& options) {
  auto* c = new Connection(worker, options);
  std::string why;
  Conn* conn = Conn::accept(worker, server, c, &why);
  if (!conn) {
    spdlog::warn("control API: accept failed: {}", why);
    delete c;
    return;
  }
  c->start(conn);
}

}  // namespace faultline::proxy::admin
