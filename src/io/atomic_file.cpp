#include "lathe/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "lathe/core/error.hpp"

namespace lathe::io {
namespace fs = std::filesystem;

namespace {
[[noreturn]] void fail(const std::string& what, const fs::path& path) {
  throw Error(what + " '" + path.string() + "': " + std::strerror(errno));
}
}  // namespace

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open", path);
  if (::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    fail("cannot fsync", path);
  }
  ::close(fd);
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  write_file_atomic(path, std::span<const std::string_view>(&contents, 1));
}

void write_file_atomic(const fs::path& path, std::span<const std::string_view> pieces) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir.string() + "': " + ec.message());

  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail("cannot create a temporary file in", dir);
  const fs::path tmp = tmpl;
  for (const auto piece : pieces) {
    const char* data = piece.data();
    std::size_t left = piece.size();
    while (left > 0) {
      ssize_t n = ::write(fd, data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int saved = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        errno = saved;
        fail("cannot write", tmp);
      }
      data += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  bool ok = ::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0;
  int saved = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    errno = saved;
    fail("cannot finish writing", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail("cannot rename into place", path);
  }
  fsync_path(dir);
}

}  // namespace lathe::io
