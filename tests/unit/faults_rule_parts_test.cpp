// A rule's parts alone: string matchers, Lua patterns without Lua, schedules, actions' journal form.
#include <catch2/catch.hpp>

#include <clocale>
#include <string>

#include "faults/lua_pattern.h"
#include "faults/rule.h"

using faultline::faults::ActionSpec;
using faultline::faults::lua_pattern_check;
using faultline::faults::lua_pattern_find;
using faultline::faults::Schedule;
using faultline::faults::StringMatcher;

namespace {

StringMatcher matcher(StringMatcher::Kind kind, std::string text, bool case_insensitive = false) {
  StringMatcher m;
  m.kind = kind;
  m.text = std::move(text);
  m.case_insensitive = case_insensitive;
  return m;
}

std::string check_error(const std::string& pattern) {
  std::string error;
  if (lua_pattern_check(pattern, &error)) return "(accepted)";
  return error;
}

}  // namespace

TEST_CASE("an exact matcher matches the whole text only") {
  const auto m = matcher(StringMatcher::Kind::exact, "POST");
  CHECK(m.matches("POST"));
  CHECK_FALSE(m.matches("POS"));
  CHECK_FALSE(m.matches("POSTS"));
  CHECK_FALSE(m.matches("post"));
  CHECK_FALSE(m.matches(""));
}

TEST_CASE("an exact matcher without case ignores ASCII case only") {
  const auto m = matcher(StringMatcher::Kind::exact, "Get", true);
  CHECK(m.matches("GET"));
  CHECK(m.matches("get"));
  CHECK_FALSE(m.matches("GETS"));
  CHECK_FALSE(matcher(StringMatcher::Kind::exact, "\xc9", true).matches("\xe9"));  // no locale folding
}

TEST_CASE("a prefix matcher matches the beginning") {
  const auto m = matcher(StringMatcher::Kind::prefix, "/v1/");
  CHECK(m.matches("/v1/chat"));
  CHECK(m.matches("/v1/"));
  CHECK_FALSE(m.matches("/v1"));
  CHECK_FALSE(m.matches("/v2/chat"));
  CHECK_FALSE(m.matches("x/v1/chat"));
  CHECK(matcher(StringMatcher::Kind::prefix, "").matches("anything"));
  CHECK(matcher(StringMatcher::Kind::prefix, "SEL", true).matches("select 1"));
  CHECK_FALSE(matcher(StringMatcher::Kind::prefix, "SEL").matches("select 1"));
}

TEST_CASE("a pattern matcher is an unanchored Lua pattern") {
  CHECK(matcher(StringMatcher::Kind::pattern, "chat").matches("/v1/chat/completions"));
  CHECK(matcher(StringMatcher::Kind::pattern, "^/v1/%a+/").matches("/v1/chat/completions"));
  CHECK_FALSE(matcher(StringMatcher::Kind::pattern, "^/v2").matches("/v1/chat/completions"));
  CHECK_FALSE(matcher(StringMatcher::Kind::pattern, "chat$").matches("/v1/chat/completions"));
}

TEST_CASE("a pattern matcher without case lower-cases the subject first") {
  CHECK(matcher(StringMatcher::Kind::pattern, "^select", true).matches("SELECT 1"));
  CHECK_FALSE(matcher(StringMatcher::Kind::pattern, "^select").matches("SELECT 1"));
  // The pattern itself is not lowered: %U means "not upper-case", true of every lowered letter.
  CHECK(matcher(StringMatcher::Kind::pattern, "^%U+$", true).matches("ABC"));
}

TEST_CASE("an any_of matcher matches when any member does") {
  StringMatcher m;
  m.kind = StringMatcher::Kind::any_of;
  m.any = {matcher(StringMatcher::Kind::exact, "GET"), matcher(StringMatcher::Kind::prefix, "PO"),
           matcher(StringMatcher::Kind::pattern, "^DEL")};
  CHECK(m.matches("GET"));
  CHECK(m.matches("POST"));
  CHECK(m.matches("DELETE"));
  CHECK_FALSE(m.matches("PUT"));
  CHECK_FALSE(m.matches("get"));
  m.case_insensitive = true;  // the field's case rule reaches the members
  CHECK(m.matches("get"));
  CHECK_FALSE(StringMatcher{StringMatcher::Kind::any_of, "", {}, false}.matches("x"));
}

