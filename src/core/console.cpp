#include "lathe/core/console.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <map>
#include <memory>

namespace lathe {

std::function<void(const std::string&, int64_t, int64_t)> console_progress(std::FILE* stream) {
  const bool tty = ::isatty(::fileno(stream)) != 0;
  auto last_quarter = std::make_shared<std::map<std::string, int64_t>>();
  return [stream, tty, last_quarter](const std::string& stage, int64_t done, int64_t total) {
    const double pct = total > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
    if (tty) {
      fmt::print(stream, "\r{}: {}/{} ({:.0f}%){}", stage, done, total, pct, done >= total ? "\n" : "");
    } else {
      const int64_t quarter = total > 0 ? done * 4 / total : 4;
      auto [it, fresh] = last_quarter->emplace(stage, -1);
      if (quarter == it->second) return;
      it->second = quarter;
      fmt::print(stream, "{}: {}/{} ({:.0f}%)\n", stage, done, total, pct);
    }
    std::fflush(stream);
  };
}

}  // namespace lathe
