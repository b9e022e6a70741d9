// An HTTP request as the rule engine sees it (faults::Message): the head, and the JSON body when it was
// buffered for `json` matchers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "faults/message.h"
#include "proxy/http/head.h"

namespace faultline::proxy::http {

class RequestMessage final : public faults::Message {
 public:
  RequestMessage(const RequestHead& head, uint64_t connection)
      : head_(head), connection_(connection), path_(head.path()) {}

  // The buffered body: parsed when it is a JSON object, otherwise json_field finds nothing.
  void set_body(std::string_view body);

  faults::Protocol protocol() const override { return faults::Protocol::http; }
  uint64_t connection() const override { return connection_; }
  std::optional<std::string> field(std::string_view name) const override;
  const std::string* field_ref(std::string_view name) const override;
  const nlohmann::json* json_field(std::string_view name) const override;
  nlohmann::ordered_json describe() const override;

 private:
  const RequestHead& head_;
  uint64_t connection_;
  std::string path_;
  nlohmann::json body_;  // an object, or null
};

}  // namespace faultline::proxy::http
