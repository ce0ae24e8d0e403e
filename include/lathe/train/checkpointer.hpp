// The trainer's checkpoints: when to save (the checkpointer owns its schedule), what a training
// checkpoint holds beside the model (the optimizer state, the RNG states, the pruning masks),
// retention, and the resume policy: which checkpoint a run continues from, and the states of
// run.out_dir it refuses to continue (checkpoints of another run, later ones, only unreadable
// ones, an earlier run under train.resume: none, a model other than the recipe's).
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "lathe/models/deferred.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/sparsity.hpp"

namespace lathe::train {

struct CheckpointerOptions {
  std::filesystem::path root;  // <out_dir>/checkpoints
  at::Device device = at::kCPU;  // whose RNG state is saved beside the CPU's
  /// This process writes the checkpoints (rank 0); the other ranks take part in what is
  /// collective and return the directory rank 0 writes.
  bool writes = true;
  /// A run with adapters: what its checkpoints hold instead of the model (checkpoint.hpp).
  std::optional<AdapterFiles> adapter;
};

class Checkpointer {
 public:
  /// The schedule and retention come from train.save_every, keep_last and keep_best.
  Checkpointer(CheckpointerOptions options, const recipe::TrainConfig& train);

  /// Every train.save_every steps, at the last step, and when a validation finds a new best
  /// loss under keep_best.
  bool due(int64_t step, bool last, bool new_best) const;
  bool done_at(int64_t step) const { return last_ == step; }
  double seconds() const { return seconds_; }

  /// Writes the checkpoint of `state` (its val_loss only when validated at this very step) with
  /// the optimizer state, the RNG states and `sparsity`'s masks (null: none), then prunes old
  /// ones; returns its directory. The parameters' values come from `model_values` where given
  /// (DataParallel::model_values), the model's own otherwise. Every rank calls it: both streams
  /// run exactly once on every rank (they may be collectives), on the writer into the files.
  std::filesystem::path save(const models::AnyModel& model, const ValueSource& model_values, TensorStream optimizer,
                             const Sparsity* sparsity, TrainerState state, bool validated_now);

 private:
  CheckpointerOptions o_;
  const recipe::TrainConfig& train_;
  int64_t last_ = -1;
  double seconds_ = 0;
};

/// The checkpoint under `root` that train.resume (`how`: auto, none or a path) continues, or
/// nullopt to start afresh. auto passes over unreadable newer checkpoints, each reported to
/// `warn`. Refuses, before anything is written: checkpoints of which none loads, an earlier
/// run's checkpoints under resume none, checkpoints of another run beside the chosen one, and
/// intact checkpoints later than the chosen one.
std::optional<CheckpointData> choose_resume(const std::filesystem::path& root, const std::string& how,
                                            const std::function<void(const std::string&)>& warn);

/// The resumed checkpoint's model as the recipe's model (deferred: see initial_model): refused
/// when the checkpoint holds another kind of model than train.task trains, or another
/// architecture (naming every key).
models::DeferredModel resumed_model(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok,
                               const CheckpointData& checkpoint);

/// Throws lathe::Error naming every model key on which the checkpoint in `dir` and the recipe
/// disagree (what resuming it would refuse); a finished run is checked before it is skipped.
void check_checkpoint_model(const recipe::Recipe& recipe, const std::filesystem::path& dir);

/// The recipe keys whose values differ from those the checkpoint was trained with (its
/// meta.json holds that recipe, `checkpoint_recipe`): what a resume applies anew, said when
/// training starts. Empty when nothing changed or the old recipe no longer parses.
std::string changed_settings(const std::string& checkpoint_recipe, const recipe::Recipe& now);

/// The tensors of trainer.safetensors under `prefix` ("optim.", "mask."), the prefix removed.
std::map<std::string, at::Tensor> checkpoint_part(const CheckpointData& checkpoint, const std::string& prefix);

/// Restores the RNG states a checkpoint saved (the CPU's, and `device`'s when it is CUDA).
void restore_rng(const std::map<std::string, at::Tensor>& tensors, const at::Device& device);

/// A fresh run id (hex), recorded in every checkpoint and metrics record of the run.
std::string new_run_id();

}  // namespace lathe::train
