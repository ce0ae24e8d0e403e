// Expanding the input lists of recipes and commands: files, directories and globs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::io {

/// Each entry is a file, a directory (all regular files below it, recursively, sorted, except
/// hidden ones, those under hidden directories and editor backups `x~` / `#x#`; a file with NUL
/// bytes there is an error) or a glob pattern (sorted matches). Throws lathe::Error naming an
/// entry that matches nothing.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& entries);

/// True for the extensions read as JSON Lines (.jsonl, .json).
bool is_jsonl(const std::filesystem::path& path);

/// Reads the string `field` of one JSONL line into `out`; returns false for a blank line.
/// `path` and `lineno` name the line in errors: lathe::Error "file:line: ..." for invalid JSON
/// or a missing or non-string field.
bool jsonl_field(std::string_view line, const std::string& field, const std::filesystem::path& path, int lineno,
                 std::string& out);

}  // namespace lathe::io
