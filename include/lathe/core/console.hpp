// Progress reporting on the console: a line redrawn in place on a terminal, a few plain lines
// (each quarter) when the output is a file or a pipe, so logs stay short.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace lathe {

/// A progress callback (stage, done, total) that writes to `stream` (stderr by default).
std::function<void(const std::string&, int64_t, int64_t)> console_progress(std::FILE* stream = stderr);

}  // namespace lathe
