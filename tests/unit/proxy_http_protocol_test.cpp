// The http protocol of the message session, driven the way the session drives it (no sockets: protocol.h is
// pure): what goes upstream for a request split at every byte, how responses come back as frames, and how
// the http.* actions shape them into pacing and cuts.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/http/http_protocol.h"
#include "proxy/runtime.h"

using namespace faultline;
using namespace faultline::proxy;
using Kind = ClientUnit::Kind;

namespace {

struct Fixture {
  faults::ProxySpec spec;
  ProxyRuntime rt;
  Fixture() {
    spec.name = "p";
    spec.protocol = faults::Protocol::http;
    spec.upstream = "up:8080";
    rt.spec = &spec;
    rt.upstream_host_header = "up:8080";
  }
  http::HttpProtocol protocol() { return http::HttpProtocol(rt, 1, "10.0.0.1"); }
};

faults::ActionSpec action(faults::ActionSpec::Type type) {
  faults::ActionSpec a;
  a.type = type;
  return a;
}

// Client bytes in the given pieces, as the session consumes them: every message forwarded (or answered by
// `answer` when set). Returns what went upstream; `out` gets what went to the client.
struct ClientRun {
  std::string upstream;
  std::string to_client;
  int messages = 0;
};

ClientRun run_client(http::HttpProtocol& p, const std::vector<std::string>& pieces,
                     const faults::ActionSpec* answer = nullptr) {
  ClientRun run;
  std::string in;
  for (const std::string& piece : pieces) {
    in += piece;
    size_t pos = 0;
    while (pos < in.size()) {
      ClientUnit u = p.client(std::string_view(in).substr(pos));
      if (u.kind == Kind::more) break;
      REQUIRE(u.kind != Kind::error);
      const std::string raw = in.substr(pos, u.size);
      if (u.kind == Kind::message) {
        ++run.messages;
        if (answer) {
          run.to_client += p.inject(*answer).bytes;
        } else {
          Forward f = p.forward();
          CHECK(f.slots == 1);
          run.upstream += f.raw ? raw : f.bytes;
        }
      } else if (u.kind == Kind::pass) {
        run.upstream += raw;
      } else if (u.kind == Kind::answer) {
        run.to_client += u.reply;
      }
      pos += u.size;
    }
    in.erase(0, pos);
  }
  CHECK(in.empty());
  return run;
}

struct ReplyRun {
  std::string to_client;
  std::vector<ReplyUnit> frames;  // those with bytes or an end
  int ends = 0;
  bool cut = false;
};

// Upstream bytes in the given pieces, for one awaited reply (tag 0).
ReplyRun run_reply(http::HttpProtocol& p, const std::vector<std::string>& pieces) {
  ReplyRun run;
  std::string in;
  for (const std::string& piece : pieces) {
    in += piece;
    size_t pos = 0;
    while (pos < in.size() && !run.cut) {
      ReplyUnit u = p.reply(std::string_view(in).substr(pos), run.ends == 0 ? 0 : Protocol::kNoSlot);
      if (u.kind == ReplyUnit::Kind::more) break;
      REQUIRE(u.kind == ReplyUnit::Kind::frame);
      const std::string bytes = u.replaced ? u.bytes : in.substr(pos, u.size);
      run.to_client += bytes;
      if (!bytes.empty() || u.ends || u.cut != ReplyUnit::Cut::none) run.frames.push_back(u);
      if (u.ends) ++run.ends;
      if (u.cut != ReplyUnit::Cut::none) run.cut = true;
      pos += u.size;
    }
    in.erase(0, pos);
  }
  return run;
}

std::vector<std::string> split(const std::string& s, size_t at) { return {s.substr(0, at), s.substr(at)}; }

const std::string kChunkedPost =
    "POST /v1/x HTTP/1.1\r\nHost: client.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

}  // namespace

