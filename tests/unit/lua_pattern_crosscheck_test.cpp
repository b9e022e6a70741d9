// Our Lua-pattern matcher against real Lua 5.4: string.find(s, p) ~= nil, and the same malformed patterns.
#include <catch2/catch.hpp>

#include <lua.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "faults/lua_pattern.h"

using faultline::faults::lua_pattern_check;
using faultline::faults::lua_pattern_find;

namespace {

// What Lua says about one pair: found or not, or the error it raised.
struct LuaAnswer {
  bool found = false;
  std::optional<std::string> error;
};

class RealLua {
 public:
  RealLua() : L_(luaL_newstate(), lua_close) { luaL_openlibs(L_.get()); }

  LuaAnswer find(const std::string& subject, const std::string& pattern) {
    lua_State* L = L_.get();
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "find");
    lua_remove(L, -2);
    lua_pushlstring(L, subject.data(), subject.size());
    lua_pushlstring(L, pattern.data(), pattern.size());
    LuaAnswer answer;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      size_t len = 0;
      const char* msg = lua_tolstring(L, -1, &len);
      answer.error = std::string(msg ? msg : "?", msg ? len : 1);
    } else {
      answer.found = !lua_isnil(L, -1);
    }
    lua_settop(L, 0);
    return answer;
  }

 private:
  std::unique_ptr<lua_State, decltype(&lua_close)> L_;
};

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

struct Tally {
  int compared = 0;
  int found = 0;
  int lua_errors = 0;
};

// Compares one pair; Lua's errors are not compared as matches, but our checker must refuse the pattern
// (with Lua's words, unless Lua ran out of depth or captures first, which depends on the subject).
void compare(RealLua& lua, const std::string& subject, const std::string& pattern, Tally* tally) {
  const LuaAnswer want = lua.find(subject, pattern);
  INFO("subject \"" << printable(subject) << "\" pattern \"" << printable(pattern) << "\"");
  std::string error;
  const bool accepted = lua_pattern_check(pattern, &error);
  if (want.error) {
    ++tally->lua_errors;
    INFO("lua: " << *want.error);
    REQUIRE_FALSE(accepted);
    if (*want.error != "pattern too complex" && *want.error != "too many captures") REQUIRE(error == *want.error);
    REQUIRE_FALSE(lua_pattern_find(subject, pattern));
    return;
  }
  ++tally->compared;
  if (want.found) ++tally->found;
  INFO("lua found: " << want.found << (accepted ? "" : ", our checker refuses: " + error));
  REQUIRE(lua_pattern_find(subject, pattern) == want.found);
}

// Deterministic picks independent of the standard library's distributions.
class Picker {
 public:
  explicit Picker(uint64_t seed) : gen_(seed) {}
  size_t below(size_t n) { return static_cast<size_t>(gen_() % n); }
  template <typename T>
  const T& one_of(const std::vector<T>& v) {
    return v[below(v.size())];
  }

 private:
  std::mt19937_64 gen_;
};

}  // namespace

