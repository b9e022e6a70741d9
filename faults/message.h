// What a rule sees of one protocol message: named fields, protocol-neutral (SPEC §2.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "faults/scenario.h"

namespace faultline::faults {

// Field names, as matchers and keys use them:
//   all:      "connection" (ordinal of the client connection within its proxy, 1-based, as text)
//   http:     "method", "path" (without the query), "host", "header:NAME" (NAME lower-case),
//             "query:NAME", "json:NAME" (a top-level field of the JSON request body)
//   redis:    "command" (upper-case), "key" (first argument), "arg:N" (N-th argument, 1-based)
//   postgres: "query", "message", "user", "database"
class Message {
 public:
  virtual ~Message() = default;
  virtual Protocol protocol() const = 0;
  virtual uint64_t connection() const = 0;
  // The field's text, or nullopt when the message has no such field.
  virtual std::optional<std::string> field(std::string_view name) const = 0;
  // The same without a copy, for fields the message holds as text already; nullptr means "ask field()".
  // Rules test fields on every message, so the common ones should not allocate.
  virtual const std::string* field_ref(std::string_view /*name*/) const { return nullptr; }
  // A top-level field of the JSON body (http), or nullptr (no body, not JSON, over 1 MiB).
  virtual const nlohmann::json* json_field(std::string_view name) const = 0;
  // Number of arguments (redis); 0 elsewhere.
  virtual size_t arg_count() const { return 0; }
  // A short description for the journal's "message" object, e.g. {"method":"POST","path":"/v1/x"}.
  virtual nlohmann::ordered_json describe() const = 0;
};

}  // namespace faultline::faults
