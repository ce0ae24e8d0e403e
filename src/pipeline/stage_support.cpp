// What several stages share: the job's communicator, the refusal to rerun under a trained run,
// and the before / after measurements of the stages that change a model.

#include "stage_support.hpp"

#include <algorithm>
#include <chrono>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/run_dir.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;

std::string speed_change(double before_ms, double after_ms) {
  if (after_ms > before_ms) return fmt::format("{:.2f}x slower", after_ms / before_ms);
  return fmt::format("{:.2f}x faster", before_ms / after_ms);
}

std::shared_ptr<dist::Communicator> job_communicator(const recipe::Recipe& r) {
  const auto world = dist::detect_world();
  const auto device = train::resolve_device(r.run.device);
  return dist::resolve_backend(r.distributed.backend, world, device) != dist::Backend::None
             ? dist::world_communicator(r.distributed, world, device)
             : nullptr;
}

void refuse_if_trained(const recipe::Recipe& r, const char* stage, const std::vector<std::string>& diff) {
  const auto ckpts = train::list_checkpoints(recipe::checkpoint_dir(r));
  if (ckpts.empty()) return;
  throw Error(fmt::format("the {} stage's inputs changed since the run in {} was trained ({}); rerunning it would "
                          "leave checkpoints made from other inputs: start over with --force, or use another "
                          "run.out_dir",
                          stage, r.run.out_dir, summarize(diff)));
}

models::AnyModel load_task_model(const recipe::Recipe& r, const fs::path& path) {
  return adapters::load_model(path, train::model_kind(r.train.task), r.model.num_labels);
}

std::pair<double, double> forward_ms(const models::AnyModel& a, const models::AnyModel& b, const train::Batch& batch) {
  torch::NoGradGuard no_grad;
  std::vector<double> ms[2];
  for (int i = 0; i < 12; ++i)
    for (int k = 0; k < 2; ++k) {
      const auto& m = k == 0 ? a : b;
      m.module()->eval();
      const auto t0 = std::chrono::steady_clock::now();
      (void)train::task_loss(m, batch).item<double>();
      if (i >= 2) ms[k].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  for (auto& v : ms) std::sort(v.begin(), v.end());
  return {ms[0][ms[0].size() / 2], ms[1][ms[1].size() / 2]};
}

TaskInputs measured_task(const recipe::Recipe& r, const models::AnyModel& model, const fs::path& path,
                         const char* stage) {
  TaskInputs in;
  in.tok = tokenizer::load_tokenizer(recipe::tokenizer_path(r), train::tokenizer_load_options(r));
  if (in.tok->vocab_size() > model.vocab_size())
    throw Error(fmt::format("vocabulary mismatch: the tokenizer has {} tokens but the model in {} has {} embedding rows",
                            in.tok->vocab_size(), path.string(), model.vocab_size()));
  in.data = train::make_task_data(r, *in.tok);
  if (in.data->wants_reference())
    train::score_reference(*in.data, train::reference_model(r, in.tok.get(), at::kCPU), r.train.precision, at::kCPU, 0,
                           0, r.eval.batches);
  if (in.data->val_batches() == 0)
    throw Error(fmt::format("the {} stage reports validation metrics before and after, and the validation split "
                            "holds no batch: set data.val_files or a larger data.val_fraction",
                            stage));
  return in;
}

train::Batch with_rows(const train::Batch& batch, int64_t rows) {
  auto fit = [rows](const at::Tensor& t) {
    if (!t.defined()) return t;
    std::vector<int64_t> reps(static_cast<std::size_t>(t.dim()), 1);
    reps[0] = (rows + t.size(0) - 1) / t.size(0);
    return t.repeat(reps).narrow(0, 0, rows).contiguous();
  };
  train::Batch out = batch;
  out.input_ids = fit(batch.input_ids);
  out.targets = fit(batch.targets);
  out.attention_mask = fit(batch.attention_mask);
  out.token_type_ids = fit(batch.token_type_ids);
  out.segments = fit(batch.segments);
  out.reference = at::Tensor();  // rows repeated are no pairs: timed as plain sequences
  out.tokens = out.input_ids.numel();
  return out;
}

int64_t weight_bytes(const models::AnyModel& m) {
  int64_t n = 0;
  for (const auto& p : m.module()->parameters()) n += p.numel() * static_cast<int64_t>(p.element_size());
  for (const auto& [path, q] : models::quantized_layers(m)) n += q->bytes();
  return n;
}

}  // namespace lathe::pipeline
