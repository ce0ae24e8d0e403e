// Quality gates (prune.gate, quantize.gate, export.gate; recipe::GateConfig): the stage's
// output measured against its source on the same data, the verdict kept beside the output in
// gate.json, and the refusal to use an output whose gate failed or was never measured.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "lathe/models/store.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/train/eval_tasks.hpp"

namespace lathe::pipeline {

/// What a gate compared and what it found.
struct GateVerdict {
  std::string stage;   // "quantize"
  std::string metric;  // "val_perplexity", or "arc_easy acc_norm,none"
  double source = 0;   // the source model's figure
  double output = 0;   // the stage's output's figure
  double bound = 0;    // the worst figure the limit allows
  std::string limit;   // "max_increase 2%"
  bool increase = true;
  bool passed = true;
  /// "val_perplexity 31.2000 -> 40.1000 (+28.53%); quantize.gate max_increase 2% allows at most 31.8240".
  std::string text() const;
  nlohmann::json to_json() const;
};

/// Adds to a stage's record what its gate reads beyond the stage's own inputs: for a task
/// metric eval.tasks, num_fewshot, limit and the task and document files; with `val_data` (a
/// stage that reads no validation data otherwise) the task data and eval.batches.
void add_gate_inputs(MadeFrom& record, const recipe::Recipe& recipe, const recipe::GateConfig& gate, bool val_data);

/// The gate's figure for one model: a validation metric (val_<name>) from `val`, the metrics the
/// stage measured on it, or a task metric of eval.tasks run on `model` with `tok`. `label` names
/// it ("val_perplexity", "arc_easy acc_norm,none"). Throws lathe::Error naming <stage>.gate.metric
/// when there is no such metric.
struct GateFigure {
  double value = 0;
  std::string label;
};
GateFigure gate_figure(const recipe::Recipe& recipe, const recipe::GateConfig& gate, const std::string& stage,
                       const std::map<std::string, double>& val, const models::AnyModel& model,
                       const train::TaskTokenizer& tok);

/// The verdict on the source's and the output's figures.
GateVerdict judge_gate(const recipe::GateConfig& gate, const std::string& stage, const GateFigure& source,
                       const GateFigure& output);

/// Both figures measured and judged (for a stage that leaves its source model as it was).
GateVerdict measure_gate(const recipe::Recipe& recipe, const recipe::GateConfig& gate, const std::string& stage,
                         const std::map<std::string, double>& before, const std::map<std::string, double>& after,
                         const models::AnyModel& source, const models::AnyModel& output,
                         const train::TaskTokenizer& tok);

/// At the start of a stage that will write its output: with a gate, checks that its task is in
/// eval.tasks with that metric, and marks the output pending in <dir>/gate.json (refused like a
/// failed one until the verdict replaces it, so an output cut off before its verdict is never
/// used); without one, removes an earlier gate.json.
void open_gate(const std::filesystem::path& dir, const recipe::Recipe& recipe, const recipe::GateConfig& gate,
               const std::string& stage);

/// Writes the verdict to <dir>/gate.json (before the stage's record: a stage cut off between
/// the two runs again).
void record_gate(const std::filesystem::path& dir, const GateVerdict& verdict);

/// Throws lathe::Error with both figures when the gate failed.
void enforce_gate(const GateVerdict& verdict);

/// Whether a stage whose record is up to date must run again for its gate: the gate is on and
/// <dir>/gate.json is missing or still pending (an attempt was cut off, or failed before its
/// verdict).
bool gate_unsettled(const std::filesystem::path& dir, const recipe::GateConfig& gate);

/// Throws lathe::Error naming the gate and its figures when <dir>/gate.json records a failed or
/// unfinished gate: `what` ("the quantized model ...") is not to be used.
void refuse_failed_output(const std::filesystem::path& dir, const std::string& what);

}  // namespace lathe::pipeline
