#include "lathe/io/inputs.hpp"

#include <glob.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "lathe/core/error.hpp"

namespace lathe::io {
namespace fs = std::filesystem;

std::vector<fs::path> expand_inputs(const std::vector<std::string>& entries) {
  std::vector<fs::path> out;
  for (const auto& entry : entries) {
    std::vector<fs::path> found;
    std::error_code ec;
    if (fs::is_directory(entry, ec)) {
      for (const auto& f : fs::recursive_directory_iterator(entry))
        if (f.is_regular_file()) found.push_back(f.path());
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

bool jsonl_field(std::string_view line, const std::string& field, const fs::path& path, int lineno, std::string& out) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return false;
  const std::string where = path.string() + ":" + std::to_string(lineno) + ": ";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "invalid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains(field) || !j[field].is_string()) throw Error(where + "no string field '" + field + "'");
  out = j[field].get<std::string>();
  return true;
}

}  // namespace lathe::io
