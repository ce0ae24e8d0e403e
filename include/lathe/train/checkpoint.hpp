// Checkpoint directories: <out_dir>/checkpoints/step_<NNNNNNNN>/ with
//   model.safetensors    the model (lathe names; kind and options in the metadata), or for a run
//                        with adapters adapter_config.json + adapter_model.safetensors: the
//                        adapters alone in PEFT's format (the frozen base is train.init_from)
//   trainer.safetensors  optimizer state and RNG states
//   meta.json            format + version, step, trainer counters, the resolved recipe, and the
//                        byte size of both tensor files
// A checkpoint is written into a temporary directory, fsynced, then renamed into place, so a
// directory named step_* is complete unless the disk itself lost data. Replacing a checkpoint
// of the same step swaps the two directories atomically (renameat2 RENAME_EXCHANGE; where the
// file system lacks it, the old one is moved aside and recover_checkpoints() restores it after a
// crash). Only directories named exactly step_<8+ digits> whose meta.json carries lathe's
// format are checkpoints; each records the id of the run that wrote it, and pruning touches the
// current run's checkpoints alone. Every directory is recorded in lathe's manifest
// (io/ownership.hpp) before it is written.
#pragma once

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/adapters/lora.hpp"
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
  int64_t overflow_steps = 0;  // fp16: steps skipped for an overflow (the scale was halved)
  double elapsed_s = 0;        // training time so far
  std::string recipe_yaml;     // the resolved recipe of the run
  std::string run_id;          // set when a run starts from scratch; kept across resumes
};

struct CheckpointData {
  std::filesystem::path dir;
  TrainerState state;
  models::AnyModel model;  // unset when the checkpoint holds adapters (`dir` is a PEFT adapter directory)
  bool adapters = false;
  std::map<std::string, at::Tensor> tensors;  // trainer.safetensors: "optim.*" and "rng.*"
};

/// A run with adapters writes them instead of the model: their options and the base they adapt
/// (adapter_config.json's base_model_name_or_path).
struct AdapterFiles {
  adapters::AdapterOptions options;
  std::string base;
};

/// Writes a checkpoint for `state.step` under `checkpoints_dir` and returns its directory.
std::filesystem::path save_checkpoint(const std::filesystem::path& checkpoints_dir, const models::AnyModel& model,
                                      const std::vector<std::pair<std::string, at::Tensor>>& trainer_tensors,
                                      const TrainerState& state);
/// The same with the tensors streamed (no more than one of them needed in memory at once): the
/// model's parameter values from `model_values` (in named_parameters() order; empty: the
/// model's own), trainer.safetensors from `trainer`.
/// `adapter`: the model's adapters are written alone (AdapterFiles).
std::filesystem::path save_checkpoint(const std::filesystem::path& checkpoints_dir, const models::AnyModel& model,
                                      const ValueSource& model_values, const TensorStream& trainer,
                                      const TrainerState& state, const AdapterFiles* adapter = nullptr);

/// Reads a checkpoint directory completely (model on the CPU); throws lathe::Error naming the
/// file for anything missing, truncated or malformed.
CheckpointData load_checkpoint(const std::filesystem::path& dir);

/// The checkpoints under `checkpoints_dir` (exact step_NNNNNNNN names with lathe's meta.json),
/// oldest first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& checkpoints_dir);

/// The step_NNNNNNNN directories lathe wrote under `checkpoints_dir` that are no checkpoint any
/// more (meta.json missing, unreadable or of another format), oldest first: list_checkpoints()
/// does not see them, and a resume must not pass over them in silence.
std::vector<std::filesystem::path> damaged_checkpoints(const std::filesystem::path& checkpoints_dir);

/// What makes a checkpoint directory unusable without reading its tensors (no meta.json,
/// another format, a file missing or of another size than recorded), naming the file; empty
/// when it is intact.
std::string checkpoint_problem(const std::filesystem::path& dir);

/// True for a directory named step_NNNNNNNN that holds a lathe meta.json.
bool is_checkpoint(const std::filesystem::path& dir);

/// The step in a checkpoint directory's name (step_00000120: 120); -1 for any other name.
int64_t checkpoint_step(const std::filesystem::path& dir);

/// The run id recorded in a checkpoint's meta.json ("" for none).
std::string checkpoint_run_id(const std::filesystem::path& dir);

/// Repairs what an interrupted save left (the writer of `checkpoints_dir` must hold its lock):
/// a checkpoint moved aside by a replacement goes back to its name; temporary directories go.
void recover_checkpoints(const std::filesystem::path& checkpoints_dir);

/// Test hook: called at each stage of a save ("model", "trainer", "complete", "renamed",
/// "exchanged", "moved_aside"). A hook that throws something not derived from std::exception
/// leaves the files exactly as a process killed at that point would. Empty: none.
using CheckpointFaultHook = std::function<void(std::string_view)>;
void set_checkpoint_fault_hook(CheckpointFaultHook hook);

/// The newest checkpoint that loads; each unreadable newer one (damaged_checkpoints() included)
/// is reported to `warn`, naming it and its problem, and skipped. nullopt when there is none.
std::optional<CheckpointData> load_latest_checkpoint(const std::filesystem::path& checkpoints_dir,
                                                     const std::function<void(const std::string&)>& warn);

/// Removes all but the newest `keep_last` checkpoints of run `run_id` and, when keep_best, the
/// one of them with the lowest recorded validation loss. Checkpoints of other runs and entries
/// lathe did not write are left alone. Returns what it removed.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& checkpoints_dir,
                                                     const std::string& run_id, int64_t keep_last, bool keep_best);

}  // namespace lathe::train
