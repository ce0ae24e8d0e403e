#include "json_file.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer::detail {

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path.string() + "'");
  std::ostringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  try {
    return nlohmann::json::parse(s);
  } catch (const nlohmann::json::parse_error& e) {
    const auto upto = std::min<std::size_t>(e.byte, s.size());
    const auto line = 1 + std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(upto), '\n');
    std::string msg = e.what();
    if (auto p = msg.find("syntax error"); p != std::string::npos) msg = msg.substr(p);
    throw Error(path.string() + ":" + std::to_string(line) + ": invalid JSON: " + msg);
  }
}

const nlohmann::json& member(const nlohmann::json& j, std::string_view key, const std::filesystem::path& path) {
  if (!j.is_object() || !j.contains(key)) throw Error(path.string() + ": missing key '" + std::string(key) + "'");
  return j[std::string(key)];
}

nlohmann::ordered_json tokenizer_json_head(const std::vector<std::string>& tokens, const std::vector<int32_t>& special) {
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = nlohmann::ordered_json::array();
  for (int32_t id : special)
    j["added_tokens"].push_back({{"id", id}, {"content", tokens.at(id)}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  return j;
}

}  // namespace lathe::tokenizer::detail
