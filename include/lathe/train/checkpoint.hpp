// Checkpoint directories: <out_dir>/checkpoints/step_<NNNNNNNN>/ with
//   model.safetensors    the model (lathe names; kind and options in the metadata)
//   trainer.safetensors  optimizer state and RNG states
//   meta.json            format + version, step, trainer counters, the resolved recipe, and the
//                        byte size of both tensor files
// A checkpoint is written into a temporary directory, fsynced, then renamed into place, so a
// directory named step_* is complete unless the disk itself lost data.
#pragma once

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/models/store.hpp"

namespace lathe::train {

inline constexpr const char* kCheckpointFormat = "lathe-checkpoint";
inline constexpr int kCheckpointVersion = 1;

/// Counters that continue across a resume.
struct TrainerState {
  int64_t step = 0;            // optimizer steps completed
  int64_t tokens = 0;          // training tokens consumed
  int64_t skipped_steps = 0;   // steps dropped for a non-finite loss (nan_policy: skip)
  double best_val_loss = std::numeric_limits<double>::infinity();
  double val_loss = std::numeric_limits<double>::quiet_NaN();  // at this step, when evaluated
  double loss_scale = 65536.0; // fp16 dynamic loss scale
  int64_t good_steps = 0;      // fp16: steps since the scale last changed
  double elapsed_s = 0;        // training time so far
  std::string recipe_yaml;     // the resolved recipe of the run
};

struct CheckpointData {
  std::filesystem::path dir;
  TrainerState state;
  models::AnyModel model;
  std::map<std::string, at::Tensor> tensors;  // trainer.safetensors: "optim.*" and "rng.*"
};

/// Writes a checkpoint for `state.step` under `checkpoints_dir` and returns its directory.
std::filesystem::path save_checkpoint(const std::filesystem::path& checkpoints_dir, const models::AnyModel& model,
                                      const std::vector<std::pair<std::string, at::Tensor>>& trainer_tensors,
                                      const TrainerState& state);

/// Reads a checkpoint directory completely (model on the CPU); throws lathe::Error naming the
/// file for anything missing, truncated or malformed.
CheckpointData load_checkpoint(const std::filesystem::path& dir);

/// step_* directories under `checkpoints_dir`, oldest first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& checkpoints_dir);

/// The newest checkpoint that loads; each unreadable newer one is reported to `warn` and
/// skipped. nullopt when there is none.
std::optional<CheckpointData> load_latest_checkpoint(const std::filesystem::path& checkpoints_dir,
                                                     const std::function<void(const std::string&)>& warn);

/// Removes all but the newest `keep_last` checkpoints and, when keep_best, the one with the
/// lowest recorded validation loss.
void prune_checkpoints(const std::filesystem::path& checkpoints_dir, int64_t keep_last, bool keep_best);

}  // namespace lathe::train