TEST_CASE("Lua patterns cover classes, sets, quantifiers, anchors and special items") {
  CHECK(lua_pattern_find("abc123", "^%a+%d+$"));
  CHECK_FALSE(lua_pattern_find("abc123x", "^%a+%d+$"));
  CHECK(lua_pattern_find("a-b", "[%-]"));
  CHECK(lua_pattern_find("k", "[a-z]"));
  CHECK_FALSE(lua_pattern_find("K", "[a-z]"));
  CHECK(lua_pattern_find("K", "[^a-z]"));
  CHECK(lua_pattern_find("colour", "^colou?r$"));
  CHECK(lua_pattern_find("color", "^colou?r$"));
  CHECK(lua_pattern_find("<a><b>", "^<.->"));
  CHECK(lua_pattern_find("x = f(a(b), c) + 1", "f%b()"));
  CHECK_FALSE(lua_pattern_find("x = f(a(b, c + 1", "f%b()"));
  CHECK(lua_pattern_find("the cat", "%f[%w]cat%f[%W]"));
  CHECK_FALSE(lua_pattern_find("concat", "%f[%w]cat"));
  CHECK(lua_pattern_find("abab", "^(ab)%1$"));
  CHECK_FALSE(lua_pattern_find("abac", "^(ab)%1$"));
  CHECK(lua_pattern_find("hello", "()ll()"));
  CHECK(lua_pattern_find("a.b", "a%.b"));
  CHECK_FALSE(lua_pattern_find("axb", "a%.b"));
  CHECK(lua_pattern_find("x$y", "x$y"));  // $ anchors only at the very end
  CHECK(lua_pattern_find("", ""));
  CHECK(lua_pattern_find("a)b", ")"));  // no special character: plain text, as string.find does
}

TEST_CASE("Lua pattern classes do not depend on the locale") {
  // A Latin-1 locale would make std::isalpha(0xe9) true; whichever of these exists, "C" answers hold.
  const std::string before = std::setlocale(LC_CTYPE, nullptr);
  for (const char* name : {"C.UTF-8", "en_US.ISO-8859-1", "de_DE.ISO-8859-1", "fr_FR.ISO-8859-1"})
    std::setlocale(LC_CTYPE, name);
  CHECK_FALSE(lua_pattern_find("\xe9", "%a"));
  CHECK(lua_pattern_find("\xe9", "%A"));
  CHECK_FALSE(lua_pattern_find("\xa0", "%s"));
  std::setlocale(LC_CTYPE, before.c_str());
}

TEST_CASE("malformed Lua patterns are refused with Lua's message") {
  CHECK(check_error("abc%") == "malformed pattern (ends with '%')");
  CHECK(check_error("[abc") == "malformed pattern (missing ']')");
  CHECK(check_error("[%]") == "malformed pattern (missing ']')");
  CHECK(check_error("(abc") == "unfinished capture");
  CHECK(check_error("a+)") == "invalid pattern capture");
  CHECK(check_error("abc)") == "(accepted)");  // no special character: plain text for string.find
  CHECK(check_error("(a)%2") == "invalid capture index %2");
  CHECK(check_error("(a%1)") == "invalid capture index %1");
  CHECK(check_error("%0") == "invalid capture index %0");
  CHECK(check_error("x%b(") == "malformed pattern (missing arguments to '%b')");
  CHECK(check_error("%fx") == "missing '[' after '%f' in pattern");
  CHECK(check_error(std::string(33, '(') + "a" + std::string(33, ')')) == "too many captures");
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "a?";
  CHECK(check_error(deep) == "pattern too complex");
}

TEST_CASE("well-formed Lua patterns are accepted") {
  for (const char* p : {"", "^$", "[]]", "[^]]", "%b()", "%f[%w]", "(a)%1", "()", "((a)(b))%2%1", "a)",
                        "^/v1/.-/completions$", "%z", "[%a_][%w_]*"}) {
    INFO(p);
    CHECK(check_error(p) == "(accepted)");
  }
  std::string deep;
  for (int i = 0; i < 199; ++i) deep += "a?";  // 199 nested calls plus the outermost: Lua's limit exactly
  CHECK(check_error(deep) == "(accepted)");
}

TEST_CASE("a hostile pattern cannot exhaust the stack") {
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "a?";
  CHECK_FALSE(lua_pattern_find(std::string(6000, 'a'), deep));
  CHECK_FALSE(lua_pattern_find("aaa", std::string(5000, '(') + std::string(5000, ')')));
}

