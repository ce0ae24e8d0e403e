// Helpers shared by the test files: temporary directories, running the lathe CLI or Python,
// and reading files.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace lathe::test {

struct ProcessResult {
  int code = -1;
  std::string out;
  std::string err;
};

/// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// Writes `text` to path()/name (creating parent directories) and returns the full path.
  std::filesystem::path write(const std::string& name, const std::string& text) const;

 private:
  std::filesystem::path path_;
};


/// A program started in the background (no shell), stdout and stderr going to files.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv, const std::filesystem::path& cwd = {});
  ~Child();  // kills it if still running
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  void signal(int sig);
  /// Whether it has ended (wait() then returns at once).
  bool exited();
  std::string output() const;  // stdout so far
  ProcessResult wait();

 private:
  TempDir tmp_;
  int pid_ = 0;
  bool done_ = false;
  int status_ = 0;
  bool reaped_ = false;
};

/// Runs a program with arguments (no shell), capturing stdout, stderr and the exit code.
/// `cwd` empty: the current directory.
ProcessResult run_process(const std::vector<std::string>& argv, const std::filesystem::path& cwd = {});

/// Runs the built `lathe` binary.
ProcessResult run_lathe(const std::vector<std::string>& args, const std::filesystem::path& cwd = {});

/// Runs Python code with the interpreter that holds the reference packages (the project venv).
ProcessResult run_python(const std::string& code, const std::vector<std::string>& args = {});

/// Runs tests/reference/<script> with the project venv's Python; fails the test case (with
/// the script's stderr) when it does not exit 0.
void run_reference(const std::string& script, const std::vector<std::string>& args);

std::string read_file(const std::filesystem::path& path);

/// The repository root (for recipes/, README.md).
std::filesystem::path source_dir();

/// The message of the lathe::Error that `f` throws, or "no error".
std::string error_of(const std::function<void()>& f);

/// Lines of `text`.
std::vector<std::string> lines(const std::string& text);

}  // namespace lathe::test
