// Python's ast.literal_eval for what a rendered task template can print: strings (with their
// escapes), integers, floats, True / False / None, and lists / tuples of them. lm-evaluation-
// harness reads "{{choices.text}}" that way: jinja2 prints the list as Python's repr.
#pragma once

#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lathe::eval::detail {

/// The value `text` spells (tuples as lists), or nullopt when it is not such a literal.
std::optional<nlohmann::ordered_json> literal_eval(std::string_view text);

}  // namespace lathe::eval::detail
