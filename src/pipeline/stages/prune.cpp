// The prune stage: prunes a checkpoint, fine-tunes it (data-parallel under a launcher) and reports
// the model before and after.

#include <chrono>
#include <cstring>
#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "lathe/compress/prune.hpp"
#include "lathe/core/error.hpp"
#include "lathe/dist/communicator.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/train/task.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "../gate.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using recipe::Stage;

namespace {

/// The gradual schedule: magnitude masks recomputed every prune_every fine-tune steps at the
/// cubic schedule's sparsity, and at the target on the schedule's final step.
class GradualSparsity : public train::Sparsity {
 public:
  GradualSparsity(compress::PruneOptions options, int64_t total) : options_(std::move(options)), total_(total) {}
  bool update(int64_t step, const models::AnyModel& model) override {
    if (step % options_.prune_every != 0 && step != compress::gradual_final_step(options_, total_)) return false;
    const double s = compress::gradual_sparsity(options_, step, total_);
    if (s == current_) return false;
    masks = compress::unstructured_masks(model, options_, s);
    current_ = s;
    return true;
  }

 private:
  compress::PruneOptions options_;
  int64_t total_;
  double current_ = -1;
};

/// What rank 0 tells the other ranks of a data-parallel prune stage before the fine-tune.
enum class LeadOutcome : int64_t { Skipped = 0, FineTune = 1, Failed = 2 };

/// Rank 0's outcome of the part of a stage it runs alone (and, when it failed, its message), on
/// every rank.
std::pair<LeadOutcome, std::string> from_rank0(dist::Communicator& comm, LeadOutcome outcome, const std::string& message) {
  const char* what = "the prune stage's start (rank 0 prunes the model before the fine-tune)";
  auto head = at::tensor({static_cast<int64_t>(outcome), static_cast<int64_t>(message.size())}, at::kLong);
  head = head.to(comm.device());
  comm.broadcast(head, 0, what)->wait();
  head = head.cpu();
  const auto told = static_cast<LeadOutcome>(head[0].item<int64_t>());
  const int64_t n = head[1].item<int64_t>();
  std::string text = message;
  if (n > 0) {
    auto bytes = at::zeros({n}, at::kByte);
    if (comm.rank() == 0) std::memcpy(bytes.data_ptr(), message.data(), static_cast<std::size_t>(n));
    bytes = bytes.to(comm.device());
    comm.broadcast(bytes, 0, what)->wait();
    bytes = bytes.cpu();
    text.assign(static_cast<const char*>(bytes.data_ptr()), static_cast<std::size_t>(n));
  }
  return {told, text};
}

/// The fine-tune of the pruned model: a run of its own under pruned/finetune, resumed when
/// interrupted (also with another finetune_steps, as train.max_steps). Every rank of a
/// data-parallel job builds the same one.
recipe::Recipe finetune_recipe(const recipe::Recipe& r, const models::ModelOptions& pruned_shape) {
  const auto& po = r.prune;
  recipe::Recipe ft = r;
  ft.pipeline = {Stage::Train};
  ft.run.out_dir = (recipe::pruned_dir(r) / "finetune").string();
  ft.tokenizer.path = recipe::tokenizer_path(r).string();
  ft.data.shard_dir = recipe::shard_dir(r).string();
  models::ModelOptions shape = pruned_shape;
  shape.dropout = r.model.dropout;
  shape.attn_dropout = r.model.attn_dropout;
  static_cast<models::ModelOptions&>(ft.model) = shape;
  ft.train.init_from = (recipe::pruned_dir(r) / "oneshot.safetensors").string();
  ft.train.max_steps = po.finetune_steps;
  ft.train.resume = "auto";
  // The pruned model is merged and whole: its fine-tune trains it (masked), not new adapters.
  ft.adapters.kind = adapters::AdapterKind::None;
  ft.schedule.warmup_steps = std::min(r.schedule.warmup_steps, po.finetune_steps / 10);
  return ft;
}

/// One-shot masks for the other ranks of a data-parallel fine-tune (gradual masks each rank
/// computes itself from the weights, which are the same on every rank).
fs::path masks_file(const recipe::Recipe& r) { return recipe::pruned_dir(r) / "masks.safetensors"; }

/// A rank other than 0 of a data-parallel prune stage: waits for rank 0 to prune, then takes
/// its part of the fine-tune.
StageResult follow_prune_stage(const recipe::Recipe& r, const std::shared_ptr<dist::Communicator>& comm) {
  const auto [outcome, message] = from_rank0(*comm, LeadOutcome::Skipped, "");
  if (outcome == LeadOutcome::Failed)
    throw Error(fmt::format("rank {}: rank 0 stopped the prune stage: {}", comm->rank(), message));
  if (outcome == LeadOutcome::Skipped) return {true, "rank 0 found the pruned model up to date"};
  const auto oneshot = load_task_model(r, recipe::pruned_dir(r) / "oneshot.safetensors");
  auto sparsity = std::make_shared<train::Sparsity>();
  if (r.prune.schedule == compress::PruneSchedule::Gradual && r.prune.method != compress::PruneMethod::Structured) {
    sparsity = std::make_shared<GradualSparsity>(r.prune, r.prune.finetune_steps);
  } else if (fs::exists(masks_file(r))) {
    for (auto& [name, mask] : io::load_safetensors(masks_file(r)).tensors) sparsity->masks[name] = mask.to(at::kBool);
  }
  train::Trainer trainer(finetune_recipe(r, oneshot.options()), {nullptr, false, /*handle_signals=*/true, sparsity, comm});
  const auto rep = trainer.run();
  return {false, fmt::format("rank {} fine-tuned to step {}", comm->rank(), rep.steps), rep.interrupted};
}


struct Measured {
  int64_t parameters = 0;
  int64_t nonzero = 0;  // of the prunable matrices
  std::map<std::string, double> metrics;
  double latency_ms = 0;
};

json measured_json(const Measured& m, bool latency) {
  json j = {{"parameters", m.parameters}, {"prunable_nonzero", m.nonzero}, {"metrics", m.metrics}};
  if (latency) j["latency_ms"] = m.latency_ms;
  return j;
}

std::string row(const std::string& name, const Measured& m, bool latency) {
  std::string s = fmt::format("  {:<12} {:>12} {:>12}", name, m.parameters, m.nonzero);
  for (const auto& key : {"loss", "perplexity", "accuracy", "rewards_accuracy"})
    if (auto it = m.metrics.find(key); it != m.metrics.end()) s += fmt::format(" {:>11.4f}", it->second);
  if (latency) s += fmt::format(" {:>11.2f}", m.latency_ms);
  return s;
}

/// The run's tokenizer and task data, for a stage that reports validation metrics of the

/// The files the prune stage reads and writes.
struct PrunePaths {
  fs::path ckpt, dir, model_file, oneshot_file, report_file;
  explicit PrunePaths(const recipe::Recipe& r)
      : ckpt(r.prune.checkpoint.empty() ? train::newest_checkpoint(r) : fs::path(r.prune.checkpoint)),
        dir(recipe::pruned_dir(r)),
        model_file(dir / "model.safetensors"),
        oneshot_file(dir / "oneshot.safetensors"),
        report_file(fs::path(r.run.out_dir) / "prune.json") {}
};

/// Loads the checkpoint to prune (refusing a quantized one) and claims the stage's outputs.
models::AnyModel load_for_pruning(const recipe::Recipe& r, const PrunePaths& paths) {
  auto model = load_task_model(r, paths.ckpt);
  if (const auto done = models::quantized_layers(model); !done.empty())
    throw Error(fmt::format("{} is a quantized model ({}: {}); pruning works on float weights: prune its float "
                            "checkpoint (prune.checkpoint) and quantize the pruned model afterwards (the quantize "
                            "stage after prune in the pipeline)",
                            paths.ckpt.string(), done.begin()->first, enum_name(done.begin()->second->grid().scheme)));
  check_not_input(r, {paths.dir, paths.report_file});
  io::claim(paths.dir);
  fs::create_directories(paths.dir);
  for (const auto& f : {paths.model_file, paths.oneshot_file, masks_file(r)}) io::claim(f);
  io::claim(paths.report_file);
  return model;
}

/// Parameters, nonzero prunable weights and validation metrics of a model.
class Measure {
 public:
  Measure(const recipe::Recipe& r, const train::TaskData& data, at::Device device)
      : on_val_(r), data_(data), device_(device) {
    on_val_.eval.split = recipe::Split::Val;
  }
  Measured operator()(const models::AnyModel& m) const {
    Measured out;
    out.parameters = models::parameter_count(*m.module());
    const auto all = compress::measure_sparsity(m, on_val_.prune.skip_modules).back();
    out.nonzero = all.size - all.zeros;
    out.metrics = train::evaluate_model(on_val_, m, data_, device_).metrics;
    return out;
  }

