// The prune and quantize stages, and which model a stage reads.

#include <algorithm>
#include <chrono>
#include <cstring>
#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "lathe/compress/prune.hpp"
#include "lathe/compress/quantize.hpp"
#include "lathe/core/error.hpp"
#include "lathe/dist/communicator.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/task.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "job.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using recipe::ModelSource;
using recipe::Stage;

std::string speed_change(double before_ms, double after_ms) {
  if (after_ms > before_ms) return fmt::format("{:.2f}x slower", after_ms / before_ms);
  return fmt::format("{:.2f}x faster", before_ms / after_ms);
}

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
  const auto kind = train::model_kind(r.train.task);
  const auto labels = kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0;
  const auto oneshot = models::load_model(recipe::pruned_dir(r) / "oneshot.safetensors", kind, labels);
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

/// Median forward times (ms) of `batch` through models `a` and `b`, timed in turns (a, b, a,
/// b, ...) so both see the same machine state.
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
  for (const auto& key : {"loss", "perplexity", "accuracy"})
    if (auto it = m.metrics.find(key); it != m.metrics.end()) s += fmt::format(" {:>11.4f}", it->second);
  if (latency) s += fmt::format(" {:>11.2f}", m.latency_ms);
  return s;
}

/// The run's tokenizer and task data, for a stage that reports validation metrics of the
/// model read from `path` before and after changing it.
struct TaskInputs {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<train::TaskData> data;
};

TaskInputs measured_task(const recipe::Recipe& r, const models::AnyModel& model, const fs::path& path,
                         const char* stage) {
  TaskInputs in;
  in.tok = tokenizer::load_tokenizer(recipe::tokenizer_path(r), train::tokenizer_load_options(r));
  if (in.tok->vocab_size() > model.vocab_size())
    throw Error(fmt::format("vocabulary mismatch: the tokenizer has {} tokens but the model in {} has {} embedding rows",
                            in.tok->vocab_size(), path.string(), model.vocab_size()));
  in.data = train::make_task_data(r, *in.tok);
  if (in.data->val_batches() == 0)
    throw Error(fmt::format("the {} stage reports validation metrics before and after, and the validation split "
                            "holds no batch: set data.val_files or a larger data.val_fraction",
                            stage));
  return in;
}

/// `batch` with its rows repeated (and cut) to `rows`: a latency probe of that batch size.
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
  out.tokens = out.input_ids.numel();
  return out;
}

/// Bytes of a model's weights as it holds them: float parameters and quantized weights.
int64_t weight_bytes(const models::AnyModel& m) {
  int64_t n = 0;
  for (const auto& p : m.module()->parameters()) n += p.numel() * static_cast<int64_t>(p.element_size());
  for (const auto& [path, q] : models::quantized_layers(m)) n += q->bytes();
  return n;
}

}  // namespace

fs::path source_model(const recipe::Recipe& r, ModelSource source, Stage reader, const std::string& checkpoint) {
  if (source == ModelSource::Auto) {
    source = ModelSource::Checkpoint;
    const auto end = std::find(r.pipeline.begin(), r.pipeline.end(), reader);
    for (auto it = r.pipeline.begin(); it != end; ++it) {
      if (*it == Stage::Prune) source = ModelSource::Pruned;
      if (*it == Stage::Quantize) source = ModelSource::Quantized;
    }
  }
  switch (source) {
    case ModelSource::Pruned:
    case ModelSource::Quantized: {
      const bool pruned = source == ModelSource::Pruned;
      const auto path = (pruned ? recipe::pruned_dir(r) : recipe::quantized_dir(r)) / "model.safetensors";
      const char* stage = pruned ? "prune" : "quantize";
      if (!fs::exists(path))
        throw Error(fmt::format("no {} model at {}; run the {} stage first (lathe {} RECIPE)", enum_name(source),
                                path.string(), stage, stage));
      return path;
    }
    default: return checkpoint.empty() ? train::newest_checkpoint(r) : fs::path(checkpoint);
  }
}

