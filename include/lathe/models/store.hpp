// One handle for the three trainable models, and lathe's own model file: model.safetensors
// with lathe's tensor names and, in the metadata, the model kind and every option
// ("lathe.model": JSON), so a file alone rebuilds its model.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lathe/io/safetensors.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/nn/quantized.hpp"

namespace lathe::models {

enum class ModelKind { Gpt, BertMaskedLm, BertClassifier };

struct AnyModel {
  ModelKind kind = ModelKind::Gpt;
  Gpt gpt{nullptr};
  BertForMaskedLM mlm{nullptr};
  BertForSequenceClassification classifier{nullptr};
  std::vector<std::string> labels;  // classifier: class names by id (may be empty)

  std::shared_ptr<torch::nn::Module> module() const;
  /// The encoder of either BERT kind (null for a GPT).
  BertModel bert() const;
  int64_t vocab_size() const;
  /// The options the model was built with (a BERT's are its encoder's).
  const ModelOptions& options() const;
  Arch arch() const { return kind == ModelKind::Gpt ? Arch::Gpt : Arch::Bert; }
  const char* kind_name() const;
};

AnyModel make_model(ModelKind kind, const ModelOptions& options);

/// The quantized Linear layers of `model`, by module path (empty for a float model).
std::map<std::string, const nn::QuantizedWeight*> quantized_layers(const AnyModel& model);

/// Writes `path` (model.safetensors) atomically: float tensors as they are, plus the metadata.
/// A quantized layer is stored as <path>.qweight (int8, or int4 two per byte, the even input
/// in the low nibble), <path>.scales and (int4) <path>.zeros, its scheme under "quantized" in
/// the metadata; load_model rebuilds it.
void save_model(const AnyModel& model, const std::filesystem::path& path);

/// Makes `value` the parameter's values: `param` takes `value` as its data when it is stored as
/// the parameter keeps it (dtype, device, contiguous) and copies (converts) it in otherwise.
void assign_parameter(at::Tensor& param, const at::Tensor& value);

/// Reads a lathe model file (or a directory holding one as model.safetensors, e.g. a
/// checkpoint), or a Hugging Face directory (config.json + model.safetensors) of
/// gpt2, llama or bert. `want`: the kind the caller needs (a BERT masked-LM or base directory
/// becomes a classifier with fresh head for BertClassifier; num_labels > 0 sets its classes).
/// Errors name the file. `read`: io::Read::Map makes the parameters views of the mapped file
/// where they are stored as the model keeps them (nothing copied, for inference: lathe generate).
/// Parameters a file holds are not initialized before they are read.
AnyModel load_model(const std::filesystem::path& path, std::optional<ModelKind> want = std::nullopt,
                    int64_t num_labels = 0, io::Read read = io::Read::Copy);

}  // namespace lathe::models
