#include "gate.hpp"

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

GateVerdict measure_gate(const recipe::Recipe& r, const recipe::GateConfig& g, const std::string& stage,
                         const std::map<std::string, double>& before, const std::map<std::string, double>& after,
                         const models::AnyModel& source, const models::AnyModel& output,
                         const tokenizer::Tokenizer& tok) {
  GateVerdict v;
  v.stage = stage;
  if (g.task.empty()) {
    v.metric = g.metric;
    v.source = val_figure(before, g.metric, stage);
    v.output = val_figure(after, g.metric, stage);
  } else {
    const auto tasks = train::load_eval_tasks(r, {g.task});
    auto options = train::task_run_options(r);
    options.keep_samples = false;
    const auto a = train::run_eval_tasks(tasks, source, tok, options).at(0);
    const auto b = train::run_eval_tasks(tasks, output, tok, options).at(0);
    v.source = task_figure(a, g, stage);
    v.output = task_figure(b, g, stage);
    v.metric = fmt::format("{} {}", a.task, a.find(g.metric, g.filter)->key());
  }
  const auto limit = g.limit();
  v.increase = limit.increase;
  v.limit = limit.increase ? "max_increase " + g.max_increase : "max_drop " + g.max_drop;
  const double room = limit.relative ? limit.amount * std::abs(v.source) : limit.amount;
  v.bound = limit.increase ? v.source + room : v.source - room;
  v.passed = std::isfinite(v.output) && (limit.increase ? v.output <= v.bound : v.output >= v.bound);
  return v;
}

void settle_gate(const fs::path& dir, const GateVerdict* v) {
  const auto file = dir / "gate.json";
  if (!v) {
    if (fs::exists(file)) io::remove_owned(file);
    return;
  }
  io::claim(file);
  io::write_file_atomic(file, v->to_json().dump(2) + "\n");
  if (!v->passed)
    throw Error(fmt::format("{} gate failed: {}. The output in {} is marked failed (gate.json) and no later stage "
                            "uses it; change the stage's settings or the gate and run again",
                            v->stage, v->text(), dir.string()));
}

void refuse_failed_output(const fs::path& dir, const std::string& what) {
  const auto file = dir / "gate.json";
  if (!fs::exists(file)) return;
  const json j = io::read_json(file);
  if (j.value("passed", true)) return;
  throw Error(fmt::format("{} failed its {} gate ({}); it is not used. Change the stage's settings or the gate and "
                          "run again",
                          what, j.value("stage", std::string("stage")), j.value("text", std::string("see ") + file.string())));
}

}  // namespace lathe::pipeline
