// Lua 5.4 pattern matching written from the manual (§6.4.1); results are cross-checked against real
// Lua by tests/unit/lua_pattern_crosscheck_test.cpp, edge cases included.
#include "faults/lua_pattern.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace faultline::faults {

namespace {

// Lua's bounds: nested match calls (MAXCCALLS) and captures (LUA_MAXCAPTURES).
constexpr int kMaxDepth = 200;
constexpr int kMaxCaptures = 32;
constexpr size_t kFail = std::string_view::npos;

// Raised where Lua would raise; caught by the public functions. Patterns are checked at load, so
// on live traffic this never happens and costs nothing.
struct PatternError {
  std::string message;
};

// "C" locale classes, spelled out so no setlocale() anywhere in the process changes a match.
bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
bool is_alpha(unsigned char c) { return is_lower(c) || is_upper(c); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool is_cntrl(unsigned char c) { return c < 32 || c == 127; }
bool is_graph(unsigned char c) { return c > 32 && c < 127; }
bool is_punct(unsigned char c) { return is_graph(c) && !is_alnum(c); }
bool is_xdigit(unsigned char c) { return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'f'); }

// Does c belong to the class named by the letter after '%'? Upper-case letters complement;
// any other character stands for itself (that is how "%." and "%%" escape).
bool class_matches(unsigned char c, unsigned char letter) {
  bool in;
  switch (is_upper(letter) ? letter | 32 : letter) {
    case 'a':
      in = is_alpha(c);
      break;
    case 'c':
      in = is_cntrl(c);
      break;
    case 'd':
      in = is_digit(c);
      break;
    case 'g':
      in = is_graph(c);
      break;
    case 'l':
      in = is_lower(c);
      break;
    case 'p':
      in = is_punct(c);
      break;
    case 's':
      in = is_space(c);
      break;
    case 'u':
      in = is_upper(c);
      break;
    case 'w':
      in = is_alnum(c);
      break;
    case 'x':
      in = is_xdigit(c);
      break;
    case 'z':
      in = c == 0;
      break;  // deprecated since 5.2, still honoured by 5.4
    default:
      return letter == c;
  }
  return is_upper(letter) ? !in : in;
}

// The pattern text with the small parsing helpers the checker and the matcher share.
class PatternText {
 public:
  explicit PatternText(std::string_view p) : p_(p) {}

  size_t size() const { return p_.size(); }
  // Past the end reads as NUL, as Lua's terminated strings do; the rules below rely on it.
  unsigned char at(size_t i) const { return i < p_.size() ? static_cast<unsigned char>(p_[i]) : 0; }

  // One past the single-character class starting at i: "x", "%x" or "[set]".
  size_t class_end(size_t i) const {
    const unsigned char c = at(i++);
    if (c == '%') {
      if (i >= p_.size()) throw PatternError{"malformed pattern (ends with '%')"};
      return i + 1;
    }
    if (c != '[') return i;
    if (at(i) == '^') ++i;
    // The first member is taken whatever it is, so "[]]" and "[^]]" hold ']'.
    do {
      if (i >= p_.size()) throw PatternError{"malformed pattern (missing ']')"};
      const unsigned char m = at(i++);
      if (m == '%' && i < p_.size()) ++i;  // "%]" is a member, not the end
    } while (at(i) != ']');
    return i + 1;
  }

  // Is c in the set whose '[' is at open and whose ']' is at close?
  bool set_contains(size_t open, size_t close, unsigned char c) const {
    size_t i = open + 1;
    const bool negated = at(i) == '^';
    if (negated) ++i;
    for (; i < close; ++i) {
      const unsigned char m = at(i);
      if (m == '%') {
        ++i;
        if (class_matches(c, at(i))) return !negated;
      } else if (at(i + 1) == '-' && i + 2 < close) {
        if (m <= c && c <= at(i + 2)) return !negated;
        i += 2;
      } else if (m == c) {
        return !negated;
      }
    }
    return negated;
  }

  // Does the item [i, end) (one class) accept c?
  bool item_accepts(size_t i, size_t end, unsigned char c) const {
    switch (at(i)) {
      case '.':
        return true;
      case '%':
        return class_matches(c, at(i + 1));
      case '[':
        return set_contains(i, end - 1, c);
      default:
        return at(i) == c;
    }
  }

 private:
  std::string_view p_;
};

bool is_quantifier(unsigned char c) { return c == '*' || c == '+' || c == '-' || c == '?'; }

std::string capture_index_error(unsigned char digit) {
  return "invalid capture index %" + std::to_string(static_cast<int>(digit) - '0');
}

// A backtracking matcher over indices into the subject. Each method returns the subject index just
// past what matched, or kFail.
class Matcher {
 public:
  Matcher(std::string_view subject, std::string_view pattern) : s_(subject), p_(pattern) {}

