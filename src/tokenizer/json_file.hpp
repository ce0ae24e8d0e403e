// Reading the JSON files tokenizers come in, with errors that name the file and line.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer::detail {

/// Parses a JSON file; a syntax error is reported as "file:line: message".
nlohmann::json read_json(const std::filesystem::path& path);

/// j[key], or an error naming the file and the missing key.
const nlohmann::json& member(const nlohmann::json& j, std::string_view key, const std::filesystem::path& path);

/// The first keys of a Hugging Face tokenizer.json: version, truncation, padding and the added
/// (special) tokens `special` of `tokens`.
nlohmann::ordered_json tokenizer_json_head(const std::vector<std::string>& tokens, const std::vector<int32_t>& special);

}  // namespace lathe::tokenizer::detail
