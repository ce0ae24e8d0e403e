// Conversions between recipe field types and YAML scalars, shared by the binder (reading),
// the emitter (`recipe show`) and the key reference (`recipe keys`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "lathe/recipe/enums.hpp"
#include "lathe/core/schema.hpp"

namespace lathe::recipe::detail {

template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {
  using element = T;
};

/// YAML 1.2 core-schema readings of a plain scalar; nullopt when it is not of that type.
std::optional<bool> read_bool(std::string_view s);
std::optional<int64_t> read_int(std::string_view s);  // also exact integers written as 1e6 / 2.0
std::optional<double> read_double(std::string_view s);

/// Shortest text that reads back to the same double, always recognisable as a float.
std::string format_double(double x);

/// Edit distance, for did-you-mean suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);
/// The closest candidate within a small distance, or empty.
std::string closest(std::string_view word, const std::vector<std::string_view>& candidates);

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_same_v<T, int64_t>) return "integer";
  else if constexpr (std::is_same_v<T, double>) return "number";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (SpelledEnum<T>) return "one of " + enum_choices<T>();
  else if constexpr (is_vector<T>::value) return "list of " + type_name<typename is_vector<T>::element>();
  else static_assert(sizeof(T) == 0, "unsupported recipe field type");
}

/// A scalar as YAML text would show it (strings unquoted; the emitter quotes where needed).
template <class T>
std::string scalar_text(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(v);
  else if constexpr (std::is_same_v<T, double>) return format_double(v);
  else if constexpr (std::is_same_v<T, std::string>) return v;
  else if constexpr (SpelledEnum<T>) return std::string(enum_name(v));
  else static_assert(sizeof(T) == 0, "not a scalar type");
}

}  // namespace lathe::recipe::detail
