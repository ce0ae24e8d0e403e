#include "py_literal.hpp"

#include <cctype>
#include <cstdlib>
#include <string>

#include "lathe/tokenizer/unicode.hpp"

namespace lathe::eval::detail {

namespace {

using nlohmann::ordered_json;

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}

  std::optional<ordered_json> whole() {
    auto v = value();
    skip();
    if (!v || p_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  std::string_view s_;
  std::size_t p_ = 0;

  void skip() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool eat(char c) {
    skip();
    if (p_ < s_.size() && s_[p_] == c) return ++p_, true;
    return false;
  }

  std::optional<ordered_json> value() {
    skip();
    if (p_ >= s_.size()) return std::nullopt;
    const char c = s_[p_];
    if (c == '[' || c == '(') return sequence(c == '[' ? ']' : ')');
    if (c == '\'' || c == '"') return string();
    for (auto [word, v] : {std::pair<std::string_view, ordered_json>{"True", true}, {"False", false}, {"None", nullptr}})
      if (s_.substr(p_, word.size()) == word) return p_ += word.size(), v;
    return number();
  }

  std::optional<ordered_json> sequence(char close) {
    ++p_;
    ordered_json out = ordered_json::array();
    if (eat(close)) return out;
    for (;;) {
      auto v = value();
      if (!v) return std::nullopt;
      out.push_back(std::move(*v));
      if (eat(close)) return out;
      if (!eat(',')) return std::nullopt;
      if (eat(close)) return out;  // a trailing comma
    }
  }

  std::optional<ordered_json> string() {
    const char quote = s_[p_++];
    std::string out;
    while (p_ < s_.size() && s_[p_] != quote) {
      char c = s_[p_++];
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (p_ >= s_.size()) return std::nullopt;
      c = s_[p_++];
      switch (c) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case '0': out.push_back('\0'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'v': out.push_back('\v'); break;
        case '\n': break;
        case 'x': case 'u': case 'U': {
          const std::size_t digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
          if (p_ + digits > s_.size()) return std::nullopt;
          const std::string hex(s_.substr(p_, digits));
          char* end = nullptr;
          const unsigned long cp = std::strtoul(hex.c_str(), &end, 16);
          if (end != hex.c_str() + digits) return std::nullopt;
          tokenizer::append_utf8(out, static_cast<char32_t>(cp));
          p_ += digits;
          break;
        }
        default: out.push_back(c);  // \\ \' \" (and others kept as Python keeps them: not modelled)
      }
    }
    if (p_ >= s_.size()) return std::nullopt;
    ++p_;
    // Adjacent literals concatenate, as in Python.
    skip();
    if (p_ < s_.size() && (s_[p_] == '\'' || s_[p_] == '"')) {
      auto rest = string();
      if (!rest) return std::nullopt;
      return ordered_json(out + rest->get<std::string>());
    }
    return ordered_json(out);
  }

  std::optional<ordered_json> number() {
    std::size_t q = p_;
    if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) ++q;
    const std::size_t digits_begin = q;
    bool is_float = false;
    while (q < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[q])) || s_[q] == '.' || s_[q] == 'e' ||
                             s_[q] == 'E' || s_[q] == '_' ||
                             ((s_[q] == '-' || s_[q] == '+') && (s_[q - 1] == 'e' || s_[q - 1] == 'E')))) {
      is_float = is_float || s_[q] == '.' || s_[q] == 'e' || s_[q] == 'E';
      ++q;
    }
    if (q == digits_begin) return std::nullopt;
    std::string text;
    for (std::size_t k = p_; k < q; ++k)
      if (s_[k] != '_') text.push_back(s_[k]);
    char* end = nullptr;
    std::optional<ordered_json> out;
    if (is_float) {
      const double d = std::strtod(text.c_str(), &end);
      if (end == text.c_str() + text.size()) out = d;
    } else {
      const long long i = std::strtoll(text.c_str(), &end, 10);
      if (end == text.c_str() + text.size()) out = static_cast<int64_t>(i);
    }
    if (out) p_ = q;
    return out;
  }
};

}  // namespace

std::optional<nlohmann::ordered_json> literal_eval(std::string_view text) { return Reader(text).whole(); }

}  // namespace lathe::eval::detail
