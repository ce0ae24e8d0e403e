// What several stages share: the job's communicator, the refusal to rerun under a trained run,
// and the before / after measurements of the stages that change a model (prune, quantize).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lathe/dist/communicator.hpp"
#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/task.hpp"

namespace lathe::pipeline {

/// The world communicator when a launcher (mpirun, torchrun, srun) started this process as one
/// of several ranks (or distributed.backend names one); null for a process on its own.
std::shared_ptr<dist::Communicator> job_communicator(const recipe::Recipe& recipe);

/// A stage whose inputs changed (`diff`) may not rerun under a trained run: its checkpoints
/// would then hold a model of other inputs than the directory's tokenizer or shards.
void refuse_if_trained(const recipe::Recipe& recipe, const char* stage, const std::vector<std::string>& diff);

/// The model at `path` as the recipe's task uses it (for classification, with model.num_labels
/// classes).
models::AnyModel load_task_model(const recipe::Recipe& recipe, const std::filesystem::path& path);

/// The run's tokenizer and task data, for a stage that reports validation metrics of the
/// model read from `path` before and after changing it.
struct TaskInputs {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<train::TaskData> data;
};

/// Loads them; refuses a tokenizer larger than the model's vocabulary and a validation split
/// without a batch, naming `stage`.
TaskInputs measured_task(const recipe::Recipe& recipe, const models::AnyModel& model,
                         const std::filesystem::path& path, const char* stage);

/// Median forward times (ms) of `batch` through models `a` and `b`, timed in turns (a, b, a,
/// b, ...) so both see the same machine state.
std::pair<double, double> forward_ms(const models::AnyModel& a, const models::AnyModel& b, const train::Batch& batch);

/// `batch` with its rows repeated (and cut) to `rows`: a latency probe of that batch size.
train::Batch with_rows(const train::Batch& batch, int64_t rows);

/// Bytes of a model's weights as it holds them: float parameters and quantized weights.
int64_t weight_bytes(const models::AnyModel& model);

}  // namespace lathe::pipeline
