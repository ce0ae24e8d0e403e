#include "gate.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/train/eval_tasks.hpp"

namespace lathe::pipeline {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// The figure `gate` names in the metrics `m` of a validation run.
double val_figure(const std::map<std::string, double>& m, const std::string& metric, const std::string& stage) {
  const auto name = metric.substr(4);  // val_
  if (auto it = m.find(name); it != m.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [k, v] : m) names.push_back("val_" + k);
  throw Error(fmt::format("{}.gate.metric: '{}' is not measured on this run's validation data (it measures {})", stage,
                          metric, fmt::join(names, ", ")));
}

double task_figure(const eval::TaskResult& r, const recipe::GateConfig& g, const std::string& stage) {
  if (const auto m = r.find(g.metric, g.filter)) return m->value;
  std::vector<std::string> keys;
  for (const auto& m : r.metrics) keys.push_back(m.key());
  throw Error(fmt::format("{}.gate: task {} has no metric '{}'{} (it has {})", stage, r.task, g.metric,
                          g.filter.empty() ? "" : " with filter '" + g.filter + "'", fmt::join(keys, ", ")));
}

}  // namespace

void add_gate_inputs(MadeFrom& record, const recipe::Recipe& r, const recipe::GateConfig& g, bool val_data) {
  if (!g.enabled()) return;
  if (!g.task.empty()) {
    record.merge(recipe_part(r, {"eval.tasks", "eval.num_fewshot", "eval.limit", "eval.bootstrap_iters"}));
    add_files(record, train::eval_task_inputs(r));
  }
  if (val_data) {
    record.merge(task_data_record(r));
    record.merge(recipe_part(r, {"eval.batches", "train.precision"}));
  }
}

std::string GateVerdict::text() const {
  const double change = output - source;
  const std::string relative = source != 0 ? fmt::format(" ({:+.2f}%)", 100.0 * change / std::abs(source)) : "";
  return fmt::format("{} {:.4f} -> {:.4f}{}; {}.gate {} allows {} {:.4f}", metric, source, output, relative, stage,
                     limit, increase ? "at most" : "at least", bound);
}

json GateVerdict::to_json() const {
  return {{"stage", stage}, {"metric", metric}, {"source", source}, {"output", output},   {"bound", bound},
          {"limit", limit}, {"passed", passed}, {"text", text()}};
}

GateFigure gate_figure(const recipe::Recipe& r, const recipe::GateConfig& g, const std::string& stage,
                       const std::map<std::string, double>& val, const models::AnyModel& model,
                       const train::TaskTokenizer& tok) {
  if (g.task.empty()) return {val_figure(val, g.metric, stage), g.metric};
  const auto tasks = train::load_eval_tasks(r, {g.task});
  auto options = train::task_run_options(r);
  options.keep_samples = false;
  const auto result = train::run_eval_tasks(tasks, model, tok, options).at(0);
  const double value = task_figure(result, g, stage);
  return {value, fmt::format("{} {}", result.task, result.find(g.metric, g.filter)->key())};
}

GateVerdict judge_gate(const recipe::GateConfig& g, const std::string& stage, const GateFigure& source,
                       const GateFigure& output) {
  GateVerdict v;
  v.stage = stage;
  v.metric = source.label;
  v.source = source.value;
  v.output = output.value;
  const auto limit = g.limit();
  v.increase = limit.increase;
  v.limit = limit.increase ? "max_increase " + g.max_increase : "max_drop " + g.max_drop;
  const double room = limit.relative ? limit.amount * std::abs(v.source) : limit.amount;
  v.bound = limit.increase ? v.source + room : v.source - room;
  v.passed = std::isfinite(v.output) && (limit.increase ? v.output <= v.bound : v.output >= v.bound);
  return v;
}

GateVerdict measure_gate(const recipe::Recipe& r, const recipe::GateConfig& g, const std::string& stage,
                         const std::map<std::string, double>& before, const std::map<std::string, double>& after,
                         const models::AnyModel& source, const models::AnyModel& output,
                         const train::TaskTokenizer& tok) {
  return judge_gate(g, stage, gate_figure(r, g, stage, before, source, tok), gate_figure(r, g, stage, after, output, tok));
}

void open_gate(const fs::path& dir, const recipe::Recipe& r, const recipe::GateConfig& g, const std::string& stage) {
  const auto file = dir / "gate.json";
  if (!g.enabled()) {
    if (fs::exists(file)) io::remove_owned(file);
    return;
  }
  if (!g.task.empty()) {  // named before the stage's work, not after it
    std::vector<eval::Task> tasks;
    try {
      tasks = train::load_eval_tasks(r, {g.task});
    } catch (const Error& e) {
      throw Error(fmt::format("{}.gate.task: {}", stage, e.what()));
    }
    const auto& metrics = tasks.at(0).config().metrics;
    if (std::none_of(metrics.begin(), metrics.end(), [&](const auto& m) { return m.name == g.metric; })) {
      std::vector<std::string> names;
      for (const auto& m : metrics) names.push_back(m.name);
      throw Error(fmt::format("{}.gate.metric: task {} has no metric '{}' (its metric_list: {})", stage, g.task,
                              g.metric, fmt::join(names, ", ")));
    }
  }
  fs::create_directories(dir);
  io::claim(file);
  const json pending = {{"stage", stage}, {"passed", false}, {"pending", true},
                        {"text", "the stage did not finish measuring its gate (it was cut off, or failed first)"}};
  io::write_file_atomic(file, pending.dump(2) + "\n");
}

void record_gate(const fs::path& dir, const GateVerdict& v) {
  const auto file = dir / "gate.json";
  io::claim(file);
  io::write_file_atomic(file, v.to_json().dump(2) + "\n");
}

void enforce_gate(const GateVerdict& v) {
  if (!v.passed)
    throw Error(fmt::format("{} gate failed: {}. The output is marked failed (gate.json beside it) and no later "
                            "stage uses it; change the stage's settings or the gate and run again",
                            v.stage, v.text()));
}

bool gate_unsettled(const fs::path& dir, const recipe::GateConfig& g) {
  if (!g.enabled()) return false;
  const auto file = dir / "gate.json";
  return !fs::exists(file) || io::read_json(file).value("pending", false);
}

void refuse_model_of_failed_gate(const fs::path& model) {
  const fs::path dir = fs::is_directory(model) ? model : model.parent_path();
  refuse_failed_output(dir, "the model " + model.string());
}

void refuse_failed_output(const fs::path& dir, const std::string& what) {
  const auto file = dir / "gate.json";
  if (!fs::exists(file)) return;
  const json j = io::read_json(file);
  if (j.value("passed", true)) return;
  const auto stage = j.value("stage", std::string("stage"));
  if (j.value("pending", false))
    throw Error(fmt::format("{} has no {} gate verdict: the {} stage did not finish measuring it; run the stage "
                            "again",
                            what, stage, stage));
  throw Error(fmt::format("{} failed its {} gate ({}); it is not used. Change the stage's settings or the gate and "
                          "run again",
                          what, stage, j.value("text", std::string("see ") + file.string())));
}

}  // namespace lathe::pipeline
