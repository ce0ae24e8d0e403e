// Problems found in a recipe, each tied to the place that caused it.
#pragma once

#include <string>
#include <vector>

#include "lathe/core/error.hpp"

namespace lathe::recipe {

/// Where a value came from: a file position (1-based line and column), or an override such as
/// `--set model.n_layer=2` (its `file` is then "<--set model.n_layer=2>", line 1, the column
/// within the argument). line == 0 means the position is unknown.
struct Mark {
  std::string file;
  int line = 0;
  int col = 0;
};

struct Diagnostic {
  Mark mark;
  std::string key;      // dotted key path, e.g. "model.n_head"; empty for whole-file problems
  std::string message;  // what is wrong and, where possible, what to write instead
  bool fatal = false;   // the file could not be read as a recipe at all (syntax): nothing is bound

  /// "file:line:col: key.path: message"
  std::string str() const;
};

/// Thrown by the loader with every problem it found, in file order.
class RecipeError : public Error {
 public:
  explicit RecipeError(std::vector<Diagnostic> diagnostics);
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

 private:
  std::vector<Diagnostic> diagnostics_;
};

}  // namespace lathe::recipe
