#include "pystr.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "lathe/tokenizer/unicode.hpp"
#include "value.hpp"

namespace lathe::tokenizer::jinja {

namespace {

utf8proc_category_t category(char32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }
char32_t simple_upper(char32_t cp) {
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(cp)));
}
char32_t simple_lower(char32_t cp) {
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}
char32_t simple_title(char32_t cp) {
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(cp)));
}

/// The full case folding of one code point (several code points for ß, ligatures, ...).
std::u32string casefold(char32_t cp) {
  std::string one;
  append_utf8(one, cp);
  utf8proc_uint8_t* dst = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(one.data()),
                              static_cast<utf8proc_ssize_t>(one.size()), &dst, UTF8PROC_CASEFOLD);
  if (n < 0) return std::u32string(1, cp);
  std::string folded(reinterpret_cast<char*>(dst), static_cast<std::size_t>(n));
  std::free(dst);
  return to_u32(folded);
}

/// Python's full upper-case mapping: where the full case folding of a character is several code
/// points (SpecialCasing's ß -> SS, ﬁ -> FI, ...), the upper case of each.
void append_upper(std::u32string& out, char32_t cp) {
  if (cp >= 0x80 && category(cp) != UTF8PROC_CATEGORY_LU) {
    const auto folded = casefold(cp);
    if (folded.size() > 1) {
      for (char32_t c : folded) out.push_back(simple_upper(c));
      return;
    }
  }
  out.push_back(simple_upper(cp));
}

/// Python's full title-case mapping, derived the same way.
void append_title(std::u32string& out, char32_t cp) {
  if (cp == 0xDF) return out.append(U"Ss"), void();
  if (cp == 0x149) return out.append(U"\u02BCN"), void();
  static constexpr char32_t kUnsupported[] = {0x1FB2, 0x1FB4, 0x1FB7, 0x1FC2, 0x1FC4, 0x1FC7, 0x1FF2, 0x1FF4, 0x1FF7};
  if (std::find(std::begin(kUnsupported), std::end(kUnsupported), cp) != std::end(kUnsupported))
    throw RunError("unsupported: title-casing U+" + std::to_string(static_cast<uint32_t>(cp)) + " (Greek with iota)");
  if (cp >= 0x80 && category(cp) == UTF8PROC_CATEGORY_LL && simple_title(cp) == cp) {
    const auto folded = casefold(cp);
    if (folded.size() > 1) {
      out.push_back(simple_title(folded[0]));
      for (std::size_t k = 1; k < folded.size(); ++k) out.push_back(simple_lower(folded[k]));
      return;
    }
  }
  out.push_back(simple_title(cp));
}

bool is_case_letter(utf8proc_category_t c) {
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

/// Modifier letters such as ª, ʰ, ᵃ (Other_Lowercase): a letter whose compatibility form is one
/// cased letter.
bool is_modifier_letter_of_case(char32_t cp) {
  const auto c = category(cp);
  if (c != UTF8PROC_CATEGORY_LM && c != UTF8PROC_CATEGORY_LO) return false;
  utf8proc_int32_t out[4];
  int last = 0;
  const auto n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), out, 4,
                                         static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT), &last);
  return n == 1 && static_cast<char32_t>(out[0]) != cp && is_case_letter(category(static_cast<char32_t>(out[0])));
}

/// Python's Lowercase / Uppercase properties: the case categories, characters with a case
/// mapping (Ⓐ, ⅰ) and modifier letters of a case.
bool is_lowercase(char32_t cp) {
  const auto c = category(cp);
  if (c == UTF8PROC_CATEGORY_LL) return true;
  if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT) return false;
  return simple_upper(cp) != cp || is_modifier_letter_of_case(cp);
}

bool is_uppercase(char32_t cp) {
  const auto c = category(cp);
  if (c == UTF8PROC_CATEGORY_LU) return true;
  if (c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT) return false;
  return simple_lower(cp) != cp;
}

bool is_cased(char32_t cp) { return category(cp) == UTF8PROC_CATEGORY_LT || is_lowercase(cp) || is_uppercase(cp); }

bool is_case_ignorable(char32_t cp) {
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK: return true;
    default: break;
  }
  static constexpr char32_t kMid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4,  0x2018, 0x2019,
                                      0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  return std::find(std::begin(kMid), std::end(kMid), cp) != std::end(kMid);
}

