#include "values.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <regex>

#include "lathe/recipe/diagnostic.hpp"

namespace lathe::recipe {

std::string Diagnostic::str() const {
  std::string out = mark.file;
  if (mark.line > 0) out += ":" + std::to_string(mark.line) + ":" + std::to_string(mark.col);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

namespace {
std::string join(const std::vector<Diagnostic>& diags) {
  std::string out;
  for (const auto& d : diags) out += d.str() + "\n";
  if (!out.empty()) out.pop_back();
  return out;
}
}  // namespace

RecipeError::RecipeError(std::vector<Diagnostic> diagnostics)
    : Error(join(diagnostics)), diagnostics_(std::move(diagnostics)) {}

}  // namespace lathe::recipe

namespace lathe::recipe::detail {

std::optional<bool> read_bool(std::string_view s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

std::optional<double> read_double(std::string_view s) {
  static const std::regex number(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  static const std::regex inf(R"([-+]?\.(inf|Inf|INF))");
  static const std::regex nan(R"(\.(nan|NaN|NAN))");
  std::string str(s);
  if (std::regex_match(str, inf)) return str[0] == '-' ? -HUGE_VAL : HUGE_VAL;
  if (std::regex_match(str, nan)) return std::numeric_limits<double>::quiet_NaN();
  if (!std::regex_match(str, number)) return std::nullopt;
  const char* first = str.data() + (str[0] == '+' ? 1 : 0);
  double value = 0;
  auto [ptr, ec] = std::from_chars(first, str.data() + str.size(), value);
  if (ec != std::errc() || ptr != str.data() + str.size()) return std::nullopt;
  return value;
}

std::optional<int64_t> read_int(std::string_view s) {
  static const std::regex decimal(R"([-+]?[0-9]+)");
  static const std::regex hex(R"(0x[0-9a-fA-F]+)");
  std::string str(s);
  int64_t value = 0;
  if (std::regex_match(str, decimal)) {
    const char* first = str.data() + (str[0] == '+' ? 1 : 0);
    auto [ptr, ec] = std::from_chars(first, str.data() + str.size(), value);
    if (ec != std::errc()) return std::nullopt;
    return value;
  }
  if (std::regex_match(str, hex)) {
    auto [ptr, ec] = std::from_chars(str.data() + 2, str.data() + str.size(), value, 16);
    if (ec != std::errc()) return std::nullopt;
    return value;
  }
  // 1e6 or 2.0: a float that is exactly an integer is accepted where an integer is expected.
  if (auto d = read_double(s); d && std::isfinite(*d) && std::trunc(*d) == *d && std::fabs(*d) < 9.007199254740992e15)
    return static_cast<int64_t>(*d);
  return std::nullopt;
}

std::string format_double(double x) {
  if (std::isnan(x)) return ".nan";
  if (std::isinf(x)) return x < 0 ? "-.inf" : ".inf";
  char buf[64];
  // general: fixed notation for moderate exponents (0.0003), scientific otherwise (1e-08).
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::general);
  std::string out(buf, ptr);
  // A '.' in the mantissa keeps the text a float for YAML 1.1 readers too (PyYAML).
  const auto e = out.find('e');
  if (out.substr(0, e).find('.') == std::string::npos) out.insert(e == std::string::npos ? out.size() : e, ".0");
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string closest(std::string_view word, const std::vector<std::string_view>& candidates) {
  const auto lower = [](std::string_view s) {
    std::string out(s);
    for (auto& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return out;
  };
  for (auto c : candidates)  // the spelling in other case ("GGUF" for gguf)
    if (lower(c) == lower(word)) return std::string(c);
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (auto c : candidates) {
    std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

}  // namespace lathe::recipe::detail
