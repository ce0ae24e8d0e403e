// `lathe run`: executes a recipe's pipeline of stages in order.
#pragma once

#include <filesystem>
#include <iosfwd>
#include <vector>

#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

struct RunOptions {
  bool force = false;    // re-run stages whose outputs exist (also recipe run.force)
  bool dry_run = false;  // validate and print the plan, write nothing
  Progress progress;     // stage progress; none by default
  bool console_is_tty = false;  // the log is a terminal: training redraws its progress line in place
};

/// The resolved recipe of a run, under out_dir: a name a user's input recipe never needs to
/// have (`lathe run` with the recipe inside out_dir leaves the recipe untouched).
inline constexpr const char* kResolvedRecipe = "resolved.yaml";

struct RunReport {
  std::filesystem::path recipe_path;          // <out_dir>/resolved.yaml, the resolved recipe of the run
  bool interrupted = false;                   // a stage stopped on SIGTERM / SIGINT (resumable)
};

/// Runs each stage of `recipe.pipeline` in order under the run's lock, logging to `log`, then
/// writes the resolved recipe to <out_dir>/resolved.yaml (a run that fails part-way leaves the
/// previous one). Throws lathe::Error before anything runs when the recipe asks for an export
/// format this build lacks; stops after a stage that was interrupted.
RunReport run_pipeline(const recipe::Recipe& recipe, const RunOptions& options, std::ostream& log);

}  // namespace lathe::pipeline