  bool find(bool anchored) {
    for (size_t start = 0;; ++start) {
      level_ = 0;
      depth_ = 0;
      if (match(start, 0) != kFail) {
        // string.find returns the captures, and an unclosed one cannot be returned.
        for (int i = 0; i < level_; ++i)
          if (captures_[i].len == kUnclosed) throw PatternError{"unfinished capture"};
        return true;
      }
      if (anchored || start >= s_.size()) return false;
    }
  }

 private:
  static constexpr ptrdiff_t kUnclosed = -1;
  static constexpr ptrdiff_t kPosition = -2;
  struct Capture {
    size_t start = 0;
    ptrdiff_t len = kUnclosed;
  };

  bool accepts(size_t s, size_t item, size_t end) const {
    return s < s_.size() && p_.item_accepts(item, end, static_cast<unsigned char>(s_[s]));
  }

  // Every nesting step consumes pattern, so depth is bounded by the pattern; the bound keeps a
  // long pattern from exhausting the stack, and equals Lua's so both fail alike.
  size_t match(size_t s, size_t p) {
    if (depth_ >= kMaxDepth) throw PatternError{"pattern too complex"};
    ++depth_;
    const size_t r = match_items(s, p);
    --depth_;
    return r;
  }

  size_t match_items(size_t s, size_t p) {
    for (;;) {
      if (p == p_.size()) return s;
      const unsigned char c = p_.at(p);
      if (c == '(') {
        if (p_.at(p + 1) == ')') return open_capture(s, p + 2, kPosition);
        return open_capture(s, p + 1, kUnclosed);
      }
      if (c == ')') return close_capture(s, p + 1);
      if (c == '$' && p + 1 == p_.size()) return s == s_.size() ? s : kFail;
      if (c == '%') {
        const unsigned char next = p_.at(p + 1);
        if (next == 'b') {
          s = balanced(s, p + 2);
          if (s == kFail) return kFail;
          p += 4;
          continue;
        }
        if (next == 'f') {
          p = frontier(s, p + 2);
          if (p == kFail) return kFail;
          continue;
        }
        if (is_digit(next)) {
          s = back_reference(s, next);
          if (s == kFail) return kFail;
          p += 2;
          continue;
        }
      }
      // A single-character class, perhaps quantified.
      const size_t end = p_.class_end(p);
      const unsigned char q = p_.at(end);
      if (!accepts(s, p, end)) {
        if (q == '*' || q == '?' || q == '-') {  // zero occurrences are fine
          p = end + 1;
          continue;
        }
        return kFail;
      }
      switch (q) {
        case '?': {
          const size_t r = match(s + 1, end + 1);
          if (r != kFail) return r;
          p = end + 1;
          continue;
        }
        case '+':
          return longest(s + 1, p, end);
        case '*':
          return longest(s, p, end);
        case '-':
          return shortest(s, p, end);
        default:
          ++s;
          p = end;
          continue;
      }
    }
  }

  // Greedy: take as many as the class accepts, then give back one at a time.
  size_t longest(size_t s, size_t item, size_t end) {
    size_t n = 0;
    while (accepts(s + n, item, end)) ++n;
    for (;;) {
      const size_t r = match(s + n, end + 1);
      if (r != kFail) return r;
      if (n == 0) return kFail;
      --n;
    }
  }

  // Lazy: try the rest first, and take one more only when it fails.
  size_t shortest(size_t s, size_t item, size_t end) {
    for (;;) {
      const size_t r = match(s, end + 1);
      if (r != kFail) return r;
      if (!accepts(s, item, end)) return kFail;
      ++s;
    }
  }

  size_t open_capture(size_t s, size_t p, ptrdiff_t len) {
    if (level_ >= kMaxCaptures) throw PatternError{"too many captures"};
    captures_[level_] = Capture{s, len};
    ++level_;
    const size_t r = match(s, p);
    if (r == kFail) --level_;
    return r;
  }

  size_t close_capture(size_t s, size_t p) {
    int i = level_ - 1;
    while (i >= 0 && captures_[i].len != kUnclosed) --i;
    if (i < 0) throw PatternError{"invalid pattern capture"};
    captures_[i].len = static_cast<ptrdiff_t>(s - captures_[i].start);
    const size_t r = match(s, p);
    if (r == kFail) captures_[i].len = kUnclosed;
    return r;
  }

  // %bxy at pattern index p (x at p, y at p+1): x, then text with x and y balanced, then y.
  size_t balanced(size_t s, size_t p) const {
    if (p + 1 >= p_.size()) throw PatternError{"malformed pattern (missing arguments to '%b')"};
    const char open = static_cast<char>(p_.at(p));
    const char close = static_cast<char>(p_.at(p + 1));
    if (s >= s_.size() || s_[s] != open) return kFail;
    int depth = 1;
    for (size_t i = s + 1; i < s_.size(); ++i) {
      if (s_[i] == close) {  // checked first, so %bxx ends at the next x
        if (--depth == 0) return i + 1;
      } else if (s_[i] == open) {
        ++depth;
      }
    }
    return kFail;
  }