/// Python lowers U+03A3 to the final sigma after a cased letter not followed by one.
char32_t lower_sigma(const std::u32string& s, std::size_t i) {
  std::size_t j = i;
  while (j > 0 && is_case_ignorable(s[j - 1])) --j;
  bool final_sigma = j > 0 && is_cased(s[j - 1]);
  if (final_sigma) {
    std::size_t k = i + 1;
    while (k < s.size() && is_case_ignorable(s[k])) ++k;
    final_sigma = k == s.size() || !is_cased(s[k]);
  }
  return final_sigma ? 0x3C2 : 0x3C3;
}

void append_lower_at(std::u32string& out, const std::u32string& s, std::size_t i) {
  if (s[i] == 0x3A3) return out.push_back(lower_sigma(s, i));
  append_lower(out, s[i]);
}

bool in_set(char32_t cp, const std::u32string& set) { return set.find(cp) != std::u32string::npos; }

/// Byte offset -> code point index.
int64_t cp_index(std::string_view s, std::size_t byte) {
  int64_t n = 0;
  for (std::size_t k = 0; k < byte; ++k) n += (static_cast<unsigned char>(s[k]) & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t pos = 0; pos < s.size();) {
    std::size_t len = 0;
    const char32_t cp = decode_utf8(s, pos, len);
    if (cp == kInvalidCodepoint) throw RunError("invalid UTF-8 in a string");
    out.push_back(cp);
    pos += len;
  }
  return out;
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) append_utf8(out, cp);
  return out;
}

std::size_t u32_length(std::string_view s) { return static_cast<std::size_t>(cp_index(s, s.size())); }

bool py_isspace(char32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return true;
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool py_isprintable(char32_t cp) {
  if (cp == ' ') return true;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
  }
}

bool py_isword(char32_t cp) {
  if (cp == '_') return true;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return true;
    default: return false;
  }
}

std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const auto u = to_u32(s);
  const std::u32string set = chars ? to_u32(*chars) : std::u32string();
  auto strip = [&](char32_t cp) { return chars ? in_set(cp, set) : py_isspace(cp); };
  std::size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip(u[b])) ++b;
  if (right)
    while (e > b && strip(u[e - 1])) --e;
  return to_utf8(std::u32string_view(u).substr(b, e - b));
}

namespace {

std::vector<std::string> split_whitespace(const std::u32string& u, int64_t maxsplit, bool from_right) {
  std::vector<std::string> out;
  if (!from_right) {
    std::size_t i = 0;
    while (true) {
      while (i < u.size() && py_isspace(u[i])) ++i;
      if (i == u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        std::size_t e = u.size();
        out.push_back(to_utf8(std::u32string_view(u).substr(i, e - i)));
        break;
      }
      std::size_t j = i;
      while (j < u.size() && !py_isspace(u[j])) ++j;
      out.push_back(to_utf8(std::u32string_view(u).substr(i, j - i)));
      i = j;
    }
    return out;
  }
  std::size_t e = u.size();
  while (true) {
    while (e > 0 && py_isspace(u[e - 1])) --e;
    if (e == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(to_utf8(std::u32string_view(u).substr(0, e)));
      break;
    }
    std::size_t b = e;
    while (b > 0 && !py_isspace(u[b - 1])) --b;
    out.push_back(to_utf8(std::u32string_view(u).substr(b, e - b)));
    e = b;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                                  bool from_right) {
  if (!sep) return split_whitespace(to_u32(s), maxsplit, from_right);
  if (sep->empty()) throw RunError("ValueError: empty separator");
  std::vector<std::string> out;
  if (!from_right) {
    std::size_t start = 0;
    for (std::size_t at; (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) &&
                         (at = s.find(*sep, start)) != std::string_view::npos;
         start = at + sep->size())
      out.emplace_back(s.substr(start, at - start));
    out.emplace_back(s.substr(start));
    return out;
  }
  std::size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep->size()) break;
    const auto at = s.rfind(*sep, end - sep->size());
    if (at == std::string_view::npos) break;
    out.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
    end = at;
  }
  out.emplace_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(std::string_view s) {
  const auto u = to_u32(s);
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < u.size(); ++i) {
    const char32_t c = u[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                     c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    out.push_back(to_utf8(std::u32string_view(u).substr(start, i - start)));
    if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < u.size()) out.push_back(to_utf8(std::u32string_view(u).substr(start)));
  return out;
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    // Python inserts the replacement before every character and at the end.
    const auto u = to_u32(s);
    for (char32_t cp : u) {
      if (count < 0 || done < count) out += repl, ++done;
      append_utf8(out, cp);
    }
    if (count < 0 || done < count) out += repl;
    return out;
  }
  std::size_t start = 0;
  for (std::size_t at; (count < 0 || done < count) && (at = s.find(old, start)) != std::string_view::npos; ++done) {
    out.append(s.substr(start, at - start));
    out.append(repl);
    start = at + old.size();
  }
  out.append(s.substr(start));
  return out;
}

