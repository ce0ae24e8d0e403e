// Reading tokenizer.json components: field access that names the JSON path in every error, and
// the fields several components share (patterns, split behaviors, single characters, ByteLevel's
// settings, a Sequence's steps).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/tokenizer/pipeline.hpp"
#include "lathe/tokenizer/regex.hpp"

namespace lathe::tokenizer::detail {

using ojson = nlohmann::ordered_json;

/// The id of a token the file names (-1 for one it does not have).
using TokenId = std::function<int32_t(std::string_view)>;

/// One JSON value of the file, with its path (`pre_tokenizer.pretokenizers[1]`).
struct Node {
  const nlohmann::json& j;
  std::string path;
  const std::string& file;
  const TokenId& token_id;  // for the post-processors that name special tokens

  [[noreturn]] void fail(const std::string& what) const;
  std::string type() const;
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  Node at(const char* key) const;
  /// `value` found at `path` of the same file.
  Node child(const nlohmann::json& value, std::string child_path) const {
    return {value, std::move(child_path), file, token_id};
  }
  bool boolean(const char* key, bool fallback) const;
  std::string string(const char* key, const std::string& fallback) const;
  int64_t integer(const char* key, int64_t fallback) const;
  std::vector<Node> items(const char* key) const;
};

/// A component of type T whose settings read themselves (T::read(n)).
template <class T>
std::shared_ptr<T> read_settings(const Node& n) {
  auto r = std::make_shared<T>();
  r->read(n);
  return r;
}

/// A {"String": s} or {"Regex": r} pattern.
std::shared_ptr<const Regex> read_pattern(const Node& n, bool& is_string);
ojson pattern_json(const Regex& re, bool is_string);

SplitBehavior read_behavior(const Node& n, const char* key, SplitBehavior fallback);
const char* behavior_name(SplitBehavior b);

/// One character of a string field ("replacement", "content").
char32_t read_char(const Node& n, const char* key, char32_t fallback);
std::string utf8(char32_t cp);

/// ByteLevel's settings, as its pre-tokenizer, post-processor and decoder all read and write them.
void read_byte_level(const Node& n, bool& add_prefix_space, bool& use_regex, bool& trim_offsets);
ojson byte_level_json(bool add_prefix_space, bool use_regex, bool trim_offsets);

/// {"type": "Sequence", key: [each step's JSON]}: the Sequence of every part alike.
template <class Steps>
ojson sequence_json(const char* key, const Steps& steps) {
  ojson list = ojson::array();
  for (const auto& s : steps) list.push_back(s->to_json());
  return {{"type", "Sequence"}, {key, list}};
}

}  // namespace lathe::tokenizer::detail
