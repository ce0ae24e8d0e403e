#include "lexer.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "lathe/tokenizer/unicode.hpp"
#include "pystr.hpp"
#include "value.hpp"

namespace lathe::tokenizer::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

/// The newlines of a template become "\n" and, unless `keep_trailing_newline`, one trailing
/// newline is dropped, before anything else.
std::string normalize(std::string_view source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      out.push_back('\n');
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      out.push_back(source[k]);
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view source, const LexOptions& options)
      : options_(options), src_(normalize(source, options.keep_trailing_newline)) {
    for (std::size_t k = 0; k < src_.size(); ++k)
      if (src_[k] == '\n') newlines_.push_back(k);
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) root_step();
    Token eof;
    eof.line = line_at(src_.size());
    out_.push_back(eof);
    return std::move(out_);
  }

 private:
  LexOptions options_;
  std::string src_;
  std::size_t pos_ = 0;
  bool line_starting_ = true;  // the last match ended a line (lstrip_blocks looks at it)
  std::vector<std::size_t> newlines_;
  std::vector<Token> out_;

  int line_at(std::size_t p) const {
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), p) - newlines_.begin());
  }
  [[noreturn]] void fail(const std::string& msg, std::size_t p) const { throw RunError(msg, line_at(p)); }
  bool at(std::size_t p, std::string_view s) const { return src_.compare(p, s.size(), s) == 0; }

  void emit(Tok type, std::size_t p, std::string text = {}) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.line = line_at(p);
    out_.push_back(std::move(t));
  }

  /// Length of Python whitespace (\s*) at p.
  std::size_t spaces_at(std::size_t p) const {
    std::size_t q = p;
    while (q < src_.size()) {
      std::size_t len = 1;
      const char32_t cp = decode_utf8(src_, q, len);
      if (cp == kInvalidCodepoint || !py_isspace(cp)) break;
      q += len;
    }
    return q - p;
  }

  void set_line_starting(std::size_t match_end) { line_starting_ = match_end > 0 && src_[match_end - 1] == '\n'; }

  /// The text before a tag, after the tag's whitespace control: '-' strips all white space
  /// before it; otherwise lstrip_blocks removes the spaces and tabs that start its line (not for {{).
  std::string strip_text(std::string text, char sign, bool lstrip) const {
    if (sign == '-') return py_strip(text, std::nullopt, false, true);
    if (sign == '+' || !lstrip || !options_.lstrip_blocks) return text;
    const std::size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (l_pos > 0 || line_starting_) {
      const std::string_view tail = std::string_view(text).substr(l_pos);
      const auto stripped = py_strip(tail, std::nullopt, true, false);
      if (!tail.empty() && stripped.empty()) text.resize(l_pos);
    }
    return text;
  }

  void root_step();
  bool raw_begin(std::size_t i, std::size_t& after, char& sign) const;
  void raw_block(std::size_t begin_end);
  void comment(std::size_t p);
  void tag(Tok begin, std::size_t p);
  bool tag_end(Tok begin);
  void tag_token();
  std::size_t digits_at(std::size_t p) const;
  bool number_token();
  void string_token();
  void op_token(std::vector<char>& balance);
  std::vector<char> balance_;
};

void Lexer::root_step() {
  std::size_t i = pos_;
  while (i + 1 < src_.size() && !(src_[i] == '{' && (src_[i + 1] == '%' || src_[i + 1] == '{' || src_[i + 1] == '#')))
    ++i;
  if (i + 1 >= src_.size()) {
    emit(Tok::Data, pos_, src_.substr(pos_));
    pos_ = src_.size();
    return;
  }
  const char kind = src_[i + 1];
  std::size_t after = i + 2;
  char sign = after < src_.size() && (src_[after] == '-' || src_[after] == '+') ? src_[after] : 0;
  std::size_t raw_after = 0;
  char raw_sign = 0;
  const bool raw = kind == '%' && raw_begin(i, raw_after, raw_sign);
  if (raw) sign = raw_sign;
  std::string text = strip_text(src_.substr(pos_, i - pos_), sign, kind != '{');
  if (!text.empty()) emit(Tok::Data, pos_, std::move(text));
  if (raw) return raw_block(raw_after);
  line_starting_ = false;
  if (sign) ++after;
  if (kind == '#') return comment(after);
  emit(kind == '%' ? Tok::BlockBegin : Tok::VarBegin, i);
  tag(kind == '%' ? Tok::BlockBegin : Tok::VarBegin, after);
}

/// {%(-|+|)\s*raw\s*(-%}\s*|%}) at i; `after` is where it ends.
bool Lexer::raw_begin(std::size_t i, std::size_t& after, char& sign) const {
  std::size_t p = i + 2;
  sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
  if (sign) ++p;
  p += spaces_at(p);
  if (!at(p, "raw")) return false;
  p += 3;
  p += spaces_at(p);
  if (at(p, "-%}")) {
    after = p + 3 + spaces_at(p + 3);
    return true;
  }
  if (at(p, "%}")) {
    after = p + 2;
    return true;
  }
  return false;
}

