// One PostgreSQL frontend message as the rule engine sees it (faults::Message): its name, its SQL, user, database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "faults/message.h"

namespace faultline::proxy::postgres {

// Fields: "message" (frontend_name() of the message), "query" (on Query and Execute only: a rule matching a
// prepared INSERT counts it once per execution, at Execute, not at Parse), "user" and "database" (from the startup
// packet), "connection". Everything the constructors take by reference or pointer must outlive the message; the
// proxy keeps it only while rules look.
//
// Copies are avoided on the hot path: a simple Query's SQL is a view into the read buffer, turned into a string
// only the first time field_ref("query") asks for one (field("query") returns a copy anyway); an Execute's SQL is
// the string Statements holds, handed out as is.
class QueryMessage final : public faults::Message {
 public:
  // Any frontend message but a simple Query. name: frontend_name() of the message (nullptr: no "message" field);
  // sql: for an Execute the SQL behind its portal (Statements::portal_sql, nullptr when unknown), else nullptr.
  QueryMessage(const char* name, const std::string* sql, const std::string& user, const std::string& database,
               uint64_t connection);
  // A simple Query ("message" is "Query"): sql is a view into the message, which must outlive this object.
  QueryMessage(std::string_view sql, const std::string& user, const std::string& database, uint64_t connection);

  faults::Protocol protocol() const override { return faults::Protocol::postgres; }
  uint64_t connection() const override { return connection_; }
  std::optional<std::string> field(std::string_view name) const override;
  const std::string* field_ref(std::string_view name) const override;
  const nlohmann::json* json_field(std::string_view /*name*/) const override { return nullptr; }
  nlohmann::ordered_json describe() const override;

  // The SQL, when the message has one.
  std::optional<std::string_view> sql() const;

  static constexpr size_t kDescribeMax = 256;  // bytes of SQL in describe(), before "..."

 private:
  std::string name_;  // frontend names fit in the small-string buffer: no allocation
  bool has_name_;
  const std::string* sql_ = nullptr;  // Execute
  std::string_view query_;            // simple Query
  bool is_query_ = false;
  mutable std::optional<std::string> query_copy_;  // field_ref("query") of a simple Query, made once
  const std::string& user_;
  const std::string& database_;
  uint64_t connection_;
};

}  // namespace faultline::proxy::postgres
