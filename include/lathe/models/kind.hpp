// The kinds of trainable model, as a table of traits: one row per ModelKind says what the kind
// is (its spelling, architecture, the task that trains it, whether it has named classes), how
// to make, read and write it, its forward for the task's logits and its output head. AnyModel
// (store.hpp), the model file, the trainer's loss and the compression stages ask the row;
// nothing tests for a kind. Tables kept by kind outside `models` (the ONNX graphs in export)
// check with covers_every_kind that they have a row for each.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/core/enum_table.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/hf_options.hpp"
#include "lathe/models/options.hpp"
#include "lathe/nn/init.hpp"

namespace torch::nn {
class Module;
}

namespace lathe::models {

/// bert_encoder: a BERT without a head (feature extraction, sentence embeddings): imported from a
/// Hugging Face BertModel directory and exported; no train.task trains it.
enum class ModelKind { Gpt, BertMaskedLm, BertClassifier, BertEncoder };

/// What a task feeds a model (tensors the kind does not read may be undefined). targets: next
/// tokens (B, T), masked-LM labels (B, T) with -100 where nothing is predicted, or class ids (B).
struct TaskInputs {
  at::Tensor input_ids;
  at::Tensor attention_mask;
  at::Tensor token_type_ids;
  at::Tensor targets;
  at::Tensor segments;  // packed rows (GPT): the example of each position
};

/// The logits of the positions a batch scores, (N, classes), and their targets, (N).
struct TaskLogits {
  at::Tensor logits;
  at::Tensor targets;
};

struct ModelKindTraits {
  ModelKind kind;
  Arch arch;
  /// The spelling of train.task that trains this kind (recipe::Task's table); empty: none does.
  std::string_view task;
  /// Other train.task spellings that train this kind (the GPT: sft, dpo); empty entries: none.
  std::array<std::string_view, 2> also_trains = {};
  /// Whether train.task `task` (its spelling) trains this kind.
  constexpr bool trains(std::string_view t) const {
    if (t == task) return true;
    for (const auto a : also_trains)
      if (!a.empty() && a == t) return true;
    return false;
  }
  /// Named classes: model.num_labels sets their number, the model file and exports their names.
  bool labelled = false;
  /// The batches score varying numbers of targets: micro-batches weigh by their share of the
  /// step's targets (a GPT's windows all score the same number).
  bool weigh_by_targets = false;
  /// A model file of this kind can start a new model of the row's kind: the parameters of the
  /// same name are copied, the others keep their fresh initialisation (none: it cannot).
  std::optional<ModelKind> starts_from = std::nullopt;

  /// A new model of the options, initialised.
  std::shared_ptr<torch::nn::Module> (*make)(const ModelOptions& options) = nullptr;
  /// The kind's initialisation of `module` (what `make` draws), each parameter drawn into a
  /// tensor handed to `sink` (nn::initialise): for a model on the meta device.
  void (*init)(torch::nn::Module& module, const nn::ValueSink& sink) = nullptr;
  /// Whether `module` is this kind's class.
  bool (*holds)(const torch::nn::Module& module) = nullptr;
  /// The options the model was built with (a BERT's are its encoder's).
  const ModelOptions& (*options)(const torch::nn::Module& module) = nullptr;
  /// A Hugging Face directory of this architecture as this kind (`num_labels` > 0: a
  /// classifier's classes; `read`: see load_model).
  std::shared_ptr<torch::nn::Module> (*load_hf)(const std::filesystem::path& dir, int64_t num_labels,
                                                io::Read read) = nullptr;
  /// The same directory not materialised: the model on the meta device and the source of its
  /// values, read from the mapped files a tensor at a time.
  std::pair<std::shared_ptr<torch::nn::Module>, nn::ValueSource> (*open_hf)(const std::filesystem::path& dir,
                                                                           int64_t num_labels) = nullptr;
  /// Writes the model in Hugging Face layout (`labels`: class names, where the kind has them);
  /// returns the names of the files written.
  std::vector<std::string> (*save_hf)(torch::nn::Module& module, const std::filesystem::path& dir,
                                      const std::vector<std::string>& labels, const HfWriteOptions& options) = nullptr;
  /// How the Hugging Face family save_hf writes the model as names its tensors (adapters are
  /// saved under those names); null where the kind offers no adapters.
  HfNaming (*hf_naming)(const torch::nn::Module& module) = nullptr;

  /// An output head that shares the token embedding and can be held apart, under
  /// `tied_head_path` (quantizing keeps the lookup table float and quantizes a copy):
  /// `tied_head` gives its weight while it is shared, an undefined tensor once it has a module
  /// of its own; `separate_head` gives it one. Null where the kind has no such head.
  std::string_view tied_head_path = {};
  at::Tensor (*tied_head)(torch::nn::Module& module) = nullptr;
  void (*separate_head)(torch::nn::Module& module) = nullptr;

  /// The forward a task scores: the logits of the scored positions and their targets.
  TaskLogits (*scored)(torch::nn::Module& module, const TaskInputs& inputs) = nullptr;
  /// The task's mean loss without ever holding the whole logits (the vocabulary projected
  /// blockwise, nn::linear_cross_entropy), or an undefined tensor where the model cannot (then
  /// the loss is the cross-entropy of `scored`); null: the kind has no such path.
  /// `logits_dtype` (optional) receives the dtype the projection computes in.
  at::Tensor (*blockwise_loss)(torch::nn::Module& module, const TaskInputs& inputs,
                               at::ScalarType* logits_dtype) = nullptr;
};

/// Every kind's row, in the order of ModelKind's spelling table.
std::span<const ModelKindTraits> model_kinds();
/// The row of `kind`.
const ModelKindTraits& kind_traits(ModelKind kind);

}  // namespace lathe::models

LATHE_ENUM_TABLE(lathe::models::ModelKind, {lathe::models::ModelKind::Gpt, "gpt"},
                 {lathe::models::ModelKind::BertMaskedLm, "bert_masked_lm"},
                 {lathe::models::ModelKind::BertClassifier, "bert_classifier"},
                 {lathe::models::ModelKind::BertEncoder, "bert_encoder"});

namespace lathe::models {

// An enumerator without a spelling would be missing from the spelling table, and so from every
// table checked against it; -Wswitch, an error here, names it.
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
constexpr bool is_spelled(ModelKind kind) {
  switch (kind) {
    case ModelKind::Gpt:
    case ModelKind::BertMaskedLm:
    case ModelKind::BertClassifier:
    case ModelKind::BertEncoder: return enum_name(kind) != "?";
  }
  return false;
}
#pragma GCC diagnostic pop

/// Whether `rows` (anything with a `kind` member) has one row per model kind, in the order of
/// ModelKind's spelling table: what a table keyed by kind static_asserts.
template <class Rows>
constexpr bool covers_every_kind(const Rows& rows) {
  constexpr auto& spelled = EnumTable<ModelKind>::values;
  if (std::size(rows) != spelled.size()) return false;
  std::size_t i = 0;
  for (const auto& row : rows)
    if (row.kind != spelled[i++].first || !is_spelled(row.kind)) return false;
  return true;
}

}  // namespace lathe::models