TEST_CASE("hand-written patterns match as string.find does") {
  RealLua lua;
  Tally tally;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"hello world", "o w"},
      {"hello", "^h"},
      {"hello", "^e"},
      {"hello", "o$"},
      {"hello", "l$"},
      {"a$b", "a$b"},
      {"a^b", "a^b"},
      {"^ab", "^^a"},
      {"", ""},
      {"", "^$"},
      {"x", "^$"},
      {"abc", ""},
      {"/v1/chat/completions", "^/v1/chat"},
      {"/v1/chat/completions", "completions$"},
      {"/v1/embeddings", "^/v1/.*s$"},
      {"GET", "^[GP][EO][TS]T?$"},
      {"POST", "^[GP][EO][TS]T?$"},
      {"PUT", "^[GP][EO][TS]T?$"},
      {"abc123", "%a+%d+"},
      {"abc", "%d"},
      {"ABC", "%u+$"},
      {"abC", "^%l+$"},
      {" \t\n", "^%s+$"},
      {"a.b", "a%.b"},
      {"axb", "a%.b"},
      {"50%", "%d+%%"},
      {"x(y)", "%(y%)"},
      {"\x01\x7f", "^%c%c$"},
      {"a,b;c!", "^%w%p%w%p%w%p$"},
      {"deadBEEF", "^%x+$"},
      {"deadBEEG", "^%x+$"},
      {"a b", "%g%s%g"},
      {"a b", "%S%S"},
      {"ab", "%S%S"},
      {"\xe9t\xe9", "%a%a%a"},
      {"\xe9t\xe9", "%A"},
      {"\xe9", "[\xe0-\xef]"},
      {"]", "[]]"},
      {"a", "[^]]"},
      {"]", "[^]]"},
      {"-", "[a-]"},
      {"b", "[a-]"},
      {"-", "[-a]"},
      {"%", "[%%]"},
      {"]", "[%]]"},
      {"_", "[%a_]"},
      {"5", "[^%d]"},
      {"c", "[a-c]"},
      {"d", "[a-c]"},
      {"^", "[x^]"},
      {"aaa", "^a*$"},
      {"aaa", "^a-$"},
      {"aaab", "a-b"},
      {"", "a*"},
      {"b", "^a+"},
      {"color", "colou?r"},
      {"colour", "colou?r"},
      {"colouur", "colou?r"},
      {"aaa", "^a?a?a?aaa$"},
      {"hello", "(l)(l)"},
      {"hello", "()ll()"},
      {"abab", "(ab)%1"},
      {"abac", "^(ab)%1"},
      {"xyzxyz", "^(x(y)z)%1$"},
      {"aa", "()a%1"},
      {"f(a(b)c)d", "%b()"},
      {"f(a(b c)d", "^f%b()"},
      {"[[x]]", "%b[]"},
      {"'a'", "%b''"},
      {"THE (quick) fox", "%f[%a]%a+%f[%A]"},
      {"hello", "%f[%l]"},
      {"HELLO", "%f[%l]"},
      {"end", "d%f[%z]"},
      {"end", "%f[%z]"},
      {"ab", "%f[%w]b"},
      {"a.b", "[.]"},
      {"ab", "[.]"},
      {"x*", "x*$"},
      {"*", "^*"},
      {"++", "^+"},
      {"a-", "a-$"},
      {"ab", "a)"},
      {"ab", "(a"},
      {"b", "(a"},
      {"a", "%"},
      {"b", "a%"},
      {"a", "[a"},
      {"a", "[^"},
      {"a", "[]"},
      {"a", "%b"},
      {"a", "%ba"},
      {"a", "%fa"},
      {"a", "%1"},
      {"aa", "(a)%2"},
      {"aa", "(a%1)"},
      {"a", "%0"},
      {"a\0b", std::string("a\0b", 3)},
      {std::string("a\0b", 3), std::string("a\0b", 3)},
      {std::string("a\0b", 3), std::string("%z")},
      {std::string("a\0b", 3), std::string("[\0]", 3)},
      {std::string(300, 'a'), std::string("^") +
                                  [] {
                                    std::string p;
                                    for (int i = 0; i < 250; ++i) p += "a?";
                                    return p;
                                  }()},
      {std::string(20, 'a'), std::string(33 * 2, '(').replace(33, 33, std::string(33, ')'))},
      {std::string(20, 'a'), "((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))"},
      {std::string(1000, 'a') + "b", "a*a*a*b"},
      {"key=value; other=x", "^(%w+)=(%w+)"},
      {"x-test-id: 42", "^x%-test%-id: (%d+)$"},
  };
  for (const auto& [subject, pattern] : cases) compare(lua, subject, pattern, &tally);
  // Lua's depth bound exactly: 199 optional items nest 200 calls (allowed), 200 nest 201.
  for (int items : {199, 200}) {
    std::string p;
    for (int i = 0; i < items; ++i) p += "a?";
    INFO(items << " optional items");
    const LuaAnswer want = lua.find(std::string(items, 'a'), p);
    CHECK(want.error.has_value() == (items == 200));
    CHECK(lua_pattern_check(p, nullptr) == (items == 199));
    CHECK(lua_pattern_find(std::string(items, 'a'), p) == (items == 199));
  }
  CHECK(tally.compared > 80);
  CHECK(tally.found > 40);
  CHECK(tally.lua_errors >= 8);
}

