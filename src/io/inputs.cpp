#include "lathe/io/inputs.hpp"

#include <glob.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "lathe/core/error.hpp"

namespace lathe::io {
namespace fs = std::filesystem;

namespace {
bool looks_binary(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char buf[4096];
  in.read(buf, sizeof buf);
  return std::memchr(buf, '\0', static_cast<std::size_t>(in.gcount())) != nullptr;
}
}  // namespace

std::vector<fs::path> expand_inputs(const std::vector<std::string>& entries) {
  std::vector<fs::path> out;
  for (const auto& entry : entries) {
    std::vector<fs::path> found;
    std::error_code ec;
    if (fs::is_directory(entry, ec)) {
      // Hidden files and directories (.git, .DS_Store) and editor backups (x~, #x#) are not
      // corpus; a binary file among the rest is an error naming it.
      for (auto it = fs::recursive_directory_iterator(entry); it != fs::recursive_directory_iterator(); ++it) {
        const auto name = it->path().filename().string();
        const bool skipped = name.starts_with('.') || name.ends_with('~') || (name.starts_with('#') && name.ends_with('#'));
        if (skipped) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file()) continue;
        if (looks_binary(it->path()))
          throw Error("input '" + it->path().string() + "' (in the directory '" + entry +
                      "') holds NUL bytes: not a text or JSONL file; move it out, or name the files with a glob");
        found.push_back(it->path());
      }
    } else if (fs::is_regular_file(entry, ec)) {
      found.emplace_back(entry);
    } else if (entry.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      if (::glob(entry.c_str(), 0, nullptr, &g) == 0)
        for (std::size_t i = 0; i < g.gl_pathc; ++i)
          if (fs::is_regular_file(g.gl_pathv[i], ec)) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
    }
    if (found.empty())
      throw Error("input '" + entry + "' " +
                  (entry.find_first_of("*?[") != std::string::npos ? "matches no file" : "does not exist"));
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

bool is_jsonl(const fs::path& path) { return path.extension() == ".jsonl" || path.extension() == ".json"; }

std::optional<nlohmann::json> jsonl_line(std::string_view line, const fs::path& path, int lineno) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return std::nullopt;
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ":" + std::to_string(lineno) + ": invalid JSON: " + e.what());
  }
}

bool jsonl_field(std::string_view line, const std::string& field, const fs::path& path, int lineno, std::string& out) {
  const auto parsed = jsonl_line(line, path, lineno);
  if (!parsed) return false;
  const std::string where = path.string() + ":" + std::to_string(lineno) + ": ";
  const auto& j = *parsed;
  if (!j.is_object() || !j.contains(field) || !j[field].is_string()) throw Error(where + "no string field '" + field + "'");
  out = j[field].get<std::string>();
  return true;
}

namespace {

/// The reading itself: calls `fn(text, record)` for each line of a text file (newline kept,
/// blank lines too; record false) or the field of each record of a JSONL file (record true).
/// Whether a file is JSONL is decided here and nowhere else.
void read_file(const fs::path& f, InputFormat format, const std::string& field_name,
               const std::function<void(std::string&&, bool)>& fn) {
  std::ifstream in(f, std::ios::binary);
  if (!in) throw Error("cannot read '" + f.string() + "'");
  const bool jsonl = format == InputFormat::Jsonl || (format == InputFormat::Auto && is_jsonl(f));
  std::string line, field;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!jsonl) fn(line + "\n", false);
    else if (jsonl_field(line, field_name, f, lineno, field)) fn(std::move(field), true);
  }
}

}  // namespace

void read_texts(const std::vector<fs::path>& files, InputFormat format, const std::string& jsonl_field,
                const std::function<void(std::string&&)>& text) {
  for (const auto& f : files) read_file(f, format, jsonl_field, [&](std::string&& t, bool) { text(std::move(t)); });
}

void read_documents(const std::vector<fs::path>& files, InputFormat format, const std::string& jsonl_field,
                    const std::function<void(std::string&&)>& doc) {
  for (const auto& f : files) {
    std::string text;
    bool paragraphs = false;  // the file separates documents by blank lines
    read_file(f, format, jsonl_field, [&](std::string&& t, bool record) {
      if (record) {
        doc(std::move(t));
      } else if (t.find_first_not_of(" \t\r\n") == std::string::npos) {
        paragraphs = true;
        if (!text.empty()) doc(std::move(text));
        text.clear();
      } else {
        text += t;
      }
    });
    if (text.empty()) continue;
    if (paragraphs) {
      doc(std::move(text));
      continue;
    }
    // No blank line anywhere: one document per line (as the tokenizer trainer reads text),
    // rather than the whole file as one document and an empty validation split.
    for (std::size_t at = 0; at < text.size();) {
      const auto nl = text.find('\n', at);
      doc(text.substr(at, nl - at + 1));
      at = nl + 1;
    }
  }
}

}  // namespace lathe::io
