// Expanding the input lists of recipes and commands: files, directories and globs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/core/enum_table.hpp"

namespace lathe::io {

using lathe::operator<<;

/// How corpus files are read: auto decides by extension (is_jsonl), text and jsonl force one.
enum class InputFormat { Auto, Text, Jsonl };

/// Each entry is a file, a directory (all regular files below it, recursively, sorted, except
/// hidden ones, those under hidden directories and editor backups `x~` / `#x#`; a file with NUL
/// bytes there is an error) or a glob pattern (sorted matches). Throws lathe::Error naming an
/// entry that matches nothing.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& entries);

/// True for the extensions read as JSON Lines (.jsonl, .json).
bool is_jsonl(const std::filesystem::path& path);

/// One JSONL line as a JSON value; nullopt for a blank line. `path` and `lineno` name the line
/// in errors: lathe::Error "file:line: invalid JSON: ...".
std::optional<nlohmann::json> jsonl_line(std::string_view line, const std::filesystem::path& path, int lineno);

/// Reads the string `field` of one JSONL line into `out`; returns false for a blank line.
/// `path` and `lineno` name the line in errors: lathe::Error "file:line: ..." for invalid JSON
/// or a missing or non-string field.
bool jsonl_field(std::string_view line, const std::string& field, const std::filesystem::path& path, int lineno,
                 std::string& out);

/// The one corpus reader, at the grain of its texts: calls `text` for each line of a text file
/// (newline kept, blank lines too; what a tokenizer trainer counts, as Hugging Face's trainers
/// read files) or for each record of a JSONL file (.jsonl/.json, or format Jsonl), its
/// `jsonl_field`. Throws lathe::Error naming the file, and the line of a bad JSONL line.
void read_texts(const std::vector<std::filesystem::path>& files, InputFormat format,
                const std::string& jsonl_field, const std::function<void(std::string&&)>& text);

/// The same reader at the grain of documents: calls `doc` for each document of `files`. A text file holds documents
/// separated by blank lines (a file without any blank line: one document per line, newline
/// kept); a JSONL file (.jsonl/.json, or format Jsonl) one document per line, in `jsonl_field`.
/// Throws lathe::Error naming the file, and the line of a bad JSONL line.
void read_documents(const std::vector<std::filesystem::path>& files, InputFormat format,
                    const std::string& jsonl_field, const std::function<void(std::string&&)>& doc);

}  // namespace lathe::io

LATHE_ENUM_TABLE(lathe::io::InputFormat, {lathe::io::InputFormat::Auto, "auto"}, {lathe::io::InputFormat::Text, "text"},
                 {lathe::io::InputFormat::Jsonl, "jsonl"});
