// The redis and postgres protocols of the message session, driven directly: which requests take a reply
// slot, what goes upstream, and how replies are rewritten (no sockets: proxy/protocol.h is pure).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/postgres/pg_protocol.h"
#include "proxy/postgres/wire.h"
#include "proxy/redis/redis_protocol.h"
#include "proxy/redis/resp.h"

using namespace faultline;
using namespace faultline::proxy;
using Kind = ClientUnit::Kind;

namespace {

std::string cmd(std::initializer_list<std::string_view> args) {
  std::string out;
  proxy::redis::encode_command(out, args);
  return out;
}

faults::ActionSpec action(faults::ActionSpec::Type type) {
  faults::ActionSpec a;
  a.type = type;
  return a;
}

// A request the session forwards: the unit must be a message of exactly `bytes`.
Forward forwarded(Protocol& p, const std::string& bytes) {
  ClientUnit u = p.client(bytes);
  REQUIRE(u.kind == Kind::message);
  REQUIRE(u.size == bytes.size());
  return p.forward();
}

std::string pg_msg(char type, std::string body) {
  std::string out(1, type);
  const uint32_t len = static_cast<uint32_t>(body.size() + 4);
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((len >> shift) & 0xff));
  return out + body;
}
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }
std::string ready(char status) { return pg_msg('Z', std::string(1, status)); }
std::string pg_query(std::string_view sql) { return pg_msg('Q', cstr(sql)); }

}  // namespace

TEST_CASE("redis: a command split at every byte is one message once whole", "[protocols]") {
  const std::string bytes = cmd({"SET", "key", "value with spaces"}) + cmd({"GET", "key"});
  const std::string first = cmd({"SET", "key", "value with spaces"});
  for (size_t cut = 0; cut < first.size(); ++cut) {
    proxy::redis::RedisProtocol p(1, true);
    for (size_t k = 0; k <= cut; ++k) CHECK(p.client(first.substr(0, k)).kind == Kind::more);
    ClientUnit u = p.client(bytes);
    REQUIRE(u.kind == Kind::message);
    CHECK(u.size == first.size());
    CHECK(*u.msg->field_ref("command") == "SET");
    CHECK(p.forward().slots == 1);
  }
}

TEST_CASE("redis: an error injected into MULTI makes EXEC go upstream as DISCARD and come back EXECABORT",
          "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  CHECK(forwarded(p, cmd({"MULTI"})).slots == 1);
  CHECK(forwarded(p, cmd({"SET", "a", "1"})).slots == 1);
  REQUIRE(p.client(cmd({"SET", "bad", "1"})).kind == Kind::message);
  auto err = action(faults::ActionSpec::Type::redis_error);
  err.message = "ERR injected";
  CHECK(p.inject(err).bytes == "-ERR injected\r\n");
  Forward exec = forwarded(p, cmd({"EXEC"}));
  CHECK_FALSE(exec.raw);
  CHECK(exec.bytes == cmd({"DISCARD"}));
  ReplyUnit r = p.reply("+OK\r\n", exec.tag);
  CHECK(r.replaced);
  CHECK(r.bytes == "-EXECABORT Transaction discarded because of previous errors.\r\n");
  // the next transaction is a fresh one
  CHECK(forwarded(p, cmd({"MULTI"})).tag == proxy::redis::RedisProtocol::kPlain);
  Forward exec2 = forwarded(p, cmd({"EXEC"}));
  CHECK(exec2.raw);
}

TEST_CASE("redis: a value given to a queued command is merged into EXEC's array in its place", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  forwarded(p, cmd({"MULTI"}));
  forwarded(p, cmd({"GET", "x"}));
  REQUIRE(p.client(cmd({"GET", "y"})).kind == Kind::message);
  auto value = action(faults::ActionSpec::Type::redis_reply);
  value.value = 42;
  CHECK(p.inject(value).bytes == "+QUEUED\r\n");
  forwarded(p, cmd({"INCR", "z"}));
  Forward exec = forwarded(p, cmd({"EXEC"}));
  ReplyUnit r = p.reply("*2\r\n$1\r\nR\r\n:1\r\n", exec.tag);
  CHECK(r.ends);
  CHECK(r.bytes == "*3\r\n$1\r\nR\r\n:42\r\n:1\r\n");
  // a nil EXEC (WATCH failed) stays nil
  forwarded(p, cmd({"MULTI"}));
  REQUIRE(p.client(cmd({"GET", "y"})).kind == Kind::message);
  p.inject(value);
  Forward exec2 = forwarded(p, cmd({"EXEC"}));
  CHECK(p.reply("*-1\r\n", exec2.tag).bytes == "*-1\r\n");
}