 private:
  recipe::Recipe on_val_;
  const train::TaskData& data_;
  at::Device device_;
};

/// The pruned model before its fine-tune, the masks that hold it there, and what was done.
struct Pruned {
  models::AnyModel model;
  std::shared_ptr<train::Sparsity> sparsity = std::make_shared<train::Sparsity>();
  std::string what;
};

/// Prunes `model` as the prune section says: structured gives a smaller model, one-shot
/// unstructured and N:M zero `model`'s weights in place and keep their masks, gradual leaves it
/// to the fine-tune's schedule.
Pruned prune(const compress::PruneOptions& po, models::AnyModel& model, compress::Calibration& calibration,
             at::Device device) {
  Pruned out;
  out.model = model;
  if (po.method == compress::PruneMethod::Structured) {
    const auto plan = compress::plan_structured(model, po, &calibration);
    out.model = compress::apply_structured(model, plan);
    out.model.module()->to(device);
    const auto& a = model.options();
    const auto& b = out.model.options();
    out.what = fmt::format("structured ({}): heads {} -> {}, MLP neurons {} -> {} per layer",
                           enum_name(po.resolved_score()), a.n_head, b.n_head, a.ff_width(), b.ff_width());
  } else if (po.schedule == compress::PruneSchedule::Gradual) {
    out.sparsity = std::make_shared<GradualSparsity>(po, po.finetune_steps);
    out.what = fmt::format("gradual magnitude ({} scope) from {} to {} over {} of {} fine-tune steps, every {}",
                           enum_name(po.resolved_scope()), po.initial_sparsity, po.sparsity,
                           static_cast<int64_t>(po.ramp * static_cast<double>(po.finetune_steps)),
                           po.finetune_steps, po.prune_every);
  } else {
    std::map<std::string, at::Tensor> norms;
    if (po.needs_calibration()) norms = compress::input_norms(model, po.skip_modules, calibration);
    out.sparsity->masks = compress::unstructured_masks(model, po, po.sparsity, norms);
    compress::apply_masks(model, out.sparsity->masks);
    out.what = po.method == compress::PruneMethod::NM
                   ? fmt::format("{}:{} ({} scores)", po.n, po.m, enum_name(po.resolved_score()))
                   : fmt::format("{} ({} scope) to {} sparsity", enum_name(po.method), enum_name(po.resolved_scope()),
                                 po.sparsity);
  }
  return out;
}

/// Writes the one-shot model (and, for the other ranks of a data-parallel fine-tune, its masks).
void save_pruned(const recipe::Recipe& r, const PrunePaths& paths, const Pruned& pruned, bool data_parallel) {
  models::save_model(pruned.model, paths.oneshot_file);
  if (data_parallel && !pruned.sparsity->masks.empty()) {
    std::vector<std::pair<std::string, at::Tensor>> masks(pruned.sparsity->masks.begin(), pruned.sparsity->masks.end());
    io::save_safetensors(masks_file(r), masks);
  } else {
    io::remove_owned(masks_file(r));
  }
}

/// The fine-tune of the pruned model: its own run under pruned/finetune, started afresh when
/// what it continues has changed. `tell` lets the other ranks join just before it starts.
train::TrainReport fine_tune(const recipe::Recipe& r, bool force, const ConsoleOptions& console, const Pruned& pruned,
                             const MadeFrom& made_from, const std::shared_ptr<dist::Communicator>& comm,
                             const std::function<void()>& tell) {
  const auto ft = finetune_recipe(r, pruned.model.options());
  MadeFrom continues = made_from;
  continues.erase("prune.finetune_steps");
  const auto recorded = read_stage_record(r.run.out_dir, "prune.finetune");
  if (force || !recorded || *recorded != continues) io::remove_owned(ft.run.out_dir);
  io::claim(ft.run.out_dir);
  write_stage_record(r.run.out_dir, "prune.finetune", continues);
  tell();
  train::Trainer trainer(ft, {console.out, console.is_tty, /*handle_signals=*/true, pruned.sparsity, comm});
  return trainer.run();
}

/// The measurements of the prune stage's models; `tuned` after a fine-tune.
struct PruneMeasures {
  Measured before, oneshot;
  std::optional<Measured> tuned;
  std::optional<GateFigure> gate_source;  // prune.gate's figure of the checkpoint, before pruning
  const Measured& after() const { return tuned ? *tuned : oneshot; }
};

/// prune.json: the checkpoint, what was done, the sparsity per layer and the measurements.
json prune_report(const recipe::Recipe& r, const PrunePaths& paths, const std::string& what, bool structured,
                  const std::vector<compress::LayerSparsity>& layers, const PruneMeasures& m) {
  json per_layer = json::object();
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) per_layer[layers[i].name] = layers[i].sparsity();
  json report = {{"checkpoint", paths.ckpt.string()},
                 {"model", paths.model_file.string()},
                 {"pruning", what},
                 {"settings", json(recipe_part(r, {"prune."}))},
                 {"sparsity", {{"overall", layers.back().sparsity()}, {"layers", per_layer}}},
                 {"before", measured_json(m.before, structured)},
                 {"pruned", measured_json(m.oneshot, structured && !m.tuned)}};
  if (m.tuned) report["fine_tuned"] = measured_json(*m.tuned, structured);
  if (structured) report["speedup"] = m.before.latency_ms / m.after().latency_ms;
  return report;
}