TEST_CASE("each schedule selects its match ordinals") {
  Schedule s;
  CHECK(s.selects(1));
  CHECK(s.selects(1000));

  s.kind = Schedule::Kind::first;
  s.n = 2;
  CHECK(s.selects(1));
  CHECK(s.selects(2));
  CHECK_FALSE(s.selects(3));

  s.kind = Schedule::Kind::after;
  CHECK_FALSE(s.selects(1));
  CHECK_FALSE(s.selects(2));
  CHECK(s.selects(3));
  CHECK(s.selects(100));

  s.kind = Schedule::Kind::every;
  s.n = 3;
  CHECK_FALSE(s.selects(1));
  CHECK_FALSE(s.selects(2));
  CHECK(s.selects(3));
  CHECK_FALSE(s.selects(4));
  CHECK(s.selects(6));
  s.n = 0;
  CHECK_FALSE(s.selects(3));  // never, rather than a division by zero

  s.kind = Schedule::Kind::nth;
  s.nths = {2, 5};
  CHECK_FALSE(s.selects(1));
  CHECK(s.selects(2));
  CHECK_FALSE(s.selects(3));
  CHECK(s.selects(5));
  CHECK_FALSE(s.selects(6));
  s.nths.clear();
  s.n = 4;  // `nth = N` given as n alone
  CHECK(s.selects(4));
  CHECK_FALSE(s.selects(3));
}

TEST_CASE("every action type has its journal name") {
  using T = ActionSpec::Type;
  const std::pair<T, const char*> names[] = {
      {T::pass, "pass"},
      {T::delay, "delay"},
      {T::hang, "hang"},
      {T::drop, "drop"},
      {T::reset, "reset"},
      {T::respond, "respond"},
      {T::truncate, "truncate"},
      {T::sse_cut, "sse_cut"},
      {T::sse_delay, "sse_delay"},
      {T::throttle, "throttle"},
      {T::delay_response, "delay_response"},
      {T::redis_error, "redis_error"},
      {T::redis_reply, "redis_reply"},
      {T::postgres_error, "postgres_error"},
      {T::postgres_fatal, "postgres_fatal"},
  };
  for (const auto& [type, name] : names) {
    ActionSpec a;
    a.type = type;
    CHECK(std::string(a.name()) == name);
  }
}

TEST_CASE("an action's detail holds what matters, in order") {
  using T = ActionSpec::Type;
  auto detail = [](T type, auto&& set) {
    ActionSpec a;
    a.type = type;
    set(a);
    return a.detail().dump();
  };
  auto none = [](ActionSpec&) {};
  CHECK(detail(T::pass, none) == "{}");
  CHECK(detail(T::reset, none) == "{}");
  CHECK(detail(T::delay, [](ActionSpec& a) { a.ms = 250, a.jitter = 10; }) == R"({"ms":250,"jitter":10})");
  CHECK(detail(T::hang, none) == "{}");
  CHECK(detail(T::hang, [](ActionSpec& a) { a.ms = 5000; }) == R"({"ms":5000})");
  CHECK(detail(T::drop, none) == "{}");
  CHECK(detail(T::drop, [](ActionSpec& a) { a.after_forward = true; }) == R"({"after_forward":true})");
  CHECK(detail(T::respond, [](ActionSpec& a) {
          a.status = 429;
          a.body = "{}";
          a.headers = {{"retry-after", "1"}};
        }) == R"({"status":429})");
  CHECK(detail(T::truncate, [](ActionSpec& a) { a.bytes = 100; }) == R"({"bytes":100})");
  CHECK(detail(T::sse_cut, [](ActionSpec& a) { a.after_events = 3; }) == R"({"after_events":3})");
  CHECK(detail(T::sse_delay, [](ActionSpec& a) { a.ms = 40; }) == R"({"ms":40})");
  CHECK(detail(T::delay_response, [](ActionSpec& a) { a.ms = 900; }) == R"({"ms":900})");
  CHECK(detail(T::throttle, [](ActionSpec& a) { a.bytes_per_second = 1024; }) == R"({"bytes_per_second":1024})");
  CHECK(detail(T::redis_error, [](ActionSpec& a) { a.message = "LOADING busy"; }) == R"({"message":"LOADING busy"})");
  CHECK(detail(T::redis_reply, [](ActionSpec& a) {
          a.value = nlohmann::json::array({1, "x", nullptr});
        }) == R"({"value":[1,"x",null]})");
  CHECK(detail(T::postgres_error, [](ActionSpec& a) {
          a.sqlstate = "40001";
          a.message = "could not serialize";
        }) == R"({"sqlstate":"40001","message":"could not serialize"})");
  CHECK(detail(T::postgres_fatal, [](ActionSpec& a) {
          a.sqlstate = "57P01";
          a.message = "terminating";
        }) == R"({"sqlstate":"57P01","message":"terminating"})");
}
