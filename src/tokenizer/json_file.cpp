#include "json_file.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer::detail {

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