/// The table of the measurements, printed to the console.
void print_prune_table(std::ostream* out, bool structured, double overall_sparsity, const PruneMeasures& m) {
  if (!out) return;
  std::string header = fmt::format("  {:<12} {:>12} {:>12}", "model", "parameters", "nonzero*");
  for (const auto& key : {"loss", "perplexity", "accuracy", "rewards_accuracy"})
    if (m.before.metrics.count(key)) header += fmt::format(" {:>11}", key);
  if (structured) header += fmt::format(" {:>11}", "forward ms");
  *out << header << "\n" << row("before", m.before, structured) << "\n"
       << row("pruned", m.oneshot, structured && !m.tuned) << "\n";
  if (m.tuned) *out << row("fine-tuned", *m.tuned, structured) << "\n";
  *out << fmt::format("  * nonzero weights of the prunable matrices{}",
                      structured ? "" : fmt::format("; overall sparsity {:.4f}", overall_sparsity))
       << "\n" << std::flush;
}

std::string metric_text(const Measured& m) {
  const char* metric = train::headline_metric(m.metrics);
  return fmt::format("{} {:.4f}", metric, m.metrics.count(metric) ? m.metrics.at(metric) : 0.0);
}

/// The prune stage's end: the latency of structured pruning, the report, the table and the
/// summary line.
StageResult finish_prune_stage(const recipe::Recipe& r, const PrunePaths& paths, const MadeFrom& made_from,
                               const Freshness& fresh, const std::string& what, const models::AnyModel& model,
                               const train::TaskData& data, at::Device device, PruneMeasures& m,
                               const ConsoleOptions& console) {
  const auto& po = r.prune;
  const bool structured = po.method == compress::PruneMethod::Structured;
  auto final_model = load_task_model(r, paths.model_file);
  if (structured) {  // the pruned and the fine-tuned model have the same shapes
    final_model.module()->to(device);
    auto& after = m.tuned ? *m.tuned : m.oneshot;
    std::tie(m.before.latency_ms, after.latency_ms) =
        forward_ms(model, final_model, train::to_device(data.val_batch(0), device));
  }
  const auto layers = compress::measure_sparsity(final_model, po.skip_modules);
  const auto& after = m.after();
  std::optional<GateVerdict> gate;
  if (m.gate_source)
    gate = judge_gate(po.gate, "prune", *m.gate_source,
                      gate_figure(r, po.gate, "prune", after.metrics, final_model, train::tokenizer_for_model(r, paths.ckpt)));
  auto report = prune_report(r, paths, what, structured, layers, m);
  if (gate) report["gate"] = gate->to_json();
  io::write_file_atomic(paths.report_file, report.dump(2) + "\n");
  if (gate) record_gate(paths.dir, *gate);
  write_stage_record(r.run.out_dir, "prune", made_from);
  print_prune_table(console.out, structured, layers.back().sparsity(), m);
  if (gate) enforce_gate(*gate);
  return {false,
          fmt::format("{}{}: {} -> {}, {}{} -> {}", fresh.why(), what, metric_text(m.before), metric_text(after),
                      structured ? fmt::format("parameters {} -> {}, forward {}", m.before.parameters, after.parameters,
                                               speed_change(m.before.latency_ms, after.latency_ms))
                                 : fmt::format("sparsity {:.4f}", layers.back().sparsity()),
                      m.tuned ? fmt::format(" after {} fine-tune steps", po.finetune_steps) : "",
                      paths.model_file.string()) +
              (gate ? "; gate passed: " + gate->text() : "")};
}

