// Python's view of text where the harness's results depend on it: str.isspace, code points
// (len() of a str), and strip / rstrip.
#pragma once

#include <string>

#include "lathe/tokenizer/unicode.hpp"

namespace lathe::eval::detail {

/// Python's str.isspace for one code point.
inline bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

inline std::u32string code_points(const std::string& s) {
  std::u32string out;
  for (std::size_t p = 0; p < s.size();) {
    std::size_t len = 1;
    out.push_back(tokenizer::decode_utf8(s, p, len));
    p += len;
  }
  return out;
}

inline std::string utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) tokenizer::append_utf8(out, c);
  return out;
}

/// str.strip() (`left`) / str.rstrip().
inline std::string py_strip(const std::string& s, bool left = true) {
  const auto cps = code_points(s);
  std::size_t b = 0, e = cps.size();
  while (left && b < e && py_space(cps[b])) ++b;
  while (e > b && py_space(cps[e - 1])) --e;
  return utf8(cps.substr(b, e - b));
}

}  // namespace lathe::eval::detail
