#include "lathe/pipeline/run.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ostream>

#include "lathe/io/atomic_file.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"

namespace lathe::pipeline {

std::vector<recipe::Stage> available_stages() {
  using recipe::Stage;
  return {Stage::Tokenizer, Stage::Data, Stage::Train, Stage::Eval, Stage::Generate};
}

RunReport run_pipeline(const recipe::Recipe& recipe, const RunOptions& options, std::ostream& log) {
  RunReport report;
  report.recipe_path = std::filesystem::path(recipe.run.out_dir) / "recipe.yaml";
  const auto available = available_stages();

  std::string plan;
  for (auto stage : recipe.pipeline) plan += (plan.empty() ? "" : " -> ") + std::string(recipe::enum_name(stage));
  log << fmt::format("run '{}': {} (out_dir {})\n", recipe.run.name, plan, recipe.run.out_dir);
  if (!options.dry_run) {
    io::write_file_atomic(report.recipe_path, recipe::to_yaml(recipe));
    log << fmt::format("wrote the resolved recipe to {}\n", report.recipe_path.string());
  }
  for (auto stage : recipe.pipeline) {
    if (std::find(available.begin(), available.end(), stage) == available.end()) {
      report.unavailable.push_back(stage);
      log << fmt::format("stage {}: not available in this build of lathe\n", recipe::enum_name(stage));
      continue;
    }
    if (options.dry_run) continue;
    StageResult result;
    switch (stage) {
      case recipe::Stage::Tokenizer: result = run_tokenizer_stage(recipe, options.force, options.progress); break;
      case recipe::Stage::Data: result = run_data_stage(recipe, options.force, options.progress); break;
      case recipe::Stage::Train: result = run_train_stage(recipe, options.force, {&log, options.console_is_tty}); break;
      case recipe::Stage::Eval: result = run_eval_stage(recipe, options.force); break;
      case recipe::Stage::Generate: result = run_generate_stage(recipe, options.force, &log); break;
      default: break;
    }
    log << fmt::format("stage {}: {}{}\n", recipe::enum_name(stage), result.skipped ? "skipped, " : "", result.summary);
    log.flush();
  }
  return report;
}

}  // namespace lathe::pipeline
