#include "node.hpp"

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer::detail {

void Node::fail(const std::string& what) const { throw Error(file + ": " + path + ": " + what); }

std::string Node::type() const {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) fail("expected an object with a \"type\"");
  return j["type"].get<std::string>();
}

Node Node::at(const char* key) const {
  if (!has(key)) fail(std::string("missing \"") + key + "\"");
  return child(j[key], path + "." + key);
}

bool Node::boolean(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  if (!j[key].is_boolean()) fail(std::string("\"") + key + "\" must be true or false");
  return j[key].get<bool>();
}

std::string Node::string(const char* key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  if (!j[key].is_string()) fail(std::string("\"") + key + "\" must be a string");
  return j[key].get<std::string>();
}

int64_t Node::integer(const char* key, int64_t fallback) const {
  if (!has(key)) return fallback;
  if (!j[key].is_number_integer()) fail(std::string("\"") + key + "\" must be an integer");
  return j[key].get<int64_t>();
}

std::vector<Node> Node::items(const char* key) const {
  const Node a = at(key);
  if (!a.j.is_array()) a.fail("expected a list");
  std::vector<Node> out;
  for (std::size_t i = 0; i < a.j.size(); ++i) out.push_back(a.child(a.j[i], a.path + "[" + std::to_string(i) + "]"));
  return out;
}

std::shared_ptr<const Regex> read_pattern(const Node& n, bool& is_string) {
  const Node p = n.at("pattern");
  if (p.j.is_object() && p.j.contains("String") && p.j["String"].is_string()) {
    is_string = true;
    return std::make_shared<Regex>(p.j["String"].get<std::string>(), RegexOptions{RegexDialect::Oniguruma, true});
  }
  if (p.j.is_object() && p.j.contains("Regex") && p.j["Regex"].is_string()) {
    is_string = false;
    try {
      return std::make_shared<Regex>(p.j["Regex"].get<std::string>(), RegexOptions{RegexDialect::Oniguruma, false});
    } catch (const Error& e) {
      p.fail(e.what());
    }
  }
  p.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

ojson pattern_json(const Regex& re, bool is_string) { return {{is_string ? "String" : "Regex", re.pattern()}}; }

SplitBehavior read_behavior(const Node& n, const char* key, SplitBehavior fallback) {
  if (!n.has(key)) return fallback;
  const auto s = n.string(key, "");
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  n.at(key).fail("behavior '" + s +
                 "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

const char* behavior_name(SplitBehavior b) {
  switch (b) {
    case SplitBehavior::Removed: return "Removed";
    case SplitBehavior::Isolated: return "Isolated";
    case SplitBehavior::MergedWithPrevious: return "MergedWithPrevious";
    case SplitBehavior::MergedWithNext: return "MergedWithNext";
    case SplitBehavior::Contiguous: return "Contiguous";
  }
  return "Isolated";
}

char32_t read_char(const Node& n, const char* key, char32_t fallback) {
  if (!n.has(key)) return fallback;
  const auto s = n.string(key, "");
  std::size_t len = 0;
  const char32_t cp = s.empty() ? kInvalidCodepoint : decode_utf8(s, 0, len);
  if (cp == kInvalidCodepoint || len != s.size()) n.at(key).fail("expected a single character");
  return cp;
}

std::string utf8(char32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

void read_byte_level(const Node& n, bool& add_prefix_space, bool& use_regex, bool& trim_offsets) {
  add_prefix_space = n.boolean("add_prefix_space", true);
  use_regex = n.boolean("use_regex", true);
  trim_offsets = n.boolean("trim_offsets", true);
}

ojson byte_level_json(bool add_prefix_space, bool use_regex, bool trim_offsets) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

}  // namespace lathe::tokenizer::detail
