// Reading the JSON files tokenizers come in, with errors that name the file and line.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string_view>

namespace lathe::tokenizer::detail {

/// Parses a JSON file; a syntax error is reported as "file:line: message".
nlohmann::json read_json(const std::filesystem::path& path);

/// j[key], or an error naming the file and the missing key.
const nlohmann::json& member(const nlohmann::json& j, std::string_view key, const std::filesystem::path& path);

}  // namespace lathe::tokenizer::detail