TEST_CASE("http: a chunked request split at every byte goes upstream as the rewritten head and the raw body",
          "[http_protocol]") {
  Fixture fx;
  auto whole = fx.protocol();
  const ClientRun ref = run_client(whole, {kChunkedPost});
  CHECK(ref.messages == 1);
  CHECK(ref.upstream.starts_with("POST /v1/x HTTP/1.1\r\n"));
  CHECK(ref.upstream.find("Host: up:8080\r\n") != std::string::npos);
  CHECK(ref.upstream.find("X-Forwarded-For: 10.0.0.1\r\n") != std::string::npos);
  CHECK(ref.upstream.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  CHECK_FALSE(whole.request_open());
  CHECK(whole.wait_for_replies());
  for (size_t cut = 1; cut < kChunkedPost.size(); ++cut) {
    auto p = fx.protocol();
    const ClientRun run = run_client(p, split(kChunkedPost, cut));
    INFO("split at " << cut);
    CHECK(run.messages == 1);
    CHECK(run.upstream == ref.upstream);
    CHECK_FALSE(p.request_open());
  }
}

TEST_CASE("http: a response split at every byte comes back as it came and ends its slot once", "[http_protocol]") {
  Fixture fx;
  for (const std::string& response : {std::string("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"),
                                     std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                 "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
                                     std::string("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")}) {
    for (size_t cut = 1; cut < response.size(); ++cut) {
      auto p = fx.protocol();
      run_client(p, {"GET / HTTP/1.1\r\nHost: h\r\n\r\n"});
      const ReplyRun run = run_reply(p, split(response, cut));
      INFO(response << " split at " << cut);
      CHECK(run.to_client == response);
      CHECK(run.ends == 1);
      CHECK(run.frames.back().ends);
      CHECK_FALSE(run.frames.back().client_done);
      CHECK_FALSE(run.frames.back().upstream_done);
    }
  }
}

TEST_CASE("http: a second pipelined request is read only once the first response ended", "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  const std::string two = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  ClientUnit first = p.client(two);
  REQUIRE(first.kind == Kind::message);
  p.forward();
  CHECK(p.wait_for_replies());
  const ReplyRun reply = run_reply(p, {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"});
  CHECK(reply.ends == 1);
  ClientUnit second = p.client(std::string_view(two).substr(first.size));
  REQUIRE(second.kind == Kind::message);
  CHECK(first.size + second.size == two.size());
}

TEST_CASE("http: a request answered here skips the rest of its body and the next request follows",
          "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  const std::string head = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n";
  ClientUnit u = p.client(head);
  REQUIRE(u.kind == Kind::message);
  auto respond = action(faults::ActionSpec::Type::respond);
  respond.status = 503;
  respond.body = "busy";
  Injected inj = p.inject(respond);
  CHECK(inj.bytes.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  CHECK(inj.bytes.ends_with("\r\n\r\nbusy"));
  CHECK_FALSE(inj.close_after);
  CHECK(p.request_open());
  ClientUnit body = p.client("0123456789GET /n HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(body.kind == Kind::skip);
  CHECK(body.size == 10);
  CHECK_FALSE(p.request_open());
  CHECK(p.client("GET /n HTTP/1.1\r\nHost: h\r\n\r\n").kind == Kind::message);
}

TEST_CASE("http: sse_delay makes each event a paced frame even when they arrive together", "[http_protocol]") {
  Fixture fx;
  auto delay = action(faults::ActionSpec::Type::sse_delay);
  delay.ms = 150;
  // The session asks the protocol about the action after the message, before it forwards it.
  auto q = fx.protocol();
  ClientUnit m = q.client("GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(m.kind == Kind::message);
  CHECK(q.inject(delay).forward);
  q.forward();
  const std::string events = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                               std::to_string(events.size()) + "\r\n\r\n" + events;
  const ReplyRun run = run_reply(q, {response});
  CHECK(run.to_client == response);
  REQUIRE(run.frames.size() == 4);  // the head, then one frame per event
  CHECK(run.frames[0].after_us == 0);
  for (size_t i = 1; i < 4; ++i) {
    CHECK(run.frames[i].after_us == 150000);
    CHECK(run.frames[i].bytes == "data: " + std::to_string(i) + "\n\n");
  }
  CHECK(run.frames[3].ends);
}

TEST_CASE("http: truncate re-frames a chunked body and cuts after exactly n bytes", "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  REQUIRE(p.client("GET /b HTTP/1.1\r\nHost: h\r\n\r\n").kind == Kind::message);
  auto truncate = action(faults::ActionSpec::Type::truncate);
  truncate.bytes = 7;
  CHECK(p.inject(truncate).forward);
  p.forward();
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const ReplyRun run = run_reply(p, {head + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"});
  CHECK(run.cut);
  CHECK(run.to_client == head + "5\r\nhello\r\n2\r\n w\r\n");
  CHECK(run.frames.back().cut == ReplyUnit::Cut::close);
  CHECK(run.ends == 0);
}

TEST_CASE("http: throttle paces every frame of the response by its rate", "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  REQUIRE(p.client("GET /b HTTP/1.1\r\nHost: h\r\n\r\n").kind == Kind::message);
  auto throttle = action(faults::ActionSpec::Type::throttle);
  throttle.bytes_per_second = 1000;
  CHECK(p.inject(throttle).forward);
  p.forward();
  const ReplyRun run = run_reply(p, {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"});
  for (const ReplyUnit& f : run.frames) CHECK(f.rate == 1000);
  CHECK(run.ends == 1);
}

TEST_CASE("http: a Connection: close response ends the client and the upstream connection", "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  run_client(p, {"GET / HTTP/1.1\r\nHost: h\r\n\r\n"});
  const ReplyRun run = run_reply(p, {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"});
  REQUIRE(run.ends == 1);
  CHECK(run.frames.back().client_done);
  CHECK(run.frames.back().upstream_done);
}

TEST_CASE("http: an accepted upgrade turns both directions into a tunnel", "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  const std::string head = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  ClientUnit u = p.client(head + "early");
  REQUIRE(u.kind == Kind::message);
  CHECK(u.size == head.size());
  p.forward();
  CHECK(p.wait_for_replies());
  const std::string accepted = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  ReplyUnit r = p.reply(accepted + "frames", 0);
  CHECK(r.kind == ReplyUnit::Kind::frame);
  CHECK(r.size == accepted.size());
  CHECK(r.ends);
  CHECK(p.tunnel());
  ReplyUnit rest = p.reply("frames", Protocol::kNoSlot);
  CHECK(rest.kind == ReplyUnit::Kind::async);
  CHECK(rest.size == 6);
  ClientUnit early = p.client("early");
  CHECK(early.kind == Kind::pass);
  CHECK(early.size == 5);
}

TEST_CASE("http: an upstream that closes mid-body is an error, one that never answered is nothing",
          "[http_protocol]") {
  Fixture fx;
  auto p = fx.protocol();
  run_client(p, {"GET / HTTP/1.1\r\nHost: h\r\n\r\n"});
  CHECK(p.reply_eof().kind == ReplyUnit::Kind::more);
  FailureReply f = p.upstream_failure(Failure::closed, "faultline: upstream up:8080 closed");
  CHECK(f.bytes.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
  CHECK(f.bytes.find("x-faultline-error: upstream_closed") != std::string::npos);
  CHECK_FALSE(f.reset);

  auto q = fx.protocol();
  run_client(q, {"GET / HTTP/1.1\r\nHost: h\r\n\r\n"});
  run_reply(q, {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"});
  CHECK(q.reply_eof().kind == ReplyUnit::Kind::error);
  CHECK(q.upstream_failure(Failure::closed, "x").reset);  // a body had begun: only a reset can say so

  auto eof = fx.protocol();
  run_client(eof, {"GET / HTTP/1.1\r\nHost: h\r\n\r\n"});
  run_reply(eof, {"HTTP/1.1 200 OK\r\n\r\nuntil the end"});
  ReplyUnit end = eof.reply_eof();
  CHECK(end.kind == ReplyUnit::Kind::frame);
  CHECK(end.ends);
  CHECK(end.upstream_done);
}

TEST_CASE("http: the mock answers a whole request with a reply read as if from an upstream", "[http_protocol]") {
  Fixture fx;
  fx.spec.mock = true;
  fx.spec.upstream = "mock";
  fx.rt.needs_body = true;
  auto completion = action(faults::ActionSpec::Type::respond);
  completion.status = 200;
  completion.body = "{\"object\":\"chat.completion\"}";
  auto stream = completion;
  stream.body = "data: [DONE]\n\n";
  fx.spec.mock_completion = completion;
  fx.spec.mock_stream = stream;
  auto p = fx.protocol();
  const std::string body = "{\"stream\":true}";
  const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  for (size_t cut = 1; cut < req.size(); ++cut) {
    auto m = fx.protocol();
    std::string in;
    Forward f;
    int messages = 0;
    for (const std::string& piece : split(req, cut)) {
      in += piece;
      ClientUnit u = m.client(in);
      if (u.kind == Kind::more) continue;
      REQUIRE(u.kind == Kind::message);
      CHECK(u.size == req.size());
      ++messages;
      f = m.forward();
    }
    REQUIRE(messages == 1);
    CHECK(f.bytes.empty());
    const ReplyRun run = run_reply(m, {f.synthetic});
    CHECK(run.ends == 1);
    CHECK(run.to_client.ends_with("data: [DONE]\n\n"));
  }
}
