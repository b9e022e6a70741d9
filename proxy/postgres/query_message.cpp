// PostgreSQL frontend messages as rules see them, without copying the SQL unless a rule needs a string.
#include "proxy/postgres/query_message.h"

namespace faultline::proxy::postgres {
namespace {

// At most max bytes, backed off to the start of a UTF-8 sequence so a character is never split in two (at most 3
// bytes back: a longer run of continuation bytes is not UTF-8 anyway).
std::string_view cut_utf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  for (int back = 0; back < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80; ++back) --end;
  return s.substr(0, end);
}

}  // namespace

QueryMessage::QueryMessage(const char* name, const std::string* sql, const std::string& user,
                           const std::string& database, uint64_t connection)
    : name_(name ? name : ""),
      has_name_(name != nullptr),
      sql_(sql),
      user_(user),
      database_(database),
      connection_(connection) {}

QueryMessage::QueryMessage(std::string_view sql, const std::string& user, const std::string& database,
                           uint64_t connection)
    : name_("Query"),
      has_name_(true),
      query_(sql),
      is_query_(true),
      user_(user),
      database_(database),
      connection_(connection) {}

std::optional<std::string_view> QueryMessage::sql() const {
  if (is_query_) return query_;
  if (sql_) return std::string_view(*sql_);
  return std::nullopt;
}

std::optional<std::string> QueryMessage::field(std::string_view name) const {
  if (name == "query") {
    auto s = sql();
    if (!s) return std::nullopt;
    return std::string(*s);
  }
  if (name == "message") {
    if (!has_name_) return std::nullopt;
    return name_;
  }
  if (name == "user") return user_;
  if (name == "database") return database_;
  if (name == "connection") return std::to_string(connection_);
  return std::nullopt;
}

const std::string* QueryMessage::field_ref(std::string_view name) const {
  if (name == "query") {
    if (sql_) return sql_;
    if (!is_query_) return nullptr;
    if (!query_copy_) query_copy_.emplace(query_);
    return &*query_copy_;
  }
  if (name == "message") return has_name_ ? &name_ : nullptr;
  if (name == "user") return &user_;
  if (name == "database") return &database_;
  return nullptr;
}

nlohmann::ordered_json QueryMessage::describe() const {
  nlohmann::ordered_json d = nlohmann::ordered_json::object();
  if (has_name_) d["message"] = name_;
  if (auto s = sql()) {
    const std::string_view cut = cut_utf8(*s, kDescribeMax);
    std::string text(cut);
    if (cut.size() < s->size()) text += "...";
    d["query"] = std::move(text);
  }
  return d;
}

}  // namespace faultline::proxy::postgres