namespace {

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
  const auto ckpt = r.prune.checkpoint.empty() ? train::newest_checkpoint(r) : fs::path(r.prune.checkpoint);
  const auto dir = recipe::pruned_dir(r);
  const auto model_file = dir / "model.safetensors", oneshot_file = dir / "oneshot.safetensors";
  const auto report_file = fs::path(r.run.out_dir) / "prune.json";
  const MadeFrom made_from = stage_record(r, Stage::Prune, ckpt);
  const auto fresh = freshness(force, model_file, read_stage_record(r.run.out_dir, "prune"), made_from);
  if (fresh.up_to_date) {
    if (po.finetune_steps > 0) tell(LeadOutcome::Skipped);
    return {true, fmt::format("{} is {} pruned", model_file.string(), ckpt.string())};
  }
  const auto kind = train::model_kind(r.train.task);
  const auto labels = kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0;
  auto model = models::load_model(ckpt, kind, labels);
  if (const auto done = models::quantized_layers(model); !done.empty())
    throw Error(fmt::format("{} is a quantized model ({}: {}); pruning works on float weights: prune its float "
                            "checkpoint (prune.checkpoint) and quantize the pruned model afterwards (the quantize "
                            "stage after prune in the pipeline)",
                            ckpt.string(), done.begin()->first, enum_name(done.begin()->second->grid().scheme)));
  check_not_input(r, {dir, report_file});
  io::claim(dir);
  fs::create_directories(dir);
  for (const auto& f : {model_file, oneshot_file, masks_file(r)}) io::claim(f);
  io::claim(report_file);

  auto say = [&](const std::string& s) {
    if (console.out) *console.out << s << "\n" << std::flush;
  };
  const auto device = train::resolve_device(r.run.device);
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  model.module()->to(device);
  const auto inputs = measured_task(r, model, ckpt, "prune");
  const auto& data = inputs.data;

  recipe::Recipe on_val = r;
  on_val.eval.split = recipe::Split::Val;
  const bool structured = po.method == compress::PruneMethod::Structured;
  auto measure = [&](const models::AnyModel& m) {
    Measured out;
    out.parameters = models::parameter_count(*m.module());
    const auto all = compress::measure_sparsity(m, po.skip_modules).back();
    out.nonzero = all.size - all.zeros;
    out.metrics = train::evaluate_model(on_val, m, *data, device).metrics;
    return out;
  };
  auto before = measure(model);

  compress::Calibration calibration{po.calibration_batches, [&](int64_t i, bool backward) {
                                      const auto batch = train::to_device(data->train_batch(static_cast<uint64_t>(i)), device);
                                      if (backward) {
                                        train::task_loss(model, batch).backward();
                                      } else {
                                        torch::NoGradGuard no_grad;
                                        train::task_loss(model, batch);
                                      }
                                    }};
  auto sparsity = std::make_shared<train::Sparsity>();
  models::AnyModel pruned = model;
  std::string what;
  if (structured) {
    const auto plan = compress::plan_structured(model, po, &calibration);
    pruned = compress::apply_structured(model, plan);
    pruned.module()->to(device);
    const auto& a = model.options();
    const auto& b = pruned.options();
    what = fmt::format("structured ({}): heads {} -> {}, MLP neurons {} -> {} per layer", enum_name(po.resolved_score()),
                       a.n_head, b.n_head, a.ff_width(), b.ff_width());
  } else if (po.schedule == compress::PruneSchedule::Gradual) {
    sparsity = std::make_shared<GradualSparsity>(po, po.finetune_steps);
    what = fmt::format("gradual magnitude ({} scope) from {} to {} over {} of {} fine-tune steps, every {}",
                       enum_name(po.resolved_scope()), po.initial_sparsity, po.sparsity,
                       static_cast<int64_t>(po.ramp * static_cast<double>(po.finetune_steps)), po.finetune_steps,
                       po.prune_every);
  } else {
    std::map<std::string, at::Tensor> norms;
    if (po.needs_calibration()) norms = compress::input_norms(model, po.skip_modules, calibration);
    sparsity->masks = compress::unstructured_masks(model, po, po.sparsity, norms);
    compress::apply_masks(model, sparsity->masks);
    what = po.method == compress::PruneMethod::NM
               ? fmt::format("{}:{} ({} scores)", po.n, po.m, enum_name(po.resolved_score()))
               : fmt::format("{} ({} scope) to {} sparsity", enum_name(po.method), enum_name(po.resolved_scope()),
                             po.sparsity);
  }
  say("prune: " + what);
  models::save_model(pruned, oneshot_file);
  if (comm && !sparsity->masks.empty()) {
    std::vector<std::pair<std::string, at::Tensor>> masks(sparsity->masks.begin(), sparsity->masks.end());
    io::save_safetensors(masks_file(r), masks);
  } else {
    io::remove_owned(masks_file(r));
  }

