// One handle for the trainable models, and lathe's own model file: model.safetensors with
// lathe's tensor names and, in the metadata, the model kind and every option ("lathe.model":
// JSON), so a file alone rebuilds its model.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lathe/io/safetensors.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/kind.hpp"
#include "lathe/nn/quantized.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::models {

/// A model of any kind: its module and its kind's row (kind.hpp), which the handle asks for
/// everything that differs by kind. Copies share the module.
class AnyModel {
 public:
  AnyModel() = default;
  /// `module` must be of one kind's class (Gpt, BertForMaskedLM, ...); throws std::logic_error
  /// otherwise.
  explicit AnyModel(std::shared_ptr<torch::nn::Module> module);
  template <class Holder>
  requires requires(const Holder& h) { h.ptr(); }
  explicit AnyModel(const Holder& holder) : AnyModel(std::shared_ptr<torch::nn::Module>(holder.ptr())) {}

  ModelKind kind() const { return traits().kind; }
  const ModelKindTraits& traits() const;
  /// The kind's spelling ("gpt", "bert_masked_lm", ...), as the model file stores it.
  std::string kind_name() const { return std::string(enum_name(kind())); }
  Arch arch() const { return traits().arch; }
  std::shared_ptr<torch::nn::Module> module() const { return module_; }
  /// The module as its class, e.g. `as<Gpt>()` for generation; throws std::logic_error when the
  /// model is of another class (the caller asked load_model for the kind it needs).
  template <class Holder>
  Holder as() const {
    auto p = std::dynamic_pointer_cast<typename Holder::ContainedType>(module_);
    if (!p) throw std::logic_error("a " + kind_name() + " model is not of the class asked for");
    return Holder(p);
  }
  int64_t vocab_size() const { return options().vocab_size; }
  /// The options the model was built with (a BERT's are its encoder's).
  const ModelOptions& options() const { return traits().options(*module_); }
  /// The output head while it shares the token embedding, named as a head of its own
  /// (<tied_head_path>.weight, role OutputHead), so that skip_modules and pruning see it;
  /// nothing when the kind has no such head or it has been separated.
  std::optional<nn::RoledParameter> tied_head() const;
  /// Gives a tied output head a module of its own (a copy; the embedding stays as it is); a
  /// no-op where there is none.
  void separate_head() const;
  /// The task's logits and targets (the row's `scored`).
  TaskLogits scored(const TaskInputs& inputs) const { return traits().scored(*module_, inputs); }
  /// The task's loss computed blockwise, or an undefined tensor where the kind cannot.
  at::Tensor blockwise_loss(const TaskInputs& inputs, at::ScalarType* logits_dtype) const;

  std::vector<std::string> labels;  // labelled kinds: class names by id (may be empty)

 private:
  AnyModel(const ModelKindTraits& row, std::shared_ptr<torch::nn::Module> module)
      : row_(&row), module_(std::move(module)) {}
  friend AnyModel make_model(ModelKind kind, const ModelOptions& options);

  const ModelKindTraits* row_ = nullptr;
  std::shared_ptr<torch::nn::Module> module_;
};

AnyModel make_model(ModelKind kind, const ModelOptions& options);

/// Writes the model in Hugging Face layout (hf.hpp), a classifier with its labels; returns the
/// names of the files written.
std::vector<std::string> save_hf(const AnyModel& model, const std::filesystem::path& dir,
                                 const HfWriteOptions& options = {});

/// The quantized Linear layers of `model`, by module path (empty for a float model).
std::map<std::string, const nn::QuantizedWeight*> quantized_layers(const AnyModel& model);

/// Writes `path` (model.safetensors) atomically: float tensors as they are, plus the metadata.
/// A quantized layer is stored as <path>.qweight (int8, or int4 two per byte, the even input
/// in the low nibble), <path>.scales and (int4) <path>.zeros, its scheme under "quantized" in
/// the metadata; load_model rebuilds it.
/// `values`: the parameters' values come from it, in named_parameters() order, one at a time
/// (a float model whose parameters are not all in memory at once, e.g. fsdp's shards gathered a
/// block at a time): float32 tensors of the parameters' shapes.
void save_model(const AnyModel& model, const std::filesystem::path& path, const ValueSource& values = {});

/// Makes `value` the parameter's values: `param` takes `value` as its data when it is stored as
/// the parameter keeps it (dtype, device, contiguous) and copies (converts) it in otherwise.
void assign_parameter(at::Tensor& param, const at::Tensor& value);

/// Reads a lathe model file (or a directory holding one as model.safetensors, e.g. a
/// checkpoint), or a Hugging Face directory (config.json + model.safetensors) of
/// gpt2, llama or bert. `want`: the kind the caller needs (a BERT masked-LM or base directory
/// becomes a classifier with fresh head for BertClassifier; num_labels > 0 sets its classes,
/// ignored for a kind without classes).
/// Errors name the file. `read`: io::Read::Map makes the parameters views of the mapped file
/// where they are stored as the model keeps them (nothing copied, for inference: lathe generate).
/// Parameters a file holds are not initialized before they are read.
AnyModel load_model(const std::filesystem::path& path, std::optional<ModelKind> want = std::nullopt,
                    int64_t num_labels = 0, io::Read read = io::Read::Copy);

}  // namespace lathe::models