int64_t py_find(std::string_view s, std::string_view sub, bool from_right) {
  const auto at = from_right ? s.rfind(sub) : s.find(sub);
  return at == std::string_view::npos ? -1 : cp_index(s, at);
}

int64_t py_count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(u32_length(s)) + 1;
  int64_t n = 0;
  for (std::size_t at = s.find(sub); at != std::string_view::npos; at = s.find(sub, at + sub.size())) ++n;
  return n;
}

std::string py_upper(std::string_view s) {
  std::u32string out;
  for (char32_t cp : to_u32(s)) append_upper(out, cp);
  return to_utf8(out);
}

std::string py_lower(std::string_view s) {
  const auto u = to_u32(s);
  std::u32string out;
  for (std::size_t i = 0; i < u.size(); ++i) append_lower_at(out, u, i);
  return to_utf8(out);
}

std::string py_title(std::string_view s) {
  const auto u = to_u32(s);
  std::u32string out;
  bool previous_cased = false;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (previous_cased) append_lower_at(out, u, i);
    else append_title(out, u[i]);
    previous_cased = is_cased(u[i]);
  }
  return to_utf8(out);
}

std::string py_capitalize(std::string_view s) {
  const auto u = to_u32(s);
  std::u32string out;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (i == 0) append_title(out, u[i]);
    else append_lower_at(out, u, i);
  }
  return to_utf8(out);
}

bool py_islower(std::string_view s) {
  bool cased = false;
  for (char32_t cp : to_u32(s)) {
    if (is_uppercase(cp) || category(cp) == UTF8PROC_CATEGORY_LT) return false;
    cased = cased || is_lowercase(cp);
  }
  return cased;
}

bool py_isupper(std::string_view s) {
  bool cased = false;
  for (char32_t cp : to_u32(s)) {
    if (is_lowercase(cp) || category(cp) == UTF8PROC_CATEGORY_LT) return false;
    cased = cased || is_uppercase(cp);
  }
  return cased;
}

namespace {

template <typename Pred>
bool all_of_nonempty(std::string_view s, Pred pred) {
  const auto u = to_u32(s);
  return !u.empty() && std::all_of(u.begin(), u.end(), pred);
}

bool is_letter(char32_t cp) {
  const auto c = category(cp);
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT ||
         c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_LO;
}

}  // namespace

bool py_isalpha(std::string_view s) { return all_of_nonempty(s, is_letter); }
bool py_isdecimal(std::string_view s) {
  return all_of_nonempty(s, [](char32_t cp) { return category(cp) == UTF8PROC_CATEGORY_ND; });
}
bool py_isalnum(std::string_view s) {
  return all_of_nonempty(s, [](char32_t cp) {
    const auto c = category(cp);
    if (is_letter(cp) || c == UTF8PROC_CATEGORY_ND) return true;
    if (c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO)
      throw RunError("unsupported: isalnum() of a non-decimal number character");
    return false;
  });
}

namespace {

void append_hex(std::string& out, uint32_t v, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int k = digits - 1; k >= 0; --k) out.push_back(kHex[(v >> (4 * k)) & 0xF]);
}

}  // namespace

