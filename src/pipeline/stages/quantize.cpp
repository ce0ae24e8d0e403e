// The quantize stage: quantizes a model and reports its size, accuracy and latency before and after.

#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/task.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "../gate.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using recipe::Stage;

namespace {

/// One column of the report: a model, its metrics, its weight bytes and forward latency.
struct Side {
  std::string name;
  std::map<std::string, double> metrics;
  int64_t bytes = 0;
  std::map<int64_t, double> ms;  // by batch rows
};

json side_json(const Side& side) {
  json j = {{"metrics", side.metrics}, {"weight_bytes", side.bytes}};
  for (const auto& [rows, ms] : side.ms) j["latency_ms"]["batch_" + std::to_string(rows)] = ms;
  return j;
}

/// Loads the model to quantize (refusing a quantized one) and claims the stage's outputs.
models::AnyModel load_for_quantizing(const recipe::Recipe& r, const fs::path& src, const fs::path& dir,
                                     const fs::path& model_file, const fs::path& report_file) {
  auto model = load_task_model(r, src);
  if (const auto done = models::quantized_layers(model); !done.empty())
    throw Error(fmt::format("{} is already quantized ({}: {}); quantize its float checkpoint instead", src.string(),
                            done.begin()->first, enum_name(done.begin()->second->grid().scheme)));
  check_not_input(r, {dir, report_file});
  io::claim(dir);
  fs::create_directories(dir);
  io::claim(model_file);
  io::claim(report_file);
  return model;
}

/// The Linear layers (and a tied head) the quantized model keeps in float.
std::vector<std::string> kept_float(const models::AnyModel& model) {
  std::vector<std::string> out;
  for (const auto& [path, lin] : nn::linear_layers(*model.module()))
    if (!lin->quantized()) out.push_back(path);
  if (model.tied_head()) out.push_back(std::string(model.traits().tied_head_path) + " (the token embedding, tied)");
  return out;
}

/// "int4 (gptq, groups of 128)": the scheme as the report and the summary name it.
std::string scheme_text(const compress::QuantizeOptions& qo) {
  const auto& row = nn::quant_scheme(qo.method);
  return fmt::format("{} ({}{}{})", row.name, enum_name(qo.algorithm),
                     row.group_rule == nn::QuantGroupRule::PerGroup ? fmt::format(", groups of {}", qo.group_size) : "",
                     row.quantizes_activations ? ""
                                               : fmt::format(", {} activations", enum_name(qo.resolved_activations())));
}

/// The bytes of the quantized Linear weights before and after, and each layer's sizes and errors.
struct LayerTotals {
  int64_t float_bytes = 0, quantized_bytes = 0;
  json per_layer = json::object();
  double ratio() const { return static_cast<double>(quantized_bytes) / static_cast<double>(float_bytes); }
};

LayerTotals layer_totals(const std::vector<compress::QuantizedLayer>& layers) {
  LayerTotals t;
  for (const auto& l : layers) {
    t.float_bytes += l.float_bytes;
    t.quantized_bytes += l.quantized_bytes;
    t.per_layer[l.name] = {{"float_bytes", l.float_bytes}, {"quantized_bytes", l.quantized_bytes},
                           {"weight_error", l.weight_error}};
    if (l.output_error) t.per_layer[l.name]["output_error"] = *l.output_error;
  }
  return t;
}

void print_quantize_table(std::ostream* out, const std::string& scheme, std::size_t n_layers,
                          const std::vector<std::string>& kept, const Side (&sides)[2], const LayerTotals& totals) {
  if (!out) return;
  *out << "quantize: " << scheme << ", " << n_layers << " Linear layers"
       << (kept.empty() ? "" : ", float: " + fmt::format("{}", fmt::join(kept, ", "))) << "\n";
  std::string header = fmt::format("  {:<18} {:>10}", "model", "weights MB");
  for (const auto& key : {"loss", "perplexity", "accuracy", "rewards_accuracy"})
    if (sides[0].metrics.count(key)) header += fmt::format(" {:>11}", key);
  *out << header << fmt::format(" {:>11} {:>11}", "batch 1 ms", "batch 8 ms") << "\n";
  for (const auto& side : sides) {
    std::string text = fmt::format("  {:<18} {:>10.2f}", side.name, static_cast<double>(side.bytes) / 1e6);
    for (const auto& key : {"loss", "perplexity", "accuracy", "rewards_accuracy"})
      if (auto it = side.metrics.find(key); it != side.metrics.end()) text += fmt::format(" {:>11.4f}", it->second);
    for (const auto& [rows, ms] : side.ms) text += fmt::format(" {:>11.2f}", ms);
    *out << text << "\n";
  }
  *out << fmt::format("  Linear weights {:.2f} MB -> {:.2f} MB ({:.3f}x)", static_cast<double>(totals.float_bytes) / 1e6,
                      static_cast<double>(totals.quantized_bytes) / 1e6, totals.ratio())
       << "\n" << std::flush;
}

}  // namespace

