// Prepared statements and portals of one connection, bounded in count and bytes.
#include "proxy/postgres/statements.h"

namespace faultline::proxy::postgres {

Statements::Statements(size_t max_entries, size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

const Statements::Sql* Statements::find_statement(std::string_view name) const {
  if (name.empty()) return &unnamed_statement_;
  auto it = statements_.find(name);
  return it == statements_.end() ? nullptr : &it->second;
}

void Statements::erase(Table& table, std::string_view name) {
  auto it = table.find(name);
  if (it == table.end()) return;
  bytes_ -= it->second->size();
  table.erase(it);
}

// Replaces or adds name → sql when both budgets allow it; otherwise the name ends up unknown.
void Statements::put(Table& table, std::string_view name, Sql sql) {
  auto it = table.find(name);
  if (it != table.end()) {
    bytes_ -= it->second->size();
    if (sql->size() > max_bytes_ - bytes_) {
      table.erase(it);
      return;
    }
    it->second = std::move(sql);
    bytes_ += it->second->size();
    return;
  }
  if (table.size() >= max_entries_ || sql->size() > max_bytes_ - bytes_) return;
  bytes_ += sql->size();
  table.emplace(std::string(name), std::move(sql));
}

void Statements::parse(std::string_view statement, std::string_view sql) {
  if (statement.empty()) {
    unnamed_statement_ = std::make_shared<const std::string>(sql);
    return;
  }
  // Check the budget before copying: a refused SQL is not allocated at all.
  auto it = statements_.find(statement);
  const size_t freed = it == statements_.end() ? 0 : it->second->size();
  const bool fits =
      sql.size() <= max_bytes_ - (bytes_ - freed) && (it != statements_.end() || statements_.size() < max_entries_);
  if (!fits) {
    if (it != statements_.end()) erase(statements_, statement);
    return;
  }
  put(statements_, statement, std::make_shared<const std::string>(sql));
}

void Statements::bind(std::string_view portal, std::string_view statement) {
  const Sql* found = find_statement(statement);
  Sql sql = found ? *found : nullptr;
  if (portal.empty()) {
    unnamed_portal_ = std::move(sql);
    return;
  }
  if (!sql) {
    erase(portals_, portal);
    return;
  }
  put(portals_, portal, std::move(sql));
}

void Statements::close(char kind, std::string_view name) {
  if (kind == 'P') {
    if (name.empty())
      unnamed_portal_.reset();
    else
      erase(portals_, name);
    return;
  }
  if (kind != 'S') return;
  const Sql* found = find_statement(name);
  if (!found || !*found) return;
  const Sql sql = *found;  // a copy: it keeps the string alive while its entry goes
  if (name.empty())
    unnamed_statement_.reset();
  else
    erase(statements_, name);
  // The portals made from it share its string: pointer identity finds exactly them.
  if (unnamed_portal_ == sql) unnamed_portal_.reset();
  for (auto it = portals_.begin(); it != portals_.end();) {
    if (it->second == sql) {
      bytes_ -= sql->size();
      it = portals_.erase(it);
    } else {
      ++it;
    }
  }
}

void Statements::simple_query() {
  unnamed_statement_.reset();
  unnamed_portal_.reset();
}

const std::string* Statements::portal_sql(std::string_view portal) const {
  if (portal.empty()) return unnamed_portal_.get();
  auto it = portals_.find(portal);
  return it == portals_.end() ? nullptr : it->second.get();
}

const std::string* Statements::statement_sql(std::string_view statement) const {
  const Sql* found = find_statement(statement);
  return found ? found->get() : nullptr;
}

}  // namespace faultline::proxy::postgres
