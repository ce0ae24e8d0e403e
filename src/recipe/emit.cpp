// Writing recipes back out: the resolved YAML (`recipe show`) and the key reference
// (`recipe keys`), both driven by the same schema the loader binds through.

#include <yaml-cpp/yaml.h>

#include "lathe/core/hash.hpp"
#include "lathe/recipe/load.hpp"
#include "values.hpp"

namespace lathe::recipe {
namespace {

/// Strings that YAML would read as another type are quoted, so the text keeps its meaning.
void emit_string(YAML::Emitter& out, const std::string& s) {
  const bool ambiguous = s.empty() || detail::read_bool(s) || detail::read_double(s) || detail::read_int(s) ||
                         s == "null" || s == "~" || s == "Null" || s == "NULL";
  if (ambiguous) out << YAML::DoubleQuoted;
  out << s;
}

template <class T>
void emit_value(YAML::Emitter& out, const T& v) {
  if constexpr (detail::is_vector<T>::value) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : v) emit_value(out, item);
    out << YAML::EndSeq;
  } else if constexpr (std::is_same_v<T, std::string>) {
    emit_string(out, v);
  } else {
    out << detail::scalar_text(v);
  }
}

class Emitter {
 public:
  explicit Emitter(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void field(std::string_view key, T& value, std::string_view /*doc*/, Range = {}, Traits traits = {}) {
    if (!traits.recipe_key) return;
    out_ << YAML::Key << std::string(key) << YAML::Value;
    emit_value(out_, value);
  }

  template <class S>
  void section(std::string_view key, S& section, std::string_view /*doc*/) {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::BeginMap;
    visit(*this, section);
    out_ << YAML::EndMap;
  }

 private:
  YAML::Emitter& out_;
};

class KeyLister {
 public:
  KeyLister(std::vector<KeyDoc>& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}

  template <class T>
  void field(std::string_view key, T& value, std::string_view doc, Range range = {}, Traits traits = {}) {
    if (!traits.recipe_key) return;
    std::string type = detail::type_name<T>();
    if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>)
      if (range.bounded()) type += " " + range.describe();
    YAML::Emitter text;
    text << YAML::Flow;
    emit_value(text, value);
    out_.push_back({prefix_ + std::string(key), type, text.c_str(), std::string(doc)});
  }

  template <class S>
  void section(std::string_view key, S& section, std::string_view /*doc*/) {
    KeyLister sub(out_, prefix_ + std::string(key) + ".");
    visit(sub, section);
  }

 private:
  std::vector<KeyDoc>& out_;
  std::string prefix_;
};

}  // namespace

std::string to_yaml(const Recipe& recipe) {
  Recipe copy = recipe;  // the schema visitors take mutable references
  YAML::Emitter out;
  out << YAML::BeginMap;
  Emitter emitter(out);
  visit(emitter, copy);
  out << YAML::EndMap;
  // A blank line between top-level sections, for reading.
  std::string text = out.c_str(), spaced;
  for (std::size_t pos = 0; pos < text.size();) {
    auto end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    if (pos > 0 && !line.empty() && line[0] != ' ' && line.back() == ':') spaced += '\n';
    spaced.append(line).push_back('\n');
    pos = end + 1;
  }
  return spaced;
}

std::vector<KeyDoc> recipe_keys() { return recipe_keys(Recipe{}); }

std::vector<KeyDoc> recipe_keys(const Recipe& recipe) {
  Recipe copy = recipe;
  std::vector<KeyDoc> keys;
  KeyLister lister(keys, "");
  visit(lister, copy);
  return keys;
}

uint64_t recipe_hash(const Recipe& recipe) {
  Fnv1a h;
  h.add(to_yaml(recipe));
  return h.value();
}

}  // namespace lathe::recipe
