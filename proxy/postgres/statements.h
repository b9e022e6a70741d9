// The prepared statements and portals of one client connection, so an Execute can be matched by the SQL of the
// Parse behind its portal.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace faultline::proxy::postgres {

// Follows the client's side of the extended protocol as the server would, without waiting for its answers: a
// Parse or Bind the server rejects is remembered anyway, which only matters to a client already in error.
//
// Bounded, since names come from the client: at most max_entries named statements and as many named portals, and
// at most max_bytes of their SQL (a portal counts its statement's SQL again, although it shares the string). Past
// that, new names are not remembered — an Execute on them has no SQL — and a name that is redefined is forgotten
// rather than left with stale SQL. The unnamed statement and portal are always remembered: each is one string no
// longer than the message that carried it.
//
// A pointer returned by portal_sql or statement_sql stays valid until the next call of a non-const member.
class Statements {
 public:
  explicit Statements(size_t max_entries = 10000, size_t max_bytes = size_t{64} << 20);

  // "" is the unnamed statement, replaced by every Parse into it. A named one is replaced too (the server would
  // refuse a second Parse under a live name, unless a DEALLOCATE we do not follow freed it).
  void parse(std::string_view statement, std::string_view sql);
  // The portal takes the statement's SQL, shared, not copied; an unknown statement leaves the portal unknown.
  void bind(std::string_view portal, std::string_view statement);
  // Close 'S' also closes the portals made from that statement, as the server does; Close 'P' one portal. Any
  // other kind is ignored.
  void close(char kind, std::string_view name);
  // A simple Query destroys the unnamed statement and the unnamed portal.
  void simple_query();

  const std::string* portal_sql(std::string_view portal) const;  // nullptr when unknown
  const std::string* statement_sql(std::string_view statement) const;

  size_t named_statements() const { return statements_.size(); }
  size_t named_portals() const { return portals_.size(); }
  size_t bytes() const { return bytes_; }  // SQL bytes charged to named entries

 private:
  using Sql = std::shared_ptr<const std::string>;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Table = std::unordered_map<std::string, Sql, Hash, std::equal_to<>>;

  const Sql* find_statement(std::string_view name) const;  // nullptr when unknown; the unnamed one may be empty
  void erase(Table& table, std::string_view name);
  void put(Table& table, std::string_view name, Sql sql);

  size_t max_entries_;
  size_t max_bytes_;
  size_t bytes_ = 0;
  Table statements_;
  Table portals_;
  Sql unnamed_statement_;
  Sql unnamed_portal_;
};

}  // namespace faultline::proxy::postgres