void Lexer::raw_block(std::size_t begin_end) {
  set_line_starting(begin_end);
  for (std::size_t k = src_.find("{%", begin_end); k != std::string::npos; k = src_.find("{%", k + 1)) {
    std::size_t p = k + 2;
    const char sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
    if (sign) ++p;
    p += spaces_at(p);
    if (!at(p, "endraw")) continue;
    p += 6;
    p += spaces_at(p);
    std::size_t end;
    if (at(p, "+%}")) end = p + 3;
    else if (at(p, "-%}")) end = p + 3 + spaces_at(p + 3);
    else if (at(p, "%}")) end = p + 2 + (options_.trim_blocks && at(p + 2, "\n") ? 1 : 0);
    else continue;
    std::string text = strip_text(src_.substr(begin_end, k - begin_end), sign, true);
    if (!text.empty()) emit(Tok::Data, begin_end, std::move(text));
    pos_ = end;
    set_line_starting(end);
    return;
  }
  fail("Missing end of raw directive", begin_end);
}

void Lexer::comment(std::size_t p) {
  const std::size_t m = src_.find("#}", p);
  if (m == std::string::npos) fail("Missing end of comment tag", p);
  const char sign = m > p && (src_[m - 1] == '-' || src_[m - 1] == '+') ? src_[m - 1] : 0;
  std::size_t end = m + 2;
  if (sign == '-') end += spaces_at(end);
  else if (!sign && at(end, "\n")) ++end;
  pos_ = end;
  set_line_starting(end);
}

void Lexer::tag(Tok begin, std::size_t p) {
  pos_ = p;
  balance_.clear();
  while (true) {
    if (pos_ >= src_.size()) fail("unexpected end of template inside a tag", pos_);
    if (balance_.empty() && tag_end(begin)) return;
    tag_token();
  }
}

/// The end of a tag: +%}, -%}\s*, %}\n? (trim_blocks) for blocks; -}}\s*, }} for variables.
bool Lexer::tag_end(Tok begin) {
  const std::size_t start = pos_;
  if (begin == Tok::BlockBegin) {
    if (at(pos_, "+%}")) pos_ += 3;
    else if (at(pos_, "-%}")) pos_ += 3, pos_ += spaces_at(pos_);
    else if (at(pos_, "%}")) pos_ += 2, pos_ += options_.trim_blocks && at(pos_, "\n") ? 1 : 0;
    else return false;
  } else {
    if (at(pos_, "-}}")) pos_ += 3, pos_ += spaces_at(pos_);
    else if (at(pos_, "}}")) pos_ += 2;
    else return false;
  }
  emit(begin == Tok::BlockBegin ? Tok::BlockEnd : Tok::VarEnd, start);
  set_line_starting(pos_);
  return true;
}

void Lexer::tag_token() {
  if (const auto ws = spaces_at(pos_)) {
    pos_ += ws;
    return;
  }
  const char c = src_[pos_];
  if (number_token()) return;
  if (is_name_start(c)) {
    std::size_t e = pos_;
    while (e < src_.size() && is_name_char(src_[e])) ++e;
    if (e < src_.size() && static_cast<unsigned char>(src_[e]) >= 0x80) fail("unsupported: a non-ASCII name", pos_);
    emit(Tok::Name, pos_, src_.substr(pos_, e - pos_));
    pos_ = e;
    return;
  }
  if (c == '\'' || c == '"') return string_token();
  op_token(balance_);
}

/// (\d+_)*\d+ at p: its length, 0 when there is none.
std::size_t Lexer::digits_at(std::size_t p) const {
  std::size_t q = p;
  while (true) {
    std::size_t r = q;
    while (r < src_.size() && is_digit(src_[r])) ++r;
    if (r == q) return q == p ? 0 : q - 1 - p;  // drop a trailing '_'
    q = r;
    if (q < src_.size() && src_[q] == '_' && q + 1 < src_.size() && is_digit(src_[q + 1])) {
      ++q;
      continue;
    }
    return q - p;
  }
}

std::string without_underscores(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  return s;
}

