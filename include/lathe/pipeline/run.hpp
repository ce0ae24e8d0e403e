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

struct RunReport {
  std::filesystem::path recipe_path;          // <out_dir>/recipe.yaml, the resolved recipe of the run
  std::vector<recipe::Stage> unavailable;     // stages this build of lathe cannot execute
};

/// Writes the resolved recipe to <out_dir>/recipe.yaml, then runs each stage of
/// `recipe.pipeline`, logging progress to `log`.
RunReport run_pipeline(const recipe::Recipe& recipe, const RunOptions& options, std::ostream& log);

/// Stages this build of lathe can execute.
std::vector<recipe::Stage> available_stages();

}  // namespace lathe::pipeline