TEST_CASE("redis: RESP2 pub/sub frames are out of band only while subscribed", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  const std::string message = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
  // Before any subscription, an array that happens to start with "message" is an ordinary reply.
  CHECK(forwarded(p, cmd({"LRANGE", "l", "0", "-1"})).slots == 1);
  CHECK(p.reply(message, 0).kind == ReplyUnit::Kind::frame);
  CHECK(forwarded(p, cmd({"SUBSCRIBE", "ch"})).slots == 0);
  CHECK(p.reply("*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", Protocol::kNoSlot).kind == ReplyUnit::Kind::async);
  CHECK(p.reply(message, Protocol::kNoSlot).kind == ReplyUnit::Kind::async);
  CHECK(forwarded(p, cmd({"PING"})).slots == 1);
  CHECK(p.reply("*2\r\n$4\r\npong\r\n$0\r\n\r\n", 0).kind == ReplyUnit::Kind::frame);
  CHECK(forwarded(p, cmd({"UNSUBSCRIBE"})).slots == 0);
  CHECK(p.reply("*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n", Protocol::kNoSlot).kind == ReplyUnit::Kind::async);
  CHECK(forwarded(p, cmd({"LRANGE", "l", "0", "-1"})).slots == 1);
  CHECK(p.reply(message, 0).kind == ReplyUnit::Kind::frame);
}

