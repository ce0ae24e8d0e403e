#include "json_file.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer::detail {

nlohmann::ordered_json tokenizer_json_head(const std::vector<std::string>& tokens, const std::vector<int32_t>& special,
                                           const std::vector<AddedTokenFlags>& flags) {
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = nlohmann::ordered_json::array();
  for (std::size_t k = 0; k < special.size(); ++k) {
    const AddedTokenFlags f = flags.empty() ? AddedTokenFlags{} : flags.at(k);
    j["added_tokens"].push_back({{"id", special[k]}, {"content", tokens.at(special[k])}, {"single_word", f.single_word},
                                 {"lstrip", f.lstrip}, {"rstrip", f.rstrip}, {"normalized", f.normalized},
                                 {"special", true}});
  }
  return j;
}

bool optional_flag(const nlohmann::json& object, const char* key, const std::string& error) {
  if (!object.contains(key) || object[key].is_null()) return false;
  if (!object[key].is_boolean()) throw Error(error);
  return object[key].get<bool>();
}

AddedTokenFlags added_token_flags(const nlohmann::json& token, const std::string& where) {
  auto flag = [&](const char* key) { return optional_flag(token, key, where + ": \"" + key + "\" must be true or false"); };
  AddedTokenFlags f;
  f.single_word = flag("single_word");
  f.lstrip = flag("lstrip");
  f.rstrip = flag("rstrip");
  f.normalized = flag("normalized");
  return f;
}

}  // namespace lathe::tokenizer::detail
