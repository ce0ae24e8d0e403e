// The training loop: setup (device, seed, tokenizer, model, optimizer, data), steps with
// gradient accumulation, mixed precision, clipping and the LR schedule, periodic validation,
// atomic checkpoints with retention, exact resume, metrics, and a clean stop on SIGTERM/SIGINT.
// The loop delegates to components that each own their schedule and policy: Checkpointer and
// the resume policy (checkpointer.hpp), Validator (evaluate.hpp), MixedPrecision
// (precision.hpp), DataParallel (data_parallel.hpp) and Metrics with its StepWindow
// (metrics.hpp).
#pragma once

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
#include "lathe/train/metrics.hpp"
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
  /// fsdp: run() ends by gathering the trained model whole on every rank (model() then gives
  /// it), its optimizer state freed first; that needs the float32 model's size on each rank.
  /// Without it the model stays sharded and the checkpoint holds the trained model.
  bool whole_model = false;
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
  int64_t tokens = 0;     // input tokens of the step, all ranks
  at::Tensor preference;  // dpo: the step's preference_sums (task.hpp) on the host, this rank's pairs
};

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

  /// The model; under fsdp only after a run() with TrainOptions::whole_model (std::logic_error
  /// otherwise: a rank holds shards of it).
  models::AnyModel& model();
  const TrainerState& state() const { return state_; }
  at::Device device() const { return device_; }

 private:
  /// The model, the data-parallel state and the optimizer, from `resume` or afresh.
  void start(std::optional<CheckpointData> resume);
  /// adapters on: the adapters on the base (attached afresh, or read from `resume`), the base frozen.
  void start_adapters(const CheckpointData* resume);
  /// The tokenizer (required now), the task's data and the class names.
  void load_data();
  /// The run's opening lines; refuses a pipeline whose eval stage has no validation data.
  /// Returns whether there is validation data.
  bool announce(Metrics& metrics) const;
  /// The lines of the step just done (progress, a skipped step) and, when `logged`, its
  /// records (the window's mean loss into `report`); `mfu_per_tps`
  /// turns tokens per second into MFU.
  void log_step(Metrics& metrics, StepWindow& window, const StepResult& r, bool logged, double mfu_per_tps,
                TrainReport& report) const;

  /// The report's totals at the end of run(); `other_s`: the seconds not spent training.
  void finish_report(TrainReport& report, const StepWindow& window, double other_s) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
  recipe::Recipe recipe_;
  TrainOptions options_;
  at::Device device_;
  models::AnyModel model_;
  TrainerState state_;
};

}  // namespace lathe::train