TEST_CASE("redis: RESP3 pushes are always out of band and nil is encoded for the version spoken", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  forwarded(p, cmd({"HELLO", "3"}));
  CHECK(p.reply(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", 0).kind == ReplyUnit::Kind::async);
  REQUIRE(p.client(cmd({"GET", "k"})).kind == Kind::message);
  CHECK(p.inject(action(faults::ActionSpec::Type::redis_reply)).bytes == "_\r\n");
}

TEST_CASE("redis: CLIENT REPLY OFF and SKIP take no slots; ON takes one", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  CHECK(forwarded(p, cmd({"CLIENT", "REPLY", "OFF"})).slots == 0);
  CHECK(forwarded(p, cmd({"SET", "a", "1"})).slots == 0);
  CHECK(forwarded(p, cmd({"client", "reply", "on"})).slots == 1);
  CHECK(forwarded(p, cmd({"CLIENT", "REPLY", "SKIP"})).slots == 0);
  CHECK(forwarded(p, cmd({"GET", "a"})).slots == 0);
  CHECK(forwarded(p, cmd({"GET", "a"})).slots == 1);
}

TEST_CASE("redis: MONITOR turns every later frame into an out-of-band one until RESET answers", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  Forward monitor = forwarded(p, cmd({"MONITOR"}));
  CHECK(p.reply("+OK\r\n", monitor.tag).kind == ReplyUnit::Kind::frame);
  CHECK(p.reply("+1700000000.1 [0 127.0.0.1:1] \"GET\" \"k\"\r\n", Protocol::kNoSlot).kind == ReplyUnit::Kind::async);
  Forward reset = forwarded(p, cmd({"RESET"}));
  CHECK(p.reply("+1700000000.2 [0 127.0.0.1:1] \"PING\"\r\n", reset.tag).kind == ReplyUnit::Kind::async);
  ReplyUnit r = p.reply("+RESET\r\n", reset.tag);
  CHECK(r.kind == ReplyUnit::Kind::frame);
  CHECK(r.ends);
  CHECK(p.reply("+OK\r\n", 0).kind == ReplyUnit::Kind::frame);
}

TEST_CASE("redis: a malformed command is Redis's protocol error", "[protocols]") {
  proxy::redis::RedisProtocol p(1, false);
  ClientUnit u = p.client("*x\r\n");
  CHECK(u.kind == Kind::error);
  CHECK(u.reply == "-ERR Protocol error: invalid multibulk length\r\n");
}

TEST_CASE("postgres: how a statement ends a transaction", "[protocols]") {
  using E = proxy::postgres::PgProtocol::Ending;
  using proxy::postgres::PgProtocol;
  CHECK(PgProtocol::ending_of("COMMIT") == E::ends);
  CHECK(PgProtocol::ending_of("  /* c */ -- x\n commit;") == E::ends);
  CHECK(PgProtocol::ending_of("end transaction") == E::ends);
  CHECK(PgProtocol::ending_of("ABORT") == E::ends);
  CHECK(PgProtocol::ending_of("rollback") == E::ends);
  CHECK(PgProtocol::ending_of("ROLLBACK TO SAVEPOINT a") == E::rollback_to);
  CHECK(PgProtocol::ending_of("rollback work to a") == E::rollback_to);
  CHECK(PgProtocol::ending_of("COMMIT PREPARED 'x'") == E::none);
  CHECK(PgProtocol::ending_of("SELECT 1") == E::none);
  CHECK(PgProtocol::ending_of("COMMITTED") == E::none);
}

namespace {
// A postgres protocol past startup (its startup slot answered).
proxy::postgres::PgProtocol started() {
  proxy::postgres::PgProtocol p(1, true);
  std::string startup = std::string("\0\0\0\0\0\3\0\0", 8) + cstr("user") + cstr("app") + cstr("database") +
                        cstr("shop") + std::string(1, '\0');
  startup[3] = static_cast<char>(startup.size());
  ClientUnit u = p.client(startup);
  REQUIRE(u.kind == Kind::pass);
  REQUIRE(u.slots == 1);
  REQUIRE(p.reply(ready('I'), u.tag).ends);
  return p;
}
}  // namespace

TEST_CASE("postgres: SSLRequest is answered N and startup's user and database reach the messages", "[protocols]") {
  proxy::postgres::PgProtocol p(3, true);
  const std::string ssl("\0\0\0\x08\x04\xd2\x16\x2f", 8);
  ClientUnit u = p.client(ssl);
  CHECK(u.kind == Kind::answer);
  CHECK(u.reply == "N");
  std::string startup = std::string("\0\0\0\0\0\3\0\0", 8) + cstr("user") + cstr("app") + std::string(1, '\0');
  startup[3] = static_cast<char>(startup.size());
  CHECK(p.client(startup).kind == Kind::pass);
  const std::string query = pg_query("SELECT 1");  // the message's views point into it
  ClientUnit q = p.client(query);
  REQUIRE(q.kind == Kind::message);
  CHECK(*q.msg->field_ref("user") == "app");
  CHECK(*q.msg->field_ref("database") == "app");
  CHECK(q.msg->field("query") == "SELECT 1");
  CHECK(q.msg->field("connection") == "3");
}

TEST_CASE("postgres: an error injected into a transaction learns the status from a Sync and fails it",
          "[protocols]") {
  auto p = started();
  CHECK(forwarded(p, pg_query("BEGIN")).slots == 1);
  REQUIRE(p.client(pg_query("UPDATE t SET x = 1")).kind == Kind::message);
  auto err = action(faults::ActionSpec::Type::postgres_error);
  err.sqlstate = "40001";
  err.message = "could not serialize";
  Injected inj = p.inject(err);
  CHECK(inj.bytes.empty());
  CHECK(inj.upstream == pg_msg('S', ""));
  CHECK(inj.upstream_slots == 1);
  CHECK(p.wait_for_replies());
  ReplyUnit r = p.reply(ready('T'), inj.upstream_tag);
  CHECK(r.replaced);
  std::string expected;
  proxy::postgres::encode_error(expected, "ERROR", "40001", "could not serialize");
  CHECK(r.bytes == expected + ready('E'));
  CHECK_FALSE(p.wait_for_replies());
  // further statements get 25P02 here; COMMIT goes upstream as ROLLBACK
  Forward f = forwarded(p, pg_query("SELECT 1"));
  CHECK(f.slots == 0);
  CHECK(f.local.find("25P02") != std::string::npos);
  CHECK(f.local.substr(f.local.size() - 6) == ready('E'));
  Forward commit = forwarded(p, pg_query("COMMIT"));
  CHECK_FALSE(commit.raw);
  CHECK(commit.bytes == pg_query("ROLLBACK"));
  CHECK(commit.slots == 1);
  CHECK(forwarded(p, pg_query("SELECT 2")).raw);  // and the connection is back to normal
}

TEST_CASE("postgres: an error outside a transaction leaves it idle, not failed", "[protocols]") {
  auto p = started();
  REQUIRE(p.client(pg_query("SELECT 42")).kind == Kind::message);
  Injected inj = p.inject(action(faults::ActionSpec::Type::postgres_error));
  ReplyUnit r = p.reply(ready('I'), inj.upstream_tag);
  CHECK(r.bytes.substr(r.bytes.size() - 6) == ready('I'));
  CHECK(forwarded(p, pg_query("SELECT 42")).raw);
}

TEST_CASE("postgres: an error in an extended group skips to its Sync and goes before its ReadyForQuery",
          "[protocols]") {
  auto p = started();
  const std::string parse = pg_msg('P', cstr("") + cstr("INSERT INTO t VALUES ($1)") + std::string(2, '\0'));
  const std::string bind = pg_msg('B', cstr("") + cstr("") + std::string(2, '\0') + std::string(2, '\0') +
                                           std::string(2, '\0'));
  const std::string execute = pg_msg('E', cstr("") + std::string(4, '\0'));
  const std::string sync = pg_msg('S', "");
  Forward f = forwarded(p, parse);
  CHECK(f.slots == 1);  // the group's slot
  CHECK(forwarded(p, bind).slots == 0);
  ClientUnit e = p.client(execute);  // (its SQL is the Parse's, kept by the protocol)
  REQUIRE(e.kind == Kind::message);
  CHECK(e.msg->field("query") == "INSERT INTO t VALUES ($1)");
  CHECK(e.msg->field("message") == "Execute");
  p.inject(action(faults::ActionSpec::Type::postgres_error));
  CHECK_FALSE(p.wait_for_replies());  // the Sync must still get through
  CHECK(p.client(pg_msg('D', "P" + cstr(""))).kind == Kind::skip);
  ClientUnit s = p.client(sync);
  CHECK(s.kind == Kind::pass);
  CHECK(s.slots == 0);  // the group's slot is open already
  CHECK(p.wait_for_replies());
  CHECK(p.reply(pg_msg('1', ""), f.tag).kind == ReplyUnit::Kind::frame);
  CHECK_FALSE(p.reply(pg_msg('2', ""), f.tag).replaced);
  ReplyUnit z = p.reply(ready('T'), f.tag);
  CHECK(z.ends);
  CHECK(z.bytes.front() == 'E');
  CHECK(z.bytes.substr(z.bytes.size() - 6) == ready('E'));
}

TEST_CASE("postgres: the server's own error in the group stands and the injected one is not added", "[protocols]") {
  auto p = started();
  Forward f = forwarded(p, pg_msg('P', cstr("") + cstr("SELECT nope") + std::string(2, '\0')));
  REQUIRE(p.client(pg_msg('E', cstr("") + std::string(4, '\0'))).kind == Kind::message);
  p.inject(action(faults::ActionSpec::Type::postgres_error));
  p.client(pg_msg('S', ""));
  std::string server_error;
  proxy::postgres::encode_error(server_error, "ERROR", "42703", "column nope does not exist");
  CHECK_FALSE(p.reply(server_error, f.tag).replaced);
  ReplyUnit z = p.reply(ready('I'), f.tag);
  CHECK_FALSE(z.replaced);
  CHECK_FALSE(p.wait_for_replies());
}

TEST_CASE("postgres: fatal closes after the error; notices and notifications are out of band", "[protocols]") {
  auto p = started();
  REQUIRE(p.client(pg_query("SELECT 1")).kind == Kind::message);
  auto fatal = action(faults::ActionSpec::Type::postgres_fatal);
  fatal.sqlstate = "57P01";
  Injected inj = p.inject(fatal);
  CHECK(inj.close_after);
  CHECK(inj.bytes.find("FATAL") != std::string::npos);
  CHECK(p.reply(pg_msg('A', std::string(4, '\0') + cstr("ch") + cstr("x")), Protocol::kNoSlot).kind ==
        ReplyUnit::Kind::async);
  CHECK(p.goodbye() == pg_msg('X', ""));
}

TEST_CASE("postgres: a malformed message is a FATAL protocol violation", "[protocols]") {
  auto p = started();
  ClientUnit u = p.client(std::string("Q\0\0\0\x01", 5));
  CHECK(u.kind == Kind::error);
  CHECK(u.reply.find("08P01") != std::string::npos);
}

TEST_CASE("postgres: every frontend message of a batch split at every byte is one unit once whole", "[protocols]") {
  const std::vector<std::string> batch = {
      pg_msg('P', cstr("s1") + cstr("SELECT $1::int") + std::string(2, '\0')),
      pg_msg('B', cstr("") + cstr("s1") + std::string(2, '\0') + std::string("\0\1", 2) + std::string("\0\0\0\1", 4) +
                      "7" + std::string(2, '\0')),
      pg_msg('D', "P" + cstr("")),
      pg_msg('E', cstr("") + std::string(4, '\0')),
      pg_msg('S', ""),
      pg_query("SELECT 1; SELECT 2"),
      pg_msg('d', "1\t2\n"),
      pg_msg('X', ""),
  };
  for (size_t i = 0; i < batch.size(); ++i) {
    auto p = started();
    for (size_t j = 0; j < i; ++j) {  // the messages before it, whole
      ClientUnit u = p.client(batch[j]);
      REQUIRE(u.kind != Kind::more);
      if (u.kind == Kind::message) p.forward();
    }
    const std::string& m = batch[i];
    for (size_t k = 0; k < m.size(); ++k) REQUIRE(p.client(m.substr(0, k)).kind == Kind::more);
    ClientUnit u = p.client(m + "trailing bytes of the next message");
    CHECK(u.kind != Kind::more);
    CHECK(u.size == m.size());
  }
}

TEST_CASE("postgres and redis: every reply frame split at every byte is one unit once whole", "[protocols]") {
  std::string error;
  proxy::postgres::encode_error(error, "ERROR", "42P01", "relation does not exist");
  const std::vector<std::string> pg_replies = {pg_msg('1', ""), pg_msg('T', std::string(2, '\0')),
                                               pg_msg('D', std::string("\0\1\0\0\0\1", 6) + "7"),
                                               pg_msg('C', cstr("SELECT 1")), error, ready('I')};
  for (const std::string& frame : pg_replies) {
    auto p = started();
    for (size_t k = 0; k < frame.size(); ++k) REQUIRE(p.reply(frame.substr(0, k), 5).kind == ReplyUnit::Kind::more);
    ReplyUnit r = p.reply(frame + "Z", 5);
    CHECK(r.kind == ReplyUnit::Kind::frame);
    CHECK(r.size == frame.size());
  }
  const std::vector<std::string> redis_replies = {"+OK\r\n", "-ERR x\r\n", ":42\r\n", "$5\r\nhello\r\n",
                                                  "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n+k\r\n+v\r\n", "_\r\n"};
  for (const std::string& frame : redis_replies) {
    proxy::redis::RedisProtocol p(1, false);
    for (size_t k = 0; k < frame.size(); ++k) REQUIRE(p.reply(frame.substr(0, k), 0).kind == ReplyUnit::Kind::more);
    ReplyUnit r = p.reply(frame + "+", 0);
    CHECK(r.kind == ReplyUnit::Kind::frame);
    CHECK(r.size == frame.size());
  }
}
