// Quality gates (prune.gate, quantize.gate, export.gate; recipe::GateConfig): the stage's
// output measured against its source on the same data, the verdict kept beside the output in
// gate.json, and the refusal to use an output whose gate failed.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "lathe/models/store.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::pipeline {

/// What a gate compared and what it found.
struct GateVerdict {
  std::string stage;   // "quantize"
  std::string metric;  // "val_perplexity", or "arc_easy acc_norm,none"
  double source = 0;   // the source model's figure
  double output = 0;   // the stage's output's figure
  double bound = 0;    // the worst figure the limit allows
  std::string limit;   // "max_increase: 2%"
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

/// Measures `gate` of `stage`: a validation metric (val_<name>) from the figures the stage
/// measured (`before` of the source, `after` of the output), or a task metric of eval.tasks run
/// on `source` and `output` with `tok`. Throws lathe::Error naming <stage>.gate.metric when the
/// metric is not among those measured.
GateVerdict measure_gate(const recipe::Recipe& recipe, const recipe::GateConfig& gate, const std::string& stage,
                         const std::map<std::string, double>& before, const std::map<std::string, double>& after,
                         const models::AnyModel& source, const models::AnyModel& output,
                         const tokenizer::Tokenizer& tok);

/// Keeps the verdict in <dir>/gate.json (removing an earlier one when `verdict` is null: the
/// stage has no gate now) and throws lathe::Error with both figures when the gate failed.
void settle_gate(const std::filesystem::path& dir, const GateVerdict* verdict);

/// Throws lathe::Error naming the gate and its figures when <dir>/gate.json records a failed
/// gate: `what` ("the quantized model at ...") is not to be used.
void refuse_failed_output(const std::filesystem::path& dir, const std::string& what);

}  // namespace lathe::pipeline
