#include "lathe/io/json_file.hpp"
#include "lathe/io/ownership.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"

namespace lathe::io {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path parent_of(const fs::path& path) { return path.has_parent_path() ? path.parent_path() : fs::path("."); }

std::vector<std::string> read_manifest(const fs::path& dir) {
  const auto file = dir / kManifestName;
  if (!fs::exists(file)) return {};
  const auto read = read_json_if_valid(file);
  const json j = read ? *read : json();
  if (!j.is_object() || j.value("format", "") != "lathe-manifest" || !j.contains("files") || !j["files"].is_array())
    throw Error(file.string() + ": not a lathe manifest (it lists the files lathe wrote in " + dir.string() +
                "); restore it or remove the directory's lathe files by hand");
  std::vector<std::string> names;
  for (const auto& n : j["files"])
    if (n.is_string()) names.push_back(n.get<std::string>());
  return names;
}

void write_manifest(const fs::path& dir, std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  json j = {{"format", "lathe-manifest"}, {"version", 1}, {"files", names}};
  write_file_atomic(dir / kManifestName, j.dump(1) + "\n");
}

bool exists_no_follow(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

bool listed(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

bool owns(const fs::path& path) {
  return listed(read_manifest(parent_of(path)), path.filename().string());
}

void check_claimable(const fs::path& path) {
  if (exists_no_follow(path) && !owns(path))
    throw Error("'" + path.string() +
                "' exists and was not written by lathe; lathe never overwrites or deletes a file it did not write: "
                "move it away, or choose another directory");
}

void claim(const fs::path& path) {
  const auto dir = parent_of(path);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir.string() + "': " + ec.message());
  auto names = read_manifest(dir);
  const auto name = path.filename().string();
  if (listed(names, name)) return;
  check_claimable(path);
  names.push_back(name);
  write_manifest(dir, std::move(names));
}

bool remove_owned(const fs::path& path) {
  const auto dir = parent_of(path);
  auto names = read_manifest(dir);
  const auto name = path.filename().string();
  if (!listed(names, name)) return false;
  std::error_code ec;
  const bool existed = exists_no_follow(path);
  fs::remove_all(path, ec);
  if (ec) throw Error("cannot remove '" + path.string() + "': " + ec.message());
  names.erase(std::remove(names.begin(), names.end(), name), names.end());
  write_manifest(dir, std::move(names));
  return existed;
}

std::vector<fs::path> owned_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& name : read_manifest(dir))
    if (exists_no_follow(dir / name)) out.push_back(dir / name);
  return out;
}

// ---------------------------------------------------------------------------------- DirLock

namespace {

struct Held {
  int fd = -1;
  int count = 0;
};
std::mutex g_locks_mutex;
std::map<std::string, Held>& held_locks() {
  static std::map<std::string, Held> locks;
  return locks;
}

std::string now_text() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

DirLock::DirLock(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir.string() + "': " + ec.message());
  key_ = fs::weakly_canonical(dir).string();
  std::lock_guard guard(g_locks_mutex);
  auto& locks = held_locks();
  if (auto it = locks.find(key_); it != locks.end()) {
    ++it->second.count;
    return;
  }
  const auto file = dir / kLockName;
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open the lock file '" + file.string() + "': " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    char buf[512];
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) holder.assign(buf, static_cast<std::size_t>(n));
    ::close(fd);
    if (err != EWOULDBLOCK)
      throw Error("cannot lock '" + file.string() + "': " + std::strerror(err));
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    throw Error(fmt::format("{} is in use by lathe ({}); wait for that process to finish, or use another directory",
                            dir.string(), holder.empty() ? "another process" : holder));
  }
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const auto text = fmt::format("pid {}, started {} on {}\n", ::getpid(), now_text(), host);
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    // The lock holds without its description; the message of a second writer is less precise.
  }
  locks[key_] = Held{fd, 1};
}

DirLock::~DirLock() {
  std::lock_guard guard(g_locks_mutex);
  auto& locks = held_locks();
  auto it = locks.find(key_);
  if (it == locks.end()) return;
  if (--it->second.count == 0) {
    ::close(it->second.fd);  // releases the flock
    locks.erase(it);
  }
}

}  // namespace lathe::io
