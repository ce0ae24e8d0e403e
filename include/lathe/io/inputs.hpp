// Expanding the input lists of recipes and commands: files, directories and globs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lathe::io {

/// Each entry is a file, a directory (all regular files below it, recursively, sorted) or a
/// glob pattern (sorted matches). Throws lathe::Error naming an entry that matches nothing.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& entries);

}  // namespace lathe::io
