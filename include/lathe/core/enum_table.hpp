// Enumerations with a spelling table: `enum_name(x)` gives the spelling (the recipe's YAML
// value, the model file's JSON value), `parse_enum<E>(s)` reads it back. Each enum declares
// its one table next to itself with LATHE_ENUM_TABLE (at namespace scope of `lathe`'s
// sub-namespaces, outside any function).
#pragma once

#include <array>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace lathe {

/// Spelling table of an enum; one specialisation per enum.
template <class E>
struct EnumTable;

#define LATHE_ENUM_TABLE(E, ...)                                                                   \
  template <>                                                                                      \
  struct lathe::EnumTable<E> {                                                                     \
    static constexpr auto values = std::to_array<std::pair<E, std::string_view>>({__VA_ARGS__});  \
  }

template <class E>
concept SpelledEnum = requires { EnumTable<E>::values; };

template <SpelledEnum E>
constexpr std::string_view enum_name(E value) {
  for (const auto& [v, name] : EnumTable<E>::values)
    if (v == value) return name;
  return "?";
}

template <SpelledEnum E>
constexpr std::optional<E> parse_enum(std::string_view text) {
  for (const auto& [v, name] : EnumTable<E>::values)
    if (name == text) return v;
  return std::nullopt;
}

/// "a|b|c": the spellings of E, for messages and the key reference.
template <SpelledEnum E>
std::string enum_choices(std::string_view sep = "|") {
  std::string out;
  for (const auto& [v, name] : EnumTable<E>::values) {
    if (!out.empty()) out += sep;
    out += name;
  }
  return out;
}

/// Prints the spelling (test output, logs). Each namespace that declares spelled enums names
/// it with `using lathe::operator<<;` so that argument-dependent lookup finds it.
template <SpelledEnum E>
std::ostream& operator<<(std::ostream& os, E value) {
  return os << enum_name(value);
}

}  // namespace lathe
