// Pruning: unstructured (magnitude, Wanda), N:M semi-structured, structured (whole attention
// heads and MLP neurons, physically removed), and the cubic schedule of gradual pruning.
//
// What may be pruned is asked of the parameter roles (lathe/nn/roles.hpp), never of names:
// unstructured and N:M pruning zero entries of the blocks' matrices (roles matrix, head_block,
// neuron_block, residual_projection; never embeddings or the output head); structured pruning
// removes the rows of a head_block that are a head and the columns of the residual_projection
// they feed, and likewise a neuron_block's neurons.
//
// A mask is a bool tensor of its parameter's shape: true = kept.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/core/enum_table.hpp"
#include "lathe/core/schema.hpp"
#include "lathe/models/options.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::compress {

using lathe::operator<<;

/// magnitude, wanda: unstructured; n_m: n of every m consecutive weights of a row kept;
/// structured: whole heads (`heads`) and MLP neurons (`neurons`) removed.
enum class PruneMethod { Magnitude, Wanda, NM, Structured };
/// What ranks weights or units. auto: magnitude for n_m, l2 for structured.
enum class PruneScore { Auto, Magnitude, Wanda, L2, Taylor };
/// Which weights compete for removal. auto: row for wanda (the paper's choice), layer otherwise.
enum class PruneScope { Auto, Row, Layer, Global };
/// one_shot: prune once, then fine-tune with the masks fixed; gradual: prune during the
/// fine-tune on the cubic schedule of Zhu & Gupta (2017).
enum class PruneSchedule { OneShot, Gradual };

using Masks = std::map<std::string, at::Tensor>;

struct PruneOptions {
  PruneMethod method = PruneMethod::Magnitude;
  double sparsity = 0.5;          // magnitude, wanda: share of the prunable weights zeroed
  PruneScope scope = PruneScope::Auto;
  int64_t n = 2;                  // n_m: weights kept in every group of m
  int64_t m = 4;                  // n_m: group size (along a row, i.e. the input features)
  PruneScore score = PruneScore::Auto;
  double heads = 0.0;             // structured: share of attention heads removed in every layer
  double neurons = 0.0;           // structured: share of MLP neurons removed in every layer
  PruneSchedule schedule = PruneSchedule::OneShot;
  double initial_sparsity = 0.0;  // gradual: sparsity at the first fine-tune step
  double ramp = 0.75;             // gradual: share of finetune_steps over which sparsity rises
  int64_t prune_every = 10;       // gradual: steps between mask updates
  int64_t calibration_batches = 8;  // wanda, taylor: training batches that collect statistics
  int64_t finetune_steps = 0;     // training steps after pruning, masks held
  std::vector<std::string> skip_modules;  // roles or path patterns left dense

  PruneScore resolved_score() const;
  PruneScope resolved_scope() const;
  /// Whether pruning needs calibration batches (wanda or taylor scores).
  bool needs_calibration() const;
  /// Problems spanning keys, each with the keys involved (as the recipe names them, without
  /// the "prune." prefix) and what is wrong.
  std::vector<models::OptionProblem> problems() const;
};

template <class V>
void visit(V& v, PruneOptions& c) {
  v.field("method", c.method, "magnitude or wanda (unstructured), n_m (n of every m weights kept), structured "
                              "(whole heads and MLP neurons removed; the model gets smaller).");
  v.field("sparsity", c.sparsity, "magnitude, wanda: share of the prunable weights zeroed (the target of a "
                                  "gradual schedule).",
          in_closed_open(0.0, 1.0));
  v.field("scope", c.scope, "Which weights compete: row (each output row), layer (each matrix) or global (all "
                            "matrices); auto: row for wanda, layer for magnitude.");
  v.field("n", c.n, "n_m: weights kept in every group of m.", at_least(1));
  v.field("m", c.m, "n_m: group size, along each row.", at_least(2));
  v.field("score", c.score, "Ranking: magnitude or wanda (|W| times input norm) for n_m; l2 or taylor (|w * "
                            "grad| on calibration batches) for structured; auto: magnitude / l2.");
  v.field("heads", c.heads, "structured: share of attention heads removed in every layer (with grouped-query "
                            "attention, whole key/value groups).",
          in_closed_open(0.0, 1.0));
  v.field("neurons", c.neurons, "structured: share of MLP neurons removed in every layer (SwiGLU: gate and up "
                                "rows together).",
          in_closed_open(0.0, 1.0));
  v.field("schedule", c.schedule, "one_shot, or gradual (magnitude during the fine-tune, cubic schedule).");
  v.field("initial_sparsity", c.initial_sparsity, "gradual: sparsity at the first fine-tune step.",
          in_closed_open(0.0, 1.0));
  v.field("ramp", c.ramp, "gradual: share of finetune_steps over which sparsity rises to its target.",
          in_open_closed(0.0, 1.0));
  v.field("prune_every", c.prune_every, "gradual: fine-tune steps between mask updates.", at_least(1));
  v.field("calibration_batches", c.calibration_batches, "wanda, taylor: training batches that collect the "
                                                        "statistics.",
          at_least(1));
  v.field("finetune_steps", c.finetune_steps, "Training steps after pruning (optimizer settings of the recipe), "
                                              "with pruned weights held at zero.",
          at_least(0));
  v.field("skip_modules", c.skip_modules, "magnitude, wanda, n_m: parameter roles (matrix, head_block, ...) or "
                                          "module path patterns (blocks.0.*) left dense.");
}