StageResult run_quantize_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  RunLock lock(r);
  const auto& qo = r.quantize;
  const auto src = source_model(r, qo.source, Stage::Quantize, qo.checkpoint);
  const auto dir = recipe::quantized_dir(r);
  const auto model_file = dir / "model.safetensors";
  const auto report_file = fs::path(r.run.out_dir) / "quantize.json";
  MadeFrom made_from = stage_record(r, Stage::Quantize, src);
  add_gate_inputs(made_from, r, qo.gate, false);
  const auto fresh = freshness(force, model_file, read_stage_record(r.run.out_dir, "quantize"), made_from);
  if (fresh.up_to_date && !gate_unsettled(dir, qo.gate)) {
    refuse_failed_output(dir, "the quantized model " + model_file.string());
    return {true, fmt::format("{} is {} quantized", model_file.string(), src.string())};
  }
  auto model = load_for_quantizing(r, src, dir, model_file, report_file);
  open_gate(dir, r, qo.gate, "quantize");

  const at::Device device(at::kCPU);  // quantized layers run on CPU kernels
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  const auto inputs = measured_task(r, model, src, "quantize");
  const auto& data = *inputs.data;
  recipe::Recipe on_val = r;
  on_val.eval.split = recipe::Split::Val;
  const auto reference = load_task_model(r, src);  // stays float, for the comparison
  reference.module()->eval();
  const auto before = train::evaluate_model(on_val, reference, data, device).metrics;
  // The gate's figure of the source first: a metric it cannot measure is named before the work.
  std::optional<GateFigure> gate_source;
  if (qo.gate.enabled())
    gate_source = gate_figure(r, qo.gate, "quantize", before, reference, train::tokenizer_for_model(r, src));

  compress::Calibration calibration{qo.calibration_batches, [&](int64_t i, bool) {
                                      torch::NoGradGuard no_grad;
                                      train::task_loss(model, data.train_batch(static_cast<uint64_t>(i)));
                                    }};
  const auto layers = compress::quantize_model(model, qo, &calibration);
  models::save_model(model, model_file);  // reading it back gives the same model (tests/test_quantize.cpp)
  const auto after = train::evaluate_model(on_val, model, data, device).metrics;
  std::optional<GateVerdict> gate;
  if (gate_source)
    gate = judge_gate(qo.gate, "quantize", *gate_source,
                      gate_figure(r, qo.gate, "quantize", after, model, train::tokenizer_for_model(r, src)));

  Side sides[2] = {{"float", before, weight_bytes(reference), {}},
                   {std::string(enum_name(qo.method)), after, weight_bytes(model), {}}};
  const auto probe = data.val_batch(0);
  for (int64_t rows : {1, 8})
    std::tie(sides[0].ms[rows], sides[1].ms[rows]) = forward_ms(reference, model, with_rows(probe, rows));

  const auto totals = layer_totals(layers);
  const auto kept = kept_float(model);
  const auto scheme = scheme_text(qo);
  json report = {{"source", src.string()},
                 {"model", model_file.string()},
                 {"scheme", scheme},
                 {"settings", json(recipe_part(r, {"quantize."}))},
                 {"linear_weights", {{"float_bytes", totals.float_bytes},
                                     {"quantized_bytes", totals.quantized_bytes},
                                     {"ratio", totals.ratio()}}},
                 {"kept_float", kept},
                 {"layers", totals.per_layer},
                 {"before", side_json(sides[0])},
                 {"after", side_json(sides[1])}};
  if (gate) report["gate"] = gate->to_json();
  io::write_file_atomic(report_file, report.dump(2) + "\n");
  if (gate) record_gate(dir, *gate);
  write_stage_record(r.run.out_dir, "quantize", made_from);
  print_quantize_table(console.out, scheme, layers.size(), kept, sides, totals);
  if (gate) enforce_gate(*gate);

  const char* metric = train::headline_metric(before);
  return {false, fmt::format("{}{}: {} {:.3f} -> {:.3f}, Linear weights {:.3f}x, batch 8 forward {} -> {}{}",
                             fresh.why(), scheme, metric, before.count(metric) ? before.at(metric) : 0.0,
                             after.count(metric) ? after.at(metric) : 0.0, totals.ratio(),
                             speed_change(sides[0].ms.at(8), sides[1].ms.at(8)), model_file.string(),
                             gate ? "; gate passed: " + gate->text() : "")};
}

}  // namespace lathe::pipeline
