// The recipe's eval.tasks (lm-evaluation-harness tasks, lathe/eval/harness.hpp) run on a
// model: by the eval stage, the gates of the stages that change a model, and the trainer every
// eval.every steps.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lathe/eval/harness.hpp"
#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/metrics.hpp"

namespace lathe::train {

/// eval.num_fewshot, limit and bootstrap_iters as the harness's run options.
eval::RunOptions task_run_options(const recipe::Recipe& recipe);

/// The tasks of eval.tasks, read with their documents (only those named `only`, by task name or
/// file, when it is not empty). Throws lathe::Error naming eval.tasks[i] and the file.
std::vector<eval::Task> load_eval_tasks(const recipe::Recipe& recipe, const std::vector<std::string>& only = {});

/// The task files, the files they include and the document files they read, for a stage's record.
std::vector<std::filesystem::path> eval_task_inputs(const recipe::Recipe& recipe);

/// A model's tokenizer and what the scorer reads beside it (its configured BOS).
struct TaskTokenizer {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  eval::ScorerOptions scorer;
};

/// Runs `tasks` on `model` (a GPT kind, on its device) with `tok`; refuses other kinds.
std::vector<eval::TaskResult> run_eval_tasks(const std::vector<eval::Task>& tasks, const models::AnyModel& model,
                                             const TaskTokenizer& tok, const eval::RunOptions& options);

/// `lathe eval --checkpoint MODEL --task FILE` without a recipe: the task files run on the
/// model (a lathe checkpoint or model file, or a Hugging Face directory, on the CPU) with the
/// tokenizer at `tokenizer` (empty: the tokenizer.json beside the model).
std::vector<eval::TaskResult> evaluate_task_files(const std::filesystem::path& model,
                                                  const std::vector<std::string>& task_files,
                                                  const std::filesystem::path& tokenizer,
                                                  const eval::RunOptions& options);

/// The tokenizer that goes with the model at `path`: the tokenizer.json of its directory (a
/// Hugging Face directory brings its own), else the run's.
TaskTokenizer tokenizer_for_model(const recipe::Recipe& recipe, const std::filesystem::path& path);
/// The tokenizer at `file` (loaded with the recipe's options when `recipe` is given).
TaskTokenizer task_tokenizer(const std::filesystem::path& file, const recipe::Recipe* recipe = nullptr);

/// A task result's metrics as a record's values: "<task>/<metric>" ("<task>/<metric>,<filter>"
/// for a filter other than none), for metrics.jsonl and TensorBoard.
std::map<std::string, double> task_record_values(const std::vector<eval::TaskResult>& results);

/// The trainer's runs of eval.tasks: owns its schedule (every eval.every steps and at the last
/// step, on rank 0 alone, whose model is whole) and the time it takes.
class TaskSchedule {
 public:
  /// Reads the tasks and the run's tokenizer when they will run (eval.every > 0 on the `lead` rank).
  TaskSchedule(const recipe::Recipe& recipe, bool lead);
  bool due(int64_t step, bool last) const;
  /// Runs the tasks on `model` and records their metrics at `step` ("task" records:
  /// task_record_values) with a console line.
  void run(int64_t step, const models::AnyModel& model, Metrics& metrics);
  double seconds() const { return seconds_; }

 private:
  std::vector<eval::Task> tasks_;
  TaskTokenizer tok_;
  eval::RunOptions options_;
  int64_t every_ = 0;
  int64_t done_at_ = -1;
  double seconds_ = 0;
};

}  // namespace lathe::train
