// The one reader of JSON files (tokenizer.json, config.json, meta.json, index.json, manifests,
// stage records), with errors that name the file and line.
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lathe::io {

/// Parses a JSON file. Throws lathe::Error "cannot read 'file'" or "file:line: invalid JSON: ...".
nlohmann::json read_json(const std::filesystem::path& path);

/// The file's JSON, or nullopt when it is absent, unreadable or not valid JSON: for files whose
/// absence or damage the caller treats as "no record" (and says so where it matters).
std::optional<nlohmann::json> read_json_if_valid(const std::filesystem::path& path);

/// j[key], or lathe::Error naming the file and the missing key.
const nlohmann::json& member(const nlohmann::json& j, std::string_view key, const std::filesystem::path& path);

}  // namespace lathe::io
