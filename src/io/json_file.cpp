#include "lathe/io/json_file.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"

namespace lathe::io {
namespace {

std::optional<std::string> slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

nlohmann::json read_json(const std::filesystem::path& path) {
  const auto s = slurp(path);
  if (!s) throw Error("cannot read '" + path.string() + "'");
  try {
    return nlohmann::json::parse(*s);
  } catch (const nlohmann::json::parse_error& e) {
    const auto upto = std::min<std::size_t>(e.byte, s->size());
    const auto line = 1 + std::count(s->begin(), s->begin() + static_cast<std::ptrdiff_t>(upto), '\n');
    std::string msg = e.what();
    if (auto p = msg.find("syntax error"); p != std::string::npos) msg = msg.substr(p);
    throw Error(path.string() + ":" + std::to_string(line) + ": invalid JSON: " + msg);
  }
}

std::optional<nlohmann::json> read_json_if_valid(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  const auto s = slurp(path);
  if (!s) return std::nullopt;
  auto j = nlohmann::json::parse(*s, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

const nlohmann::json& member(const nlohmann::json& j, std::string_view key, const std::filesystem::path& path) {
  if (!j.is_object() || !j.contains(key)) throw Error(path.string() + ": missing key '" + std::string(key) + "'");
  return j[std::string(key)];
}

}  // namespace lathe::io
