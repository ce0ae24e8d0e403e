#include "lathe/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
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
  AtomicFileWriter out(path);
  for (const auto piece : pieces) out.write(piece);
  out.commit();
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  const fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir.string() + "': " + ec.message());
  std::string tmpl = (dir / ("." + path_.filename().string() + ".tmp-XXXXXX")).string();
  fd_ = ::mkstemp(tmpl.data());
  if (fd_ < 0) fail("cannot create a temporary file in", dir);
  tmp_ = tmpl;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(std::string_view piece) {
  if (fd_ < 0) throw std::logic_error("AtomicFileWriter: write after commit");
  const char* data = piece.data();
  std::size_t left = piece.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write", tmp_);
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw std::logic_error("AtomicFileWriter: committed twice");
  bool ok = ::fchmod(fd_, 0644) == 0 && ::fsync(fd_) == 0;
  int saved = errno;
  if (::close(fd_) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  fd_ = -1;
  if (!ok) {
    ::unlink(tmp_.c_str());
    errno = saved;
    fail("cannot finish writing", tmp_);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    saved = errno;
    ::unlink(tmp_.c_str());
    errno = saved;
    fail("cannot rename into place", path_);
  }
  fsync_path(path_.has_parent_path() ? path_.parent_path() : fs::path("."));
}

}  // namespace lathe::io
