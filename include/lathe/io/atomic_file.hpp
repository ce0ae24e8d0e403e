// Writing files so that a crash never leaves a half-written one behind.
#pragma once

#include <filesystem>
#include <span>
#include <string_view>

namespace lathe::io {

/// Writes `contents` to `path` through a temporary file in the same directory: write, fsync,
/// rename over `path`, fsync the directory. Readers see the old file or the new one, never a
/// mix. Creates missing parent directories. Throws lathe::Error naming the path on failure.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);
/// The same for contents given as pieces written one after the other (a file larger than what
/// the caller would copy into one string: a checkpoint's header and each tensor's bytes).
void write_file_atomic(const std::filesystem::path& path, std::span<const std::string_view> pieces);

/// A file written piece by piece and then put in place as write_file_atomic does; a writer
/// destroyed before commit() removes its temporary file, leaving `path` as it was.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  /// Appends `piece`; throws lathe::Error naming the file (a full disk, ...).
  void write(std::string_view piece);
  /// fsync, rename over `path`, fsync the directory.
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
};

/// fsync of a file or directory; throws lathe::Error naming the path on failure.
void fsync_path(const std::filesystem::path& path);

}  // namespace lathe::io
