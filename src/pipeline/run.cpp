#include "lathe/pipeline/run.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <ostream>

#include "lathe/core/error.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/pipeline/registry.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"

namespace lathe::pipeline {

RunReport run_pipeline(const recipe::Recipe& recipe, const RunOptions& options, std::ostream& log) {
  RunReport report;
  report.recipe_path = std::filesystem::path(recipe.run.out_dir) / kResolvedRecipe;

  std::string plan;
  for (auto stage : recipe.pipeline) plan += (plan.empty() ? "" : " -> ") + std::string(recipe::enum_name(stage));
  const auto world = dist::detect_world();
  if (world.rank == 0)  // rank 0 speaks for a data-parallel job
    log << fmt::format("run '{}': {} (out_dir {})\n", recipe.run.name, plan, recipe.run.out_dir);
  if (options.dry_run)
    for (auto stage : recipe.pipeline) {
      const auto& spec = stage_spec(stage);
      std::string writes(spec.writes);
      std::erase(writes, '`');
      log << fmt::format("  {:<9} lathe {} -> {}{}\n", recipe::enum_name(stage), spec.command, writes,
                         spec.every_rank ? " (every rank of a data-parallel job)" : "");
    }
  const bool exports = std::find(recipe.pipeline.begin(), recipe.pipeline.end(), recipe::Stage::Export) !=
                       recipe.pipeline.end();
  for (const auto& problem : {exports ? export_problem(recipe) : "", chat_template_problem(recipe)}) {
    if (problem.empty()) continue;
    const auto msg = problem + " (nothing was run)";
    if (!options.dry_run) throw Error(msg);
    log << msg << "\n";
  }
  if (options.dry_run) return report;

  // A data-parallel launch: rank 0 runs every stage; the other ranks take part in the stages
  // whose work every rank shares (training, the prune stage's fine-tune; they meet rank 0 where
  // those start) and never write.
  if (world.rank > 0) {
    for (auto stage : recipe.pipeline) {
      const auto& spec = stage_spec(stage);
      if (!spec.every_rank) continue;
      if ((report.interrupted = spec.run({recipe, options.force, {}, {}}).interrupted)) break;
    }
    return report;
  }
  RunLock lock(recipe);
  // Checked before any stage runs, written after the last: a run that fails part-way leaves the
  // record of the last run that finished, whose artifacts the stages' own records describe.
  const auto text = recipe::to_yaml(recipe);
  bool same = false;
  {
    std::ifstream in(report.recipe_path, std::ios::binary);
    std::ostringstream old;
    if (in) old << in.rdbuf();
    same = in && old.str() == text;
  }
  if (!same) {  // rewriting identical bytes would be a no-op; an input is never written over
    check_not_input(recipe, {report.recipe_path});
    io::check_claimable(report.recipe_path);
  }
  for (auto stage : recipe.pipeline) {
    const auto result = stage_spec(stage).run({recipe, options.force, {&log, options.console_is_tty}, options.progress});
    log << fmt::format("stage {}: {}{}\n", recipe::enum_name(stage), result.skipped ? "skipped, " : "", result.summary);
    log.flush();
    if (result.interrupted) {
      report.interrupted = true;
      log << fmt::format("run interrupted in stage {}; run the same command again to resume\n",
                         recipe::enum_name(stage));
      break;
    }
  }
  if (!same) {
    io::claim(report.recipe_path);
    io::write_file_atomic(report.recipe_path, text);
  }
  log << fmt::format("the resolved recipe is {}\n", report.recipe_path.string());
  return report;
}

}  // namespace lathe::pipeline
