// The JSON of tokenizer files: read through io::read_json; the head of a tokenizer.json.
#pragma once

#include <nlohmann/json.hpp>

#include "lathe/io/json_file.hpp"
#include "lathe/tokenizer/special.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer::detail {

using io::member;
using io::read_json;

/// The first keys of a Hugging Face tokenizer.json: version, truncation, padding and the added
/// (special) tokens `special` of `tokens`, with their `flags` (one per entry of `special`; empty:
/// none set).
nlohmann::ordered_json tokenizer_json_head(const std::vector<std::string>& tokens, const std::vector<int32_t>& special,
                                           const std::vector<AddedTokenFlags>& flags = {});

/// object[key] as a bool: false when absent or null; `error` (the whole message) when not a bool.
bool optional_flag(const nlohmann::json& object, const char* key, const std::string& error);

/// The flags of one entry of a tokenizer.json's added_tokens (`where` names it in errors).
AddedTokenFlags added_token_flags(const nlohmann::json& token, const std::string& where);

}  // namespace lathe::tokenizer::detail
