// Which files lathe may overwrite or delete, and one writer per directory.
//
// The rule: lathe overwrites or deletes a path only when lathe wrote it. Every directory lathe
// writes into keeps a manifest, `.lathe-manifest.json`, that lists the names (relative to that
// directory) of the entries lathe created there. A writer claims a name before it writes it: a
// claim of a name that exists but is not listed fails with an error naming the file, before
// anything is written, so a user's file with the name lathe wants is never replaced. Removing
// goes through the manifest too: an unlisted entry is left alone.
//
// Writers of a directory hold its lock (`.lathe.lock`, an flock the kernel releases when the
// process dies, so it is never stale); a second process that wants to write there stops at once
// with "DIR is in use by lathe (pid N, started ...)". Locks are re-entrant within a process.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lathe::io {

inline constexpr const char* kManifestName = ".lathe-manifest.json";
inline constexpr const char* kLockName = ".lathe.lock";

/// True when `path` is listed in the manifest of its parent directory.
bool owns(const std::filesystem::path& path);

/// Records `path` in its directory's manifest so that lathe may write it. Throws lathe::Error
/// naming the path when something lathe did not write already exists there.
void claim(const std::filesystem::path& path);

/// Throws like claim() when `path` exists and is not lathe's; records nothing.
void check_claimable(const std::filesystem::path& path);

/// Removes `path` (a file or a directory tree) when lathe wrote it and drops it from the
/// manifest. Returns false and leaves it alone when it is not lathe's (or does not exist).
bool remove_owned(const std::filesystem::path& path);

/// The entries of `dir` that its manifest lists and that still exist.
std::vector<std::filesystem::path> owned_entries(const std::filesystem::path& dir);

/// Exclusive lock of a directory lathe writes into (created when missing). Held until destroyed.
class DirLock {
 public:
  /// Throws lathe::Error "DIR is in use by lathe (pid N, started T)" when another process holds it.
  explicit DirLock(const std::filesystem::path& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  std::string key_;
};

}  // namespace lathe::io