TEST_CASE("thousands of generated subject and pattern pairs agree with real Lua") {
  RealLua lua;
  Tally tally;
  Picker pick(20261124);
  const std::vector<std::string> items = {
      "a",      "b",      "x",     ".",      "%a",   "%A",   "%d",   "%D",     "%s",
      "%S",     "%w",     "%W",    "%p",     "%P",   "%l",   "%u",   "%c",     "%g",
      "%x",     "%X",     "%%",    "%.",     "%(",   "%)",   "%-",   "%z",     "%q",
      "[ab]",   "[^ab]",  "[a-c]", "[%d%s]", "[]]",  "[^]]", "[a-]", "[%a_]",  "[^%w]",
      "[(-.]",  "(",      ")",     "()",     "%b()", "%bab", "%bxx", "%f[%w]", "%f[%W]",
      "%f[ab]", "%f[^a]", "%1",    "%2",     "%0",   "*",    "+",    "-",      "?",
      "^",      "$",      "[",     "]",      "%",    "%b",   "%f",   "%f[",    std::string(1, '\0'),
      "\xe9",   " ",      "1",     "A",      "-"};
  const std::vector<std::string> quantifiers = {"", "", "", "*", "+", "-", "?"};
  const std::string alphabet = std::string("aaabbx()[]%.-1A \t\xe9", 19) + std::string(1, '\0');
  for (int n = 0; n < 4000; ++n) {
    std::string pattern = pick.below(5) == 0 ? "^" : "";
    const size_t count = 1 + pick.below(6);
    for (size_t i = 0; i < count; ++i) pattern += pick.one_of(items) + pick.one_of(quantifiers);
    if (pick.below(5) == 0) pattern += "$";
    for (int s = 0; s < 3; ++s) {
      std::string subject;
      const size_t len = pick.below(14);
      for (size_t i = 0; i < len; ++i) subject += alphabet[pick.below(alphabet.size())];
      compare(lua, subject, pattern, &tally);
    }
  }
  // The generator must exercise all three outcomes, or the comparison proves little.
  INFO("compared " << tally.compared << ", found " << tally.found << ", lua errors " << tally.lua_errors);
  CHECK(tally.compared > 6000);
  CHECK(tally.found > 1000);
  CHECK(tally.compared - tally.found > 1000);
  CHECK(tally.lua_errors > 500);
}

TEST_CASE("subjects built from the pattern's own pieces agree with real Lua") {
  // Random subjects rarely match long patterns; subjects spelled from the items make matches common.
  RealLua lua;
  Tally tally;
  Picker pick(7);
  const std::vector<std::pair<std::string, std::string>> items = {
      {"a", "a"},  {"%d", "7"},        {"%a", "q"},  {".", "z"}, {"[xy]", "y"},  {"%s", " "},
      {"%(", "("}, {"%b()", "(a(b))"}, {"(a)", "a"}, {"()", ""}, {"%f[%w]", ""}, {"[^%d]", "k"}};
  const std::vector<std::string> quantifiers = {"", "", "*", "+", "-", "?"};
  for (int n = 0; n < 2000; ++n) {
    std::string pattern, subject;
    const size_t count = 1 + pick.below(7);
    for (size_t i = 0; i < count; ++i) {
      const auto& [item, text] = pick.one_of(items);
      const std::string& q = item.size() == 1 || item[0] == '[' || item.size() == 2 ? pick.one_of(quantifiers) : "";
      pattern += item + q;
      subject += text;
      if (q == "*" || q == "+") subject += text;
      if (pick.below(6) == 0) subject += "a";  // sometimes spoil it
    }
    if (pattern.find("(a)") != std::string::npos && pick.below(3) == 0) pattern += "%1";
    compare(lua, subject, pattern, &tally);
    compare(lua, "xx" + subject + "yy", "^" + pattern + "$", &tally);
  }
  INFO("compared " << tally.compared << ", found " << tally.found);
  CHECK(tally.found > 1000);
  CHECK(tally.compared - tally.found > 500);
}