  std::optional<Measured> tuned;
  if (po.finetune_steps > 0) {
    // Started afresh when what it continues has changed.
    const auto ft = finetune_recipe(r, pruned.options());
    MadeFrom continues = made_from;
    continues.erase("prune.finetune_steps");
    const auto recorded = read_stage_record(r.run.out_dir, "prune.finetune");
    if (force || !recorded || *recorded != continues) io::remove_owned(ft.run.out_dir);
    io::claim(ft.run.out_dir);
    write_stage_record(r.run.out_dir, "prune.finetune", continues);
    tell(LeadOutcome::FineTune);
    train::Trainer trainer(ft, {console.out, console.is_tty, /*handle_signals=*/true, sparsity, comm});
    const auto rep = trainer.run();
    if (rep.interrupted)
      return {false, fmt::format("fine-tune interrupted at step {} of {}", rep.steps, po.finetune_steps), true};
    auto final_model = models::load_model(rep.checkpoint, kind, labels);
    models::save_model(final_model, model_file);
    final_model.module()->to(device);
    tuned = measure(final_model);
  } else {
    models::save_model(pruned, model_file);
  }
  // Measured after the fine-tune, so that the other ranks of a data-parallel job do not wait
  // for it; the fine-tune read the pruned model from its file.
  auto oneshot = measure(pruned);
  auto& after = tuned ? *tuned : oneshot;

  auto final_model = models::load_model(model_file, kind, labels);
  if (structured) {  // the pruned and the fine-tuned model have the same shapes
    final_model.module()->to(device);
    std::tie(before.latency_ms, after.latency_ms) =
        forward_ms(model, final_model, train::to_device(data->val_batch(0), device));
  }
  const auto layers = compress::measure_sparsity(final_model, po.skip_modules);
  json per_layer = json::object();
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) per_layer[layers[i].name] = layers[i].sparsity();
  json report = {{"checkpoint", ckpt.string()},
                 {"model", model_file.string()},
                 {"pruning", what},
                 {"settings", json(recipe_part(r, {"prune."}))},
                 {"sparsity", {{"overall", layers.back().sparsity()}, {"layers", per_layer}}},
                 {"before", measured_json(before, structured)},
                 {"pruned", measured_json(oneshot, structured && !tuned)}};
  if (tuned) report["fine_tuned"] = measured_json(*tuned, structured);
  if (structured) report["speedup"] = before.latency_ms / after.latency_ms;
  io::write_file_atomic(report_file, report.dump(2) + "\n");
  write_stage_record(r.run.out_dir, "prune", made_from);

  std::string header = fmt::format("  {:<12} {:>12} {:>12}", "model", "parameters", "nonzero*");
  for (const auto& key : {"loss", "perplexity", "accuracy"})
    if (before.metrics.count(key)) header += fmt::format(" {:>11}", key);
  if (structured) header += fmt::format(" {:>11}", "forward ms");
  say(header);
  say(row("before", before, structured));
  say(row("pruned", oneshot, structured && !tuned));
  if (tuned) say(row("fine-tuned", *tuned, structured));
  say(fmt::format("  * nonzero weights of the prunable matrices{}",
                  structured ? "" : fmt::format("; overall sparsity {:.4f}", layers.back().sparsity())));

  auto metric = [](const Measured& m) {
    return m.metrics.count("perplexity") ? fmt::format("perplexity {:.3f}", m.metrics.at("perplexity"))
                                         : fmt::format("accuracy {:.4f}", m.metrics.count("accuracy") ? m.metrics.at("accuracy") : 0.0);
  };
  return {false, fmt::format("{}{}: {} -> {}, {}{} -> {}", fresh.why(), what, metric(before), metric(after),
                             structured ? fmt::format("parameters {} -> {}, forward {}", before.parameters,
                                                      after.parameters, speed_change(before.latency_ms, after.latency_ms))
                                        : fmt::format("sparsity {:.4f}", layers.back().sparsity()),
                             tuned ? fmt::format(" after {} fine-tune steps", po.finetune_steps) : "",
                             model_file.string())};
}

}  // namespace