std::string py_repr_str(std::string_view s) {
  const auto u = to_u32(s);
  const bool has_single = u.find(U'\'') != std::u32string::npos;
  const bool has_double = u.find(U'"') != std::u32string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : u) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x", append_hex(out, c, 2);
    } else if (c < 0x7F || py_isprintable(c)) {
      append_utf8(out, c);
    } else if (c <= 0xFF) {
      out += "\\x", append_hex(out, c, 2);
    } else if (c <= 0xFFFF) {
      out += "\\u", append_hex(out, c, 4);
    } else {
      out += "\\U", append_hex(out, c, 8);
    }
  }
  out.push_back(quote);
  return out;
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (char32_t c : to_u32(s)) {
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
      if (c > 0xFFFF) {
        const uint32_t v = c - 0x10000;
        out += "\\u", append_hex(out, 0xD800 + (v >> 10), 4);
        out += "\\u", append_hex(out, 0xDC00 + (v & 0x3FF), 4);
      } else {
        out += "\\u", append_hex(out, c, 4);
      }
      continue;
    }
    append_utf8(out, c);
  }
  out.push_back('"');
  return out;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&#39;"; break;
      case '"': out += "&#34;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

namespace {

/// The text Python's int() / float() see: surrounding whitespace removed; non-ASCII inside
/// (digits of other scripts, which Python accepts) is refused.
std::string numeric_text(std::string_view s) {
  std::string t = py_strip(s, std::nullopt, true, true);
  for (char32_t cp : to_u32(t))
    if (cp >= 0x80 && category(cp) == UTF8PROC_CATEGORY_ND)
      throw RunError("unsupported: converting non-ASCII digits to a number");
  return t;
}

int digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
  return 99;
}

/// Digits with single underscores between them (and, after a base prefix, before the first).
std::optional<int64_t> parse_digits(std::string_view d, int base, bool underscore_first) {
  if (d.empty()) return std::nullopt;
  int64_t v = 0;
  bool last_underscore = !underscore_first;
  for (char c : d) {
    if (c == '_') {
      if (last_underscore) return std::nullopt;
      last_underscore = true;
      continue;
    }
    const int dv = digit_value(c);
    if (dv >= base) return std::nullopt;
    if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, dv, &v))
      throw RunError("unsupported: an integer past 64 bits");
    last_underscore = false;
  }
  if (last_underscore) return std::nullopt;
  return v;
}

}  // namespace

std::optional<int64_t> parse_py_int(std::string_view s, int base) {
  std::string t = numeric_text(s);
  bool negative = false;
  std::string_view d = t;
  if (!d.empty() && (d[0] == '+' || d[0] == '-')) negative = d[0] == '-', d.remove_prefix(1);
  bool prefixed = false;
  if (d.size() >= 2 && d[0] == '0') {
    const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(d[1])));
    const int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (pb != 0 && (base == pb || base == 0)) base = pb, prefixed = true, d.remove_prefix(2);
  }
  if (base == 0) {
    base = 10;
    // Base 0 refuses leading zeros on a non-zero decimal.
    if (d.size() > 1 && d[0] == '0' && d.find_first_not_of("0_") != std::string_view::npos) return std::nullopt;
  }
  if (base < 2 || base > 36) throw RunError("ValueError: int() base must be >= 2 and <= 36, or 0");
  auto v = parse_digits(d, base, prefixed);
  if (v && negative) *v = -*v;
  return v;
}

std::optional<double> parse_py_float(std::string_view s) {
  std::string t = numeric_text(s);
  std::string lower = t;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view body = lower;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) body.remove_prefix(1);
  if (body == "inf" || body == "infinity" || body == "nan") return std::strtod(lower.c_str(), nullptr);
  // Digits, an optional fraction and exponent; underscores only between digits.
  std::string clean;
  for (std::size_t k = 0; k < t.size(); ++k) {
    const char c = t[k];
    if (c == '_') {
      if (k == 0 || k + 1 >= t.size() || !std::isdigit(static_cast<unsigned char>(t[k - 1])) ||
          !std::isdigit(static_cast<unsigned char>(t[k + 1])))
        return std::nullopt;
      continue;
    }
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-')
      return std::nullopt;
    clean.push_back(c);
  }
  if (clean.empty() || clean.find_first_of("0123456789") == std::string::npos) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return v;
}

}  // namespace lathe::tokenizer::jinja
