// The training loop: setup (device, seed, tokenizer, model, optimizer, data), steps with
// gradient accumulation, mixed precision, clipping and the LR schedule, periodic validation,
// atomic checkpoints with retention, exact resume, metrics, and a clean stop on SIGTERM/SIGINT.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "lathe/dist/communicator.hpp"
#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/dist/grad_sync.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/sparsity.hpp"
#include "lathe/train/task.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::train {

struct TrainOptions {
  std::ostream* console = nullptr;  // progress line and messages; null: silent
  bool console_is_tty = false;      // redraw the progress line in place
  bool handle_signals = true;       // SIGTERM / SIGINT: checkpoint, then return (interrupted)
  /// Pruning masks to hold through training (and their schedule); null: dense training. On
  /// resume the checkpoint's masks replace the ones given.
  std::shared_ptr<Sparsity> sparsity;
  /// Data-parallel training with these ranks (dist::world_communicator); null or a world of one:
  /// one process. Rank 0 alone writes checkpoints, metrics and the console; every rank must
  /// construct its Trainer and run() it with the same recipe.
  std::shared_ptr<dist::Communicator> comm = nullptr;
};

struct TrainReport {
  int64_t start_step = 0;      // 0, or the step resumed from
  int64_t steps = 0;           // optimizer steps completed in total
  double train_loss = 0;       // mean loss of the last logged window
  std::map<std::string, double> val;  // last validation metrics
  std::filesystem::path checkpoint;   // the last checkpoint written
  bool interrupted = false;    // stopped by a signal
  int64_t skipped_steps = 0;   // steps dropped for a non-finite loss or gradient (nan_policy: skip)
  int64_t overflow_steps = 0;  // fp16: steps skipped for an overflow, each halving the loss scale
  double loss_scale = 0;       // fp16: the loss scale at the end
  at::ScalarType logits_dtype = at::kFloat;  // the last step's StepResult::logits_dtype
  double seconds = 0;          // wall time of this run's loop
  double tokens_per_s = 0;     // training throughput of this run, all ranks (validation and checkpoints excluded)
  int world_size = 1;          // ranks that trained
  dist::OverlapStats overlap;  // data-parallel: the last step's gradient communication
};

struct StepResult {
  double loss = 0;        // mean over the micro-batches
  double grad_norm = 0;   // before clipping
  double lr = 0;
  bool skipped = false;   // non-finite loss or gradient (nan_policy: skip), or fp16 overflow
  at::ScalarType logits_dtype = at::kFloat;  // what the model computed its logits in (bf16 under bf16 autocast)
  std::string why;        // why it was skipped
  bool stop = false;      // data-parallel: some rank asked to stop (SIGTERM / SIGINT) before this step
};

/// The device a recipe asks for: auto is CUDA when available.
at::Device resolve_device(recipe::Device device);
/// The device `model` runs on: the CPU for a quantized model (its kernels are CPU kernels),
/// else resolve_device(device).
at::Device model_device(const models::AnyModel& model, recipe::Device device);

class Trainer {
 public:
  /// Builds the model (random init, train.init_from, or the checkpoint that train.resume
  /// names) and the optimizer. The tokenizer is read when its file exists (required to run()).
  Trainer(recipe::Recipe recipe, TrainOptions options = {});
  ~Trainer();

  /// Trains to train.max_steps; returns what happened.
  TrainReport run();

  /// One optimizer step over `micro_batches` (each already a micro-batch; usually grad_accum
  /// of them): forward, backward, clipping, schedule, update. Data-parallel: every rank calls
  /// it with its own micro-batches; `stop` is this rank's wish to stop, and the result's stop
  /// says whether any rank had it (one agreement per step, in the step's one all-reduce).
  StepResult step(const std::vector<Batch>& micro_batches, bool stop = false);

  /// Validation metrics over up to `batches` validation batches.
  std::map<std::string, double> evaluate(int64_t batches);

  models::AnyModel& model() { return model_; }
  const TrainerState& state() const { return state_; }
  at::Device device() const { return device_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  recipe::Recipe recipe_;
  TrainOptions options_;
  at::Device device_;
  models::AnyModel model_;
  TrainerState state_;
};

/// What `lathe eval` measured: the metrics (loss, perplexity, accuracy, ...) and what they were
/// measured on.
struct EvalResult {
  std::map<std::string, double> metrics;
  int64_t batches = 0;  // batches evaluated
  int64_t targets = 0;  // tokens or examples scored
  /// The metrics with the counts, as eval.json holds them (counts as integers).
  nlohmann::json to_json() const;
};

/// `lathe eval`: loads a checkpoint (empty: the newest under <out_dir>/checkpoints) or a model
/// directory and evaluates eval.batches batches of eval.split.
EvalResult evaluate_checkpoint(const recipe::Recipe& recipe, const std::filesystem::path& checkpoint);

/// Evaluates `model` (already on `device`) on eval.batches of `data`'s evaluation batches, as
/// evaluate_checkpoint does after loading (without the unigram baseline).
EvalResult evaluate_model(const recipe::Recipe& recipe, const models::AnyModel& model, const TaskData& data,
                          const at::Device& device);

/// How the recipe's tokenizer file is read: tokenizer.lowercase for a vocab.txt (set: lower-cased;
/// unset: as its vocabulary says, as the CLI reads it), tokenizer.pattern and
/// tokenizer.special_tokens for a tiktoken file, tokenizer.eos_token for any.
tokenizer::LoadOptions tokenizer_load_options(const recipe::Recipe& recipe);

/// The newest checkpoint directory of a run, or throws naming the directory searched.
std::filesystem::path newest_checkpoint(const recipe::Recipe& recipe);

/// Throws lathe::Error naming every model key on which the checkpoint in `dir` and the recipe
/// disagree (what resuming it would refuse); a finished run is checked before it is skipped.
void check_checkpoint_model(const recipe::Recipe& recipe, const std::filesystem::path& dir);

}  // namespace lathe::train
