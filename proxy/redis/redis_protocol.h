// protocol = "redis": RESP2/RESP3 commands and replies on the message session (proxy/protocol.h), with the
// connection state a proxy must follow so that client and server never disagree about which reply answers
// which command: HELLO 3, CLIENT REPLY OFF|SKIP|ON, SUBSCRIBE and friends (push mode), MONITOR,
// MULTI/EXEC/DISCARD and RESET.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/protocol.h"
#include "proxy/redis/command_message.h"
#include "proxy/redis/resp.h"

namespace faultline::proxy {
struct ProxyRuntime;
}

namespace faultline::proxy::redis {

class RedisProtocol final : public Protocol {
 public:
  // with_messages: the proxy has rules, so each command is offered to them as a CommandMessage.
  RedisProtocol(uint64_t connection, bool with_messages) : connection_(connection), with_messages_(with_messages) {}
  static std::unique_ptr<Protocol> make(const ProxyRuntime& proxy, uint64_t connection, const std::string& peer);

  ClientUnit client(std::string_view in) override;
  Forward forward() override;
  Injected inject(const faults::ActionSpec& action) override;
  ReplyUnit reply(std::string_view in, uint32_t head_tag) override;
  FailureReply upstream_failure(Failure failure, const std::string& why) override;

  // Reply slot tags.
  static constexpr uint32_t kPlain = 0;
  static constexpr uint32_t kMonitor = 1;     // its +OK turns every later frame into an out-of-band one
  static constexpr uint32_t kExecAbort = 2;   // EXEC sent as DISCARD: its +OK becomes -EXECABORT
  static constexpr uint32_t kExecMerge = 3;   // EXEC whose array gets the replies rules gave queued commands
  static constexpr uint32_t kReset = 4;       // RESET: its +RESET ends MONITOR and pub/sub
  static constexpr uint32_t kSwallow = 5;     // sent by faultline itself (DISCARD): the client never sees it

 private:
  enum class Cmd { other, hello, client, subscribe, unsubscribe, monitor, multi, exec, discard, reset, quit };

  std::string rewrite_exec(std::string_view frame);

  uint64_t connection_;
  bool with_messages_;
  CommandParser commands_;
  ReplyParser replies_;
  std::vector<std::string_view> args_;
  std::optional<CommandMessage> msg_;
  // The command just parsed.
  Cmd cmd_ = Cmd::other;
  std::string hello_version_;  // HELLO's first argument
  std::string client_sub_;     // CLIENT's sub-command and argument, upper-case: "REPLY OFF"

  int resp_ = 2;               // the protocol version the connection speaks (HELLO)
  bool reply_off_ = false;     // CLIENT REPLY OFF: no command is answered
  bool skip_next_ = false;     // CLIENT REPLY SKIP: the next command is not answered
  bool pubsub_ = false;        // RESP2 pub/sub frames are out of band (a subscription was asked for)
  bool monitor_ = false;       // everything the server sends is out of band
  bool in_multi_ = false;
  bool multi_failed_ = false;  // a rule errored a queued command: EXEC must fail as Redis would
  size_t queued_ = 0;          // commands queued since MULTI
  std::vector<std::pair<size_t, std::string>> multi_replies_;  // position, encoded reply (redis.reply)
  std::deque<std::vector<std::pair<size_t, std::string>>> exec_merges_;
};

}  // namespace faultline::proxy::redis
