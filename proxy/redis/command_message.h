// A Redis command as the rule engine sees it (faults::Message): the command name, its key and its arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "faults/message.h"

namespace faultline::proxy::redis {

class CommandMessage final : public faults::Message {
 public:
  // args[0] is the command name. The views must outlive the message: the proxy keeps the command's bytes while
  // rules look at it.
  CommandMessage(const std::vector<std::string_view>& args, uint64_t connection);
  // The arguments are referred to, not copied (rules run on every command): never a temporary.
  CommandMessage(std::vector<std::string_view>&&, uint64_t) = delete;

  faults::Protocol protocol() const override { return faults::Protocol::redis; }
  uint64_t connection() const override { return connection_; }
  // "command" (upper-case), "key" (args[1]), "arg:N" (args[N], N >= 1), "connection".
  std::optional<std::string> field(std::string_view name) const override;
  // "command" and "key", held by the message: rules test them on every command.
  const std::string* field_ref(std::string_view name) const override;
  const nlohmann::json* json_field(std::string_view /*name*/) const override { return nullptr; }
  size_t arg_count() const override { return args_.empty() ? 0 : args_.size() - 1; }
  // {"command":"SET","key":"k"}; no argument at all for AUTH and HELLO, which carry passwords.
  nlohmann::ordered_json describe() const override;

 private:
  const std::vector<std::string_view>& args_;
  uint64_t connection_;
  std::string command_;
  std::optional<std::string> key_;
};

}  // namespace faultline::proxy::redis