/// The prune stage in one process, or on rank 0 of a data-parallel job (`comm`), which prunes,
/// measures and writes alone and meets the other ranks for the fine-tune; `told` is set once
/// they have heard from it.
StageResult lead_prune_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console,
                             const std::shared_ptr<dist::Communicator>& comm, bool& told) {
  auto tell = [&](LeadOutcome outcome) {
    if (!comm) return;
    from_rank0(*comm, outcome, "");
    told = true;
  };
  RunLock lock(r);
  const auto& po = r.prune;
  const PrunePaths paths(r);
  MadeFrom made_from = stage_record(r, Stage::Prune, paths.ckpt);
  add_gate_inputs(made_from, r, po.gate, false);
  const auto fresh = freshness(force, paths.model_file, read_stage_record(r.run.out_dir, "prune"), made_from);
  if (fresh.up_to_date && !gate_unsettled(paths.dir, po.gate)) {
    if (po.finetune_steps > 0) tell(LeadOutcome::Skipped);
    refuse_failed_output(paths.dir, "the pruned model " + paths.model_file.string());
    return {true, fmt::format("{} is {} pruned", paths.model_file.string(), paths.ckpt.string())};
  }
  auto model = load_for_pruning(r, paths);
  open_gate(paths.dir, r, po.gate, "prune");
  const auto device = train::resolve_device(r.run.device);
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  model.module()->to(device);
  const auto inputs = measured_task(r, model, paths.ckpt, "prune");
  const auto& data = *inputs.data;
  const Measure measure(r, data, device);
  PruneMeasures m;
  m.before = measure(model);
  // Pruning changes `model` in place: the gate's figure of the checkpoint is taken now.
  if (po.gate.enabled())
    m.gate_source = gate_figure(r, po.gate, "prune", m.before.metrics, model, train::tokenizer_for_model(r, paths.ckpt));

  compress::Calibration calibration{po.calibration_batches, [&](int64_t i, bool backward) {
                                      const auto batch = train::to_device(data.train_batch(static_cast<uint64_t>(i)), device);
                                      if (backward) {
                                        train::task_loss(model, batch).backward();
                                      } else {
                                        torch::NoGradGuard no_grad;
                                        train::task_loss(model, batch);
                                      }
                                    }};
  const auto pruned = prune(po, model, calibration, device);
  if (console.out) *console.out << "prune: " << pruned.what << "\n" << std::flush;
  save_pruned(r, paths, pruned, comm != nullptr);
  if (po.finetune_steps > 0) {
    const auto rep = fine_tune(r, force, console, pruned, made_from, comm, [&] { tell(LeadOutcome::FineTune); });
    if (rep.interrupted)
      return {false, fmt::format("fine-tune interrupted at step {} of {}", rep.steps, po.finetune_steps), true};
    auto tuned = load_task_model(r, rep.checkpoint);
    models::save_model(tuned, paths.model_file);
    tuned.module()->to(device);
    m.tuned = measure(tuned);
  } else {
    models::save_model(pruned.model, paths.model_file);
  }
  // Measured after the fine-tune, so that the other ranks of a data-parallel job do not wait
  // for it; the fine-tune read the pruned model from its file.
  m.oneshot = measure(pruned.model);
  return finish_prune_stage(r, paths, made_from, fresh, pruned.what, model, data, device, m, console);
}

}  // namespace

StageResult run_prune_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  // Under a launcher (mpirun, torchrun, srun) the fine-tune is data-parallel: rank 0 prunes,
  // measures and writes; every rank trains.
  const auto comm = r.prune.finetune_steps > 0 ? job_communicator(r) : nullptr;
  if (comm && comm->rank() > 0) return follow_prune_stage(r, comm);
  // Without a fine-tune, or without a communicator (distributed.backend: none), there is nothing
  // for the other ranks to share: rank 0 prunes alone.
  if (!comm && dist::detect_world().rank > 0)
    return {true, r.prune.finetune_steps > 0 ? "rank 0 prunes and fine-tunes alone (no communicator: "
                                               "distributed.backend resolves to none)"
                                             : "rank 0 prunes alone (prune.finetune_steps: 0)"};
  bool told = false;
  try {
    return lead_prune_stage(r, force, console, comm, told);
  } catch (const std::exception& e) {
    if (comm && !told && !comm->broken()) from_rank0(*comm, LeadOutcome::Failed, e.what());
    throw;
  }
}

}  // namespace lathe::pipeline