/// Runs the calibration batches through the model: forward of batch `index`, and backward of
/// its loss when `backward` (gradients accumulate in .grad()).
struct Calibration {
  int64_t batches = 0;
  std::function<void(int64_t index, bool backward)> run;
};

/// Throws Error naming `key` (prune.skip_modules, quantize.skip_modules) and the pattern when a
/// path pattern of `skip` selects no parameter of `model` (a misspelt path would leave
/// everything it meant to protect pruned or quantized). Role names are always accepted.
void check_skip_modules(const models::AnyModel& model, const std::vector<std::string>& skip, const std::string& key);

/// The parameters unstructured and N:M pruning may zero, in named_parameters() order; checks
/// `skip` first (check_skip_modules).
std::vector<nn::RoledParameter> prunable(const models::AnyModel& model, const std::vector<std::string>& skip);

/// Wanda's statistic: for each prunable weight, the L2 norm of each input feature over every
/// calibration token, (in,) float32.
std::map<std::string, at::Tensor> input_norms(models::AnyModel& model, const std::vector<std::string>& skip,
                                              const Calibration& calibration);

/// Masks of unstructured (magnitude / wanda) or N:M pruning at `sparsity` (unstructured only).
/// `norms`: input_norms(), required for wanda scores. Exact counts: a layer of k weights at
/// sparsity s loses round(s * k) (per row under row scope, round(s * k) over all under global).
Masks unstructured_masks(const models::AnyModel& model, const PruneOptions& options, double sparsity,
                         const std::map<std::string, at::Tensor>& norms = {});

/// Multiplies each masked parameter by its mask (in place, no autograd).
void apply_masks(const models::AnyModel& model, const Masks& masks);

/// Sparsity of one pruned parameter.
struct LayerSparsity {
  std::string name;
  int64_t size = 0;
  int64_t zeros = 0;
  double sparsity() const { return size ? static_cast<double>(zeros) / static_cast<double>(size) : 0.0; }
};
/// Zeros in each prunable parameter and in all of them together (the last entry, "all").
std::vector<LayerSparsity> measure_sparsity(const models::AnyModel& model, const std::vector<std::string>& skip);

/// Which heads (or key/value groups under GQA) and MLP neurons each layer keeps.
struct StructuredPlan {
  std::vector<std::vector<int64_t>> heads;    // per layer: kept query heads, ascending
  std::vector<std::vector<int64_t>> neurons;  // per layer: kept neurons, ascending
};

/// Ranks heads and neurons by options.score (l2 of the unit's weights, or first-order Taylor
/// |w * grad| summed over them, with gradients from `calibration`) and keeps the best of each
/// layer; every layer keeps the same number, so the model keeps one config.
StructuredPlan plan_structured(models::AnyModel& model, const PruneOptions& options,
                               const Calibration* calibration = nullptr);

/// A new, smaller model with only the kept heads and neurons (n_head, n_kv_head, head_dim
/// and d_ff updated); it computes what `model` computes with the removed heads' and neurons'
/// output columns zeroed.
models::AnyModel apply_structured(const models::AnyModel& model, const StructuredPlan& plan);

/// Zhu & Gupta's cubic schedule: the sparsity at fine-tune step `step` (0-based) of `total`:
/// s_f + (s_i - s_f) * (1 - t / (ramp * total))^3, updated every prune_every steps, s_f
/// from gradual_final_step on.
double gradual_sparsity(const PruneOptions& options, int64_t step, int64_t total);

/// The step (0-based) of `total` at which the masks reach the target: the first step at or
/// after the ramp's end, or the last step when the ramp spans them all. The masks are updated
/// there whether or not it is a multiple of prune_every.
int64_t gradual_final_step(const PruneOptions& options, int64_t total);

}  // namespace lathe::compress

LATHE_ENUM_TABLE(lathe::compress::PruneMethod, {lathe::compress::PruneMethod::Magnitude, "magnitude"},
                 {lathe::compress::PruneMethod::Wanda, "wanda"}, {lathe::compress::PruneMethod::NM, "n_m"},
                 {lathe::compress::PruneMethod::Structured, "structured"});
LATHE_ENUM_TABLE(lathe::compress::PruneScore, {lathe::compress::PruneScore::Auto, "auto"},
                 {lathe::compress::PruneScore::Magnitude, "magnitude"}, {lathe::compress::PruneScore::Wanda, "wanda"},
                 {lathe::compress::PruneScore::L2, "l2"}, {lathe::compress::PruneScore::Taylor, "taylor"});
LATHE_ENUM_TABLE(lathe::compress::PruneScope, {lathe::compress::PruneScope::Auto, "auto"},
                 {lathe::compress::PruneScope::Row, "row"}, {lathe::compress::PruneScope::Layer, "layer"},
                 {lathe::compress::PruneScope::Global, "global"});
LATHE_ENUM_TABLE(lathe::compress::PruneSchedule, {lathe::compress::PruneSchedule::OneShot, "one_shot"},
                 {lathe::compress::PruneSchedule::Gradual, "gradual"});