StageResult run_prune_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  // Under a launcher (mpirun, torchrun, srun) the fine-tune is data-parallel: rank 0 prunes,
  // measures and writes; every rank trains.
  const auto comm = r.prune.finetune_steps > 0 ? job_communicator(r) : nullptr;
  if (comm && comm->rank() > 0) return follow_prune_stage(r, comm);
  // Without a fine-tune there is nothing for the other ranks to share: rank 0 prunes alone.
  if (!comm && dist::detect_world().rank > 0) return {true, "rank 0 prunes alone (prune.finetune_steps: 0)"};
  bool told = false;
  try {
    return lead_prune_stage(r, force, console, comm, told);
  } catch (const std::exception& e) {
    if (comm && !told && !comm->broken()) from_rank0(*comm, LeadOutcome::Failed, e.what());
    throw;
  }
}

StageResult run_quantize_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  RunLock lock(r);
  const auto& qo = r.quantize;
  const auto src = source_model(r, qo.source, Stage::Quantize, qo.checkpoint);
  const auto dir = recipe::quantized_dir(r);
  const auto model_file = dir / "model.safetensors";
  const auto report_file = fs::path(r.run.out_dir) / "quantize.json";
  const MadeFrom made_from = stage_record(r, Stage::Quantize, src);
  const auto fresh = freshness(force, model_file, read_stage_record(r.run.out_dir, "quantize"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} is {} quantized", model_file.string(), src.string())};
  const auto kind = train::model_kind(r.train.task);
  const auto labels = kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0;
  auto model = models::load_model(src, kind, labels);
  if (const auto done = models::quantized_layers(model); !done.empty())
    throw Error(fmt::format("{} is already quantized ({}: {}); quantize its float checkpoint instead", src.string(),
                            done.begin()->first, enum_name(done.begin()->second->grid().scheme)));
  check_not_input(r, {dir, report_file});
  io::claim(dir);
  fs::create_directories(dir);
  io::claim(model_file);
  io::claim(report_file);
  auto say = [&](const std::string& s) {
    if (console.out) *console.out << s << "\n" << std::flush;
  };

  const at::Device device(at::kCPU);  // quantized layers run on CPU kernels
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  const auto inputs = measured_task(r, model, src, "quantize");
  const auto& data = inputs.data;
  recipe::Recipe on_val = r;
  on_val.eval.split = recipe::Split::Val;
  const auto reference = models::load_model(src, kind, labels);  // stays float, for the comparison
  reference.module()->eval();
  const auto before = train::evaluate_model(on_val, reference, *data, device).metrics;

  compress::Calibration calibration{qo.calibration_batches, [&](int64_t i, bool) {
                                      torch::NoGradGuard no_grad;
                                      train::task_loss(model, data->train_batch(static_cast<uint64_t>(i)));
                                    }};
  const auto layers = compress::quantize_model(model, qo, &calibration);
  models::save_model(model, model_file);  // reading it back gives the same model (tests/test_quantize.cpp)
  const auto after = train::evaluate_model(on_val, model, *data, device).metrics;

  /// One column of the report: a model, its metrics, its weight bytes and forward latency.
  struct Side {
    std::string name;
    std::map<std::string, double> metrics;
    int64_t bytes = 0;
    std::map<int64_t, double> ms;  // by batch rows
  };
  Side sides[2] = {{"float", before, weight_bytes(reference), {}},
                   {std::string(enum_name(qo.method)), after, weight_bytes(model), {}}};
  const auto probe = data->val_batch(0);
  for (int64_t rows : {1, 8}) std::tie(sides[0].ms[rows], sides[1].ms[rows]) = forward_ms(reference, model, with_rows(probe, rows));

  int64_t float_bytes = 0, quantized_bytes = 0;
  json per_layer = json::object();
  for (const auto& l : layers) {
    float_bytes += l.float_bytes;
    quantized_bytes += l.quantized_bytes;
    per_layer[l.name] = {{"float_bytes", l.float_bytes}, {"quantized_bytes", l.quantized_bytes},
                         {"weight_error", l.weight_error}};
    if (l.output_error) per_layer[l.name]["output_error"] = *l.output_error;
  }
  std::vector<std::string> kept_float;
  for (const auto& [path, lin] : nn::linear_layers(*model.module()))
    if (!lin->quantized()) kept_float.push_back(path);
  if (model.kind == models::ModelKind::Gpt && !model.gpt->lm_head)
    kept_float.push_back("lm_head (the token embedding, tied)");
  const auto& row = nn::quant_scheme(qo.method);
  const std::string scheme =
      fmt::format("{} ({}{}{})", row.name, enum_name(qo.algorithm),
                  row.group_rule == nn::QuantGroupRule::PerGroup ? fmt::format(", groups of {}", qo.group_size) : "",
                  row.quantizes_activations ? "" : fmt::format(", {} activations", enum_name(qo.resolved_activations())));
  auto side_json = [](const Side& side) {
    json j = {{"metrics", side.metrics}, {"weight_bytes", side.bytes}};
    for (const auto& [rows, ms] : side.ms) j["latency_ms"]["batch_" + std::to_string(rows)] = ms;
    return j;
  };
  json report = {{"source", src.string()},
                 {"model", model_file.string()},
                 {"scheme", scheme},
                 {"settings", json(recipe_part(r, {"quantize."}))},
                 {"linear_weights", {{"float_bytes", float_bytes}, {"quantized_bytes", quantized_bytes},
                                     {"ratio", static_cast<double>(quantized_bytes) / static_cast<double>(float_bytes)}}},
                 {"kept_float", kept_float},
                 {"layers", per_layer},
                 {"before", side_json(sides[0])},
                 {"after", side_json(sides[1])}};
  io::write_file_atomic(report_file, report.dump(2) + "\n");
  write_stage_record(r.run.out_dir, "quantize", made_from);

  say("quantize: " + scheme + ", " + std::to_string(layers.size()) + " Linear layers" +
      (kept_float.empty() ? "" : ", float: " + fmt::format("{}", fmt::join(kept_float, ", "))));
  std::string header = fmt::format("  {:<18} {:>10}", "model", "weights MB");
  for (const auto& key : {"loss", "perplexity", "accuracy"})
    if (before.count(key)) header += fmt::format(" {:>11}", key);
  header += fmt::format(" {:>11} {:>11}", "batch 1 ms", "batch 8 ms");
  say(header);
  for (const auto& side : sides) {
    std::string text = fmt::format("  {:<18} {:>10.2f}", side.name, static_cast<double>(side.bytes) / 1e6);
    for (const auto& key : {"loss", "perplexity", "accuracy"})
      if (auto it = side.metrics.find(key); it != side.metrics.end()) text += fmt::format(" {:>11.4f}", it->second);
    for (const auto& [rows, ms] : side.ms) text += fmt::format(" {:>11.2f}", ms);
    say(text);
  }
  say(fmt::format("  Linear weights {:.2f} MB -> {:.2f} MB ({:.3f}x)", static_cast<double>(float_bytes) / 1e6,
                  static_cast<double>(quantized_bytes) / 1e6,
                  static_cast<double>(quantized_bytes) / static_cast<double>(float_bytes)));

  const char* metric = before.count("perplexity") ? "perplexity" : "accuracy";
  return {false, fmt::format("{}{}: {} {:.3f} -> {:.3f}, Linear weights {:.3f}x, batch 8 forward {} -> {}",
                             fresh.why(), scheme, metric, before.count(metric) ? before.at(metric) : 0.0,
                             after.count(metric) ? after.at(metric) : 0.0,
                             static_cast<double>(quantized_bytes) / static_cast<double>(float_bytes),
                             speed_change(sides[0].ms.at(8), sides[1].ms.at(8)), model_file.string())};
}

}  // namespace lathe::pipeline