  // %f[set] with '[' at pattern index p: the previous character (NUL at the start) is outside the set
  // and the current one (NUL at the end) inside. Returns the pattern index after the set.
  size_t frontier(size_t s, size_t p) const {
    if (p_.at(p) != '[') throw PatternError{"missing '[' after '%f' in pattern"};
    const size_t end = p_.class_end(p);
    const auto prev = static_cast<unsigned char>(s == 0 ? '\0' : s_[s - 1]);
    const auto cur = static_cast<unsigned char>(s < s_.size() ? s_[s] : '\0');
    if (!p_.set_contains(p, end - 1, prev) && p_.set_contains(p, end - 1, cur)) return end;
    return kFail;
  }

  size_t back_reference(size_t s, unsigned char digit) const {
    const int i = digit - '1';
    if (i < 0 || i >= level_ || captures_[i].len == kUnclosed) throw PatternError{capture_index_error(digit)};
    // A position capture has no text to repeat; Lua's comparison of its length never succeeds.
    if (captures_[i].len == kPosition) return kFail;
    const auto len = static_cast<size_t>(captures_[i].len);
    if (s_.size() - s < len || s_.compare(s, len, s_.substr(captures_[i].start, len)) != 0) return kFail;
    return s + len;
  }

  std::string_view s_;
  PatternText p_;
  std::array<Capture, kMaxCaptures> captures_{};
  int level_ = 0;
  int depth_ = 0;
};

// Walks the pattern as a match would, without a subject, raising what any match could raise.
void check(std::string_view pattern) {
  const PatternText p(pattern);
  std::array<bool, kMaxCaptures> closed{};
  int level = 0;
  int nesting = 1;  // the outermost match call
  size_t i = 0;
  while (i < p.size()) {
    const unsigned char c = p.at(i);
    if (c == '(') {
      if (level >= kMaxCaptures) throw PatternError{"too many captures"};
      const bool position = p.at(i + 1) == ')';
      closed[level++] = position;
      i += position ? 2 : 1;
      ++nesting;
      continue;
    }
    if (c == ')') {
      int open = level - 1;
      while (open >= 0 && closed[open]) --open;
      if (open < 0) throw PatternError{"invalid pattern capture"};
      closed[open] = true;
      ++i;
      ++nesting;
      continue;
    }
    if (c == '$' && i + 1 == p.size()) break;
    if (c == '%') {
      const unsigned char next = p.at(i + 1);
      if (next == 'b') {
        if (i + 3 >= p.size()) throw PatternError{"malformed pattern (missing arguments to '%b')"};
        i += 4;
        continue;
      }
      if (next == 'f') {
        if (p.at(i + 2) != '[') throw PatternError{"missing '[' after '%f' in pattern"};
        i = p.class_end(i + 2);
        continue;
      }
      if (is_digit(next)) {
        const int ref = next - '1';
        if (ref < 0 || ref >= level || !closed[ref]) throw PatternError{capture_index_error(next)};
        i += 2;
        continue;
      }
    }
    const size_t end = p.class_end(i);
    if (is_quantifier(p.at(end))) {
      ++nesting;  // '?', '*', '+' and '-' may each call the matcher one level deeper
      i = end + 1;
    } else {
      i = end;
    }
  }
  for (int k = 0; k < level; ++k)
    if (!closed[k]) throw PatternError{"unfinished capture"};
  // Whether Lua gets this deep depends on the subject; a loader cannot know it, so it refuses.
  if (nesting > kMaxDepth) throw PatternError{"pattern too complex"};
}

// string.find treats a pattern without any of these as plain text, so there a stray ')' or ']' is
// just a character to look for, never an error.
bool is_plain(std::string_view pattern) { return pattern.find_first_of("^$*+?.([%-") == std::string_view::npos; }

}  // namespace

bool lua_pattern_find(std::string_view subject, std::string_view pattern) noexcept {
  if (is_plain(pattern)) return subject.find(pattern) != std::string_view::npos;
  const bool anchored = !pattern.empty() && pattern.front() == '^';
  if (anchored) pattern.remove_prefix(1);
  try {
    return Matcher(subject, pattern).find(anchored);
  } catch (...) {
    return false;
  }
}

bool lua_pattern_check(std::string_view pattern, std::string* error) {
  if (is_plain(pattern)) return true;
  if (!pattern.empty() && pattern.front() == '^') pattern.remove_prefix(1);
  try {
    check(pattern);
    return true;
  } catch (const PatternError& e) {
    if (error) *error = e.message;
    return false;
  }
}

}  // namespace faultline::faults
