// Evaluation of a model on a task's batches, and the trainer's validation schedule.

#include "lathe/train/evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "lathe/train/initial_model.hpp"
#include "lathe/train/precision.hpp"
#include "lathe/train/run_dir.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = metrics;
  j["batches"] = batches;
  j["targets"] = targets;
  for (const auto& t : tasks) j["tasks"][t.task] = nlohmann::json::parse(t.to_json().dump());
  return j;
}

EvalAccumulator evaluate_batches(const models::AnyModel& model, const TaskData& data, int64_t n,
                                 recipe::Precision p, const at::Device& device) {
  const bool was_training = model.module()->is_training();
  model.module()->eval();
  EvalAccumulator acc;
  {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < n; ++i) {
      AutocastScope autocast(p, device);
      acc.add(model, to_device(data.val_batch(i), device));
    }
  }
  model.module()->train(was_training);
  return acc;
}

std::string score_reference(TaskData& data, const models::AnyModel& reference, recipe::Precision precision,
                            const at::Device& device, uint64_t train_begin, uint64_t train_end, int64_t val_batches) {
  if (!data.wants_reference()) return {};
  const auto t0 = Clock::now();
  const bool was_training = reference.module()->is_training();
  reference.module()->eval();
  int64_t rows = 0;
  data.set_reference([&](const Batch& b) {
    torch::NoGradGuard no_grad;
    AutocastScope autocast(precision, device);
    rows += b.input_ids.size(0);
    return row_logps(reference, to_device(b, device));
  }, train_begin, train_end, val_batches);
  reference.module()->train(was_training);
  return fmt::format("dpo: the reference log-probabilities of {} pairs computed in {:.1f} s", rows / 2,
                     std::chrono::duration<double>(Clock::now() - t0).count());
}

models::AnyModel reference_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok, const at::Device& device) {
  if (r.train.init_from.empty())
    throw Error("train.task dpo: the reference model is train.init_from, and it is empty: set it to the model the "
                "preference training starts from");
  auto model = models::materialise(initial_model(r, tok));
  // QLoRA's reference is the quantized base its training scored (the adapters off).
  if (r.adapters.kind == adapters::AdapterKind::Qlora) adapters::quantize_base(model, r.adapters);
  model.module()->to(device);
  return model;
}

EvalResult evaluate_model(const recipe::Recipe& r, const models::AnyModel& model, const TaskData& data,
                          const at::Device& device) {
  const int64_t n = std::min(r.eval.batches, data.val_batches());
  if (n == 0) throw Error("no " + std::string(recipe::enum_name(r.eval.split)) + " data to evaluate on");
  const auto acc = evaluate_batches(model, data, n, r.train.precision, device);
  return {acc.metrics(r.model.num_labels), n, acc.count, {}};
}

EvalResult evaluate_checkpoint(const recipe::Recipe& r, const fs::path& checkpoint,
                               const std::vector<std::string>& only_tasks) {
  const auto path = checkpoint.empty() ? newest_checkpoint(r) : checkpoint;
  const auto tasks = load_eval_tasks(r, only_tasks);  // a bad task file is named before the model loads
  const auto kind = model_kind(r.train.task);
  auto model = adapters::load_model(path, kind, r.model.num_labels);
  auto tok = load_run_tokenizer(r, /*required=*/true);
  check_vocab(model, *tok, " in " + path.string());
  const auto device = model_device(model, r.run.device);
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  model.module()->to(device);
  auto data = make_task_data(r, *tok, r.eval.split);
  if (data->wants_reference())
    score_reference(*data, reference_model(r, tok.get(), device), r.train.precision, device, 0, 0, r.eval.batches);
  auto result = evaluate_model(r, model, *data, device);
  if (r.train.task == recipe::Task::CausalLm && r.eval.split == recipe::Split::Val)
    result.metrics["unigram_loss"] = unigram_loss(r, *tok);
  if (!tasks.empty()) result.tasks = run_eval_tasks(tasks, model, tokenizer_for_model(r, path), task_run_options(r));
  return result;
}

std::pair<std::map<std::string, double>, bool> Validator::run(
    int64_t step, TrainerState& state, Metrics& metrics,
    const std::function<std::map<std::string, double>()>& evaluate) {
  const auto t0 = Clock::now();
  auto m = evaluate();
  seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  last_ = step;
  state.val_loss = m.count("loss") ? m["loss"] : std::nan("");
  const bool best = state.val_loss < state.best_val_loss;
  if (best) state.best_val_loss = state.val_loss;
  metrics.record({step, "val", m});
  std::string line = fmt::format("step {}: validation", step);
  for (const auto& [k, v] : m) line += fmt::format(" {} {:.4f}", k, v);
  metrics.message(line);
  return {std::move(m), best};
}

}  // namespace lathe::train
