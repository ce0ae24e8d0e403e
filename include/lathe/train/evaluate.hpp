// Evaluation of a model on a task's validation (or training) batches: what `lathe eval`, the
// compression stages and the trainer's periodic validation measure, in one place below the
// trainer so that every stage reaches it without going through training.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "lathe/eval/harness.hpp"
#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/metrics.hpp"
#include "lathe/train/task.hpp"

namespace lathe::train {

/// What `lathe eval` measured: the metrics (loss, perplexity, accuracy, ...) and what they were
/// measured on.
struct EvalResult {
  std::map<std::string, double> metrics;
  int64_t batches = 0;  // batches evaluated
  int64_t targets = 0;  // tokens or examples scored
  std::vector<eval::TaskResult> tasks;  // eval.tasks, scored as lm-evaluation-harness scores them
  /// The metrics with the counts (as integers) and, when tasks ran, "tasks": {name: result}.
  nlohmann::json to_json() const;
};

/// The first `n` validation batches of `data` scored by `model` (on `device`), in eval mode
/// without gradients under `precision`'s autocast (the model's training flag is restored).
EvalAccumulator evaluate_batches(const models::AnyModel& model, const TaskData& data, int64_t n,
                                 recipe::Precision precision, const at::Device& device);

/// dpo: gives `data` the reference log-probabilities of the pairs of training batches
/// [train_begin, train_end) and of the first `val_batches` validation batches, scored by
/// `reference` on `device` in eval mode without gradients under `precision`'s autocast; returns
/// a line saying so for the run's notes. A no-op (returning "") for data without pairs.
std::string score_reference(TaskData& data, const models::AnyModel& reference, recipe::Precision precision,
                            const at::Device& device, uint64_t train_begin, uint64_t train_end, int64_t val_batches);
/// The reference model of a dpo run, on `device`: train.init_from as the recipe adopts it.
models::AnyModel reference_model(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok,
                                 const at::Device& device);

/// Evaluates `model` (already on `device`) on eval.batches of `data`'s evaluation batches, as
/// evaluate_checkpoint does after loading (without the unigram baseline).
EvalResult evaluate_model(const recipe::Recipe& recipe, const models::AnyModel& model, const TaskData& data,
                          const at::Device& device);

/// `lathe eval`: loads a checkpoint (empty: the newest under <out_dir>/checkpoints) or a model
/// directory and evaluates eval.batches batches of eval.split, then runs eval.tasks (those named
/// in `only_tasks`, by name or file, when it is not empty).
EvalResult evaluate_checkpoint(const recipe::Recipe& recipe, const std::filesystem::path& checkpoint,
                               const std::vector<std::string>& only_tasks = {});

/// The trainer's validation: owns its schedule (every train.eval_every steps and at the last
/// step, when there is validation data) and the time it takes.
class Validator {
 public:
  Validator(int64_t every, bool enabled) : every_(every), enabled_(enabled) {}
  bool due(int64_t step, bool last) const { return enabled_ && ((every_ > 0 && step % every_ == 0) || last); }
  bool done_at(int64_t step) const { return last_ == step; }
  double seconds() const { return seconds_; }

  /// Validates at `step` with `evaluate`: records the loss in `state` (val_loss, best_val_loss),
  /// the metrics in `metrics` (a "val" record and a console line), and returns the metrics and
  /// whether the loss is the best so far.
  std::pair<std::map<std::string, double>, bool> run(int64_t step, TrainerState& state, Metrics& metrics,
                                                     const std::function<std::map<std::string, double>()>& evaluate);

 private:
  int64_t every_;
  bool enabled_;
  int64_t last_ = -1;
  double seconds_ = 0;
};

}  // namespace lathe::train