/// jinja2's float and integer rules, in that order.
bool Lexer::number_token() {
  const std::size_t p = pos_;
  const std::size_t d = digits_at(p);
  if (d == 0) return false;
  std::size_t q = p + d;
  std::size_t frac = 0, expo = 0;
  if (q < src_.size() && src_[q] == '.' && (frac = digits_at(q + 1)) > 0) frac += 1;
  std::size_t e = q + frac;
  if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
    std::size_t s = e + 1;
    if (s < src_.size() && (src_[s] == '+' || src_[s] == '-')) ++s;
    if (const auto x = digits_at(s)) expo = s + x - e;
  }
  const bool is_float = (p == 0 || src_[p - 1] != '.') && (frac > 0 || expo > 0);
  if (is_float) {
    const std::size_t end = q + frac + expo;
    Token t;
    t.type = Tok::Float;
    t.text = src_.substr(p, end - p);
    t.fval = std::strtod(without_underscores(t.text).c_str(), nullptr);
    t.line = line_at(p);
    out_.push_back(std::move(t));
    pos_ = end;
    return true;
  }
  // Integers: 0b / 0o / 0x prefixes, [1-9](_?\d)*, 0(_?0)*.
  std::size_t end = p;
  int base = 10;
  const char pfx = p + 1 < src_.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(src_[p + 1]))) : 0;
  if (src_[p] == '0' && (pfx == 'b' || pfx == 'o' || pfx == 'x')) {
    base = pfx == 'b' ? 2 : pfx == 'o' ? 8 : 16;
    std::size_t r = p + 2;
    while (true) {
      std::size_t s = r < src_.size() && src_[r] == '_' ? r + 1 : r;
      if (s >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[s]))) break;
      const int dv =
          std::isdigit(static_cast<unsigned char>(src_[s])) ? src_[s] - '0' : std::tolower(src_[s]) - 'a' + 10;
      if (dv >= base) break;
      r = s + 1;
    }
    end = r > p + 2 ? r : p;
  }
  if (end == p) {
    base = 10;
    end = p + 1;
    if (src_[p] == '0') {
      while (end < src_.size() && (src_[end] == '0' || (src_[end] == '_' && at(end + 1, "0")))) ++end;
    } else {
      end = p + d;
    }
  }
  const std::string digits = without_underscores(src_.substr(p + (base == 10 ? 0 : 2), end - p - (base == 10 ? 0 : 2)));
  errno = 0;
  const long long v = std::strtoll(digits.c_str(), nullptr, base);
  if (errno == ERANGE) fail("unsupported: an integer literal past 64 bits", p);
  Token t;
  t.type = Tok::Integer;
  t.text = src_.substr(p, end - p);
  t.ival = v;
  t.line = line_at(p);
  out_.push_back(std::move(t));
  pos_ = end;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/// Python's unicode-escape decoding of a string literal's body.
std::string unescape(std::string_view body, const std::function<void(const std::string&)>& fail) {
  std::string out;
  for (std::size_t k = 0; k < body.size(); ++k) {
    if (body[k] != '\\') {
      out.push_back(body[k]);
      continue;
    }
    if (++k >= body.size()) fail("a string literal ends with a backslash");
    const char c = body[k];
    static const std::string kSimple = "\\'\"abfnrtv";
    static const std::string kValues = "\\'\"\a\b\f\n\r\t\v";
    if (const auto at = kSimple.find(c); at != std::string::npos) {
      out.push_back(kValues[at]);
    } else if (c == '\n') {
    } else if (c >= '0' && c <= '7') {
      int v = 0, n = 0;
      for (; n < 3 && k < body.size() && body[k] >= '0' && body[k] <= '7'; ++n, ++k) v = v * 8 + (body[k] - '0');
      --k;
      append_utf8(out, static_cast<char32_t>(v));
    } else if (c == 'x' || c == 'u' || c == 'U') {
      const int n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
      uint32_t v = 0;
      for (int j = 1; j <= n; ++j) {
        const int h = k + j < body.size() ? hex_value(body[k + j]) : -1;
        if (h < 0) fail(std::string("truncated \\") + c + " escape in a string literal");
        v = v * 16 + static_cast<uint32_t>(h);
      }
      if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) fail("unsupported: a surrogate or out-of-range escape");
      append_utf8(out, v);
      k += static_cast<std::size_t>(n);
    } else if (static_cast<unsigned char>(c) >= 0x80 || c == 'N') {
      fail(std::string("unsupported: the escape \\") + c + " in a string literal");
    } else {
      out.push_back('\\');
      out.push_back(c);
    }
  }
  return out;
}

void Lexer::string_token() {
  const char quote = src_[pos_];
  std::size_t k = pos_ + 1;
  while (k < src_.size() && src_[k] != quote) k += src_[k] == '\\' ? 2 : 1;
  if (k >= src_.size()) fail(std::string("unexpected char '") + quote + "'", pos_);
  const std::size_t p = pos_;
  Token t;
  t.type = Tok::String;
  t.text = unescape(std::string_view(src_).substr(p + 1, k - p - 1), [&](const std::string& m) { fail(m, p); });
  t.line = line_at(p);
  out_.push_back(std::move(t));
  pos_ = k + 1;
}

void Lexer::op_token(std::vector<char>& balance) {
  static const char* kTwo[] = {"**", "//", "==", "!=", ">=", "<="};
  for (const char* op : kTwo)
    if (at(pos_, op)) {
      emit(Tok::Op, pos_, op);
      pos_ += 2;
      return;
    }
  const char c = src_[pos_];
  if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos)
    fail(std::string("unexpected char '") + c + "'", pos_);
  if (c == '{' || c == '(' || c == '[') balance.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
  if (c == '}' || c == ')' || c == ']') {
    if (balance.empty()) fail(std::string("unexpected '") + c + "'", pos_);
    if (balance.back() != c) fail(std::string("unexpected '") + c + "', expected '" + balance.back() + "'", pos_);
    balance.pop_back();
  }
  emit(Tok::Op, pos_, std::string(1, c));
  ++pos_;
}

}  // namespace

std::vector<Token> lex(std::string_view source, const LexOptions& options) { return Lexer(source, options).run(); }

}  // namespace lathe::tokenizer::jinja
