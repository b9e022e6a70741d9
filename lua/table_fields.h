// Reads the named fields of a table a scenario passed in, with errors that name the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lua.hpp>

namespace faultline::lua {

// Reads raw (no metamethods run) from the table at `index`. Every failure throws ScriptError
// with the label in front, e.g. "proxy 'openai': field 'listen' must be a string, got number".
class TableFields {
 public:
  // Throws when the value at `index` is not a table or has a key that is not a string.
  TableFields(lua_State* L, int index, std::string label, const char* shape);

  // Field names, sorted so that the first error reported does not depend on Lua's hash order.
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const;
  int index() const { return index_; }

  void set_label(std::string label) { label_ = std::move(label); }
  const std::string& label() const { return label_; }
  [[noreturn]] void fail(const std::string& message) const;
  // Fails on the first field not in `known` (sorted), listing the valid ones.
  void reject_unknown(const std::vector<std::string>& known) const;

  std::optional<std::string> string(const std::string& name) const;
  std::optional<double> number(const std::string& name) const;
  // A number with an integral value (3 and 3.0 both give 3); `noun` is "field" or "attribute".
  std::optional<int64_t> integer(const std::string& name, const char* noun = "field") const;
  std::optional<bool> boolean(const std::string& name) const;
  int push(const std::string& name) const;  // pushes t[name], returns its type

 private:
  [[noreturn]] void fail_type(const std::string& name, const char* noun, const char* expected) const;

  lua_State* L_;
  int index_;
  std::string label_;
  std::vector<std::string> names_;
};

// A value as a message shows it: numbers as written, strings quoted, else the type name.
std::string describe_value(lua_State* L, int index);

// Names of proxies and rules appear in environment variables, URLs of the control API and the
// journal: letters, digits, '_' and '-', not empty.
bool valid_name(std::string_view name);

// "a, b, c".
std::string join(const std::vector<std::string>& items);

}  // namespace faultline::lua
