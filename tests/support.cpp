#include "support.hpp"

#include <catch2/catch.hpp>

#include "lathe/core/error.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace lathe::test {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = fs::temp_directory_path() / ("lathe-test-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path TempDir::write(const std::string& name, const std::string& text) const {
  fs::path p = path_ / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Child::Child(const std::vector<std::string>& argv, const fs::path& cwd) {
  const fs::path out = tmp_.path() / "out", err = tmp_.path() / "err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int rc = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
}

Child::~Child() {
  if (pid_ > 0 && !done_) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void Child::signal(int sig) { ::kill(pid_, sig); }

bool Child::exited() {
  if (!reaped_ && waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
  return reaped_;
}

std::string Child::output() const { return read_file(tmp_.path() / "out"); }

ProcessResult Child::wait() {
  if (!reaped_) waitpid(pid_, &status_, 0);
  reaped_ = true;
  const int status = status_;
  done_ = true;
  ProcessResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(tmp_.path() / "out");
  r.err = read_file(tmp_.path() / "err");
  return r;
}

ProcessResult run_process(const std::vector<std::string>& argv, const fs::path& cwd) { return Child(argv, cwd).wait(); }

ProcessResult run_lathe(const std::vector<std::string>& args, const fs::path& cwd) {
  std::vector<std::string> argv{LATHE_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, cwd);
}

void run_reference(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> argv{LATHE_TEST_PYTHON, (source_dir() / "tests/reference" / script).string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_process(argv);
  INFO(script << " " << r.err);
  REQUIRE(r.code == 0);
}

ProcessResult run_python(const std::string& code, const std::vector<std::string>& args) {
  std::string python = LATHE_TEST_PYTHON;
  if (python.empty()) python = "python3";
  std::vector<std::string> argv{python, "-c", code};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

fs::path source_dir() { return LATHE_SOURCE_DIR; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const lathe::Error& e) {
    return e.what();
  }
  return "no error";
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace lathe::test
