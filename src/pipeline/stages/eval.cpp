// The eval stage: evaluates a model on the recipe's task.

#include <fstream>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/checkpointer.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// <out_dir>/eval_samples/<task>.jsonl: one line per document (eval.log_samples).
void write_samples(const recipe::Recipe& r, const std::vector<eval::TaskResult>& tasks) {
  const auto dir = fs::path(r.run.out_dir) / "eval_samples";
  io::claim(dir);
  fs::create_directories(dir);
  for (const auto& t : tasks) {
    std::string text;
    for (const auto& s : t.samples) text += s.dump() + "\n";
    const auto file = dir / (t.task + ".jsonl");
    io::claim(file);
    io::write_file_atomic(file, text);
  }
}

}  // namespace

StageResult run_eval_stage(const recipe::Recipe& r, bool force) {
  RunLock lock(r);
  const auto ckpt = source_model(r, r.eval.source, recipe::Stage::Eval, r.eval.checkpoint);
  const auto out = fs::path(r.run.out_dir) / "eval.json";
  MadeFrom made_from = stage_record(r, recipe::Stage::Eval, ckpt);
  add_files(made_from, train::eval_task_inputs(r));
  const auto fresh = freshness(force, out, read_stage_record(r.run.out_dir, "eval"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} describes {}", out.string(), ckpt.string())};
  check_not_input(r, {out});
  io::claim(out);
  const auto result = train::evaluate_checkpoint(r, ckpt);
  json j = {{"checkpoint", ckpt.string()}, {"split", recipe::enum_name(r.eval.split)}, {"metrics", result.to_json()}};
  if (!result.tasks.empty()) {
    j["metrics"].erase("tasks");
    for (const auto& t : result.tasks) j["tasks"][t.task] = json::parse(t.to_json().dump());
    if (r.eval.log_samples) write_samples(r, result.tasks);
  }
  io::write_file_atomic(out, j.dump(2) + "\n");
  write_stage_record(r.run.out_dir, "eval", made_from);
  std::string text;
  for (const auto& [k, v] : result.metrics) text += fmt::format("{}{} {:.4f}", text.empty() ? "" : ", ", k, v);
  text += fmt::format(" ({} batches, {} {})", result.batches, result.targets,
                      result.metrics.count("rewards_accuracy") ? "pairs" : "targets");
  if (!result.tasks.empty()) text += fmt::format(" and {} task(s)", result.tasks.size());
  std::string summary = fmt::format("{}{} on {}: {} -> {}", fresh.why(), ckpt.filename().string(),
                                    recipe::enum_name(r.eval.split), text, out.string());
  if (!result.tasks.empty()) {
    auto table = eval::results_table(result.tasks);
    table.pop_back();  // the log ends the line
    summary += "\n" + table;
  }
  return {false, summary};
}

}  // namespace lathe::pipeline
