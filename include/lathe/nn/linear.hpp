// Linear and embedding layers whose parameters can be created on any device, including `meta`
// (shapes without storage: parameter counts of large presets cost nothing).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/lora.hpp"
#include "lathe/nn/quantized.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::nn {

struct LinearOptions {
  int64_t in = 0;                 // input features; required
  int64_t out = 0;                // output features; required
  bool bias = true;               // learn an additive bias
  c10::Device device = c10::kCPU; // where the parameters are created
  Role role = Role::Matrix;       // the weight's role (the bias is a Bias)
};

/// y = x W^T + b with `weight` (out, in) ~ N(0, 0.02) and `bias` (out) = 0 (models re-initialise).
/// A quantized Linear holds its weight as a QuantizedWeight instead: `weight` is then undefined
/// (no longer a parameter) and the product runs on the scheme's integer kernel (its gradient
/// with respect to the input goes through the dequantized weight, for QLoRA).
/// A Linear may carry a low-rank adapter (child module `lora`), whose update it adds to its
/// product unless adapters are disabled (nn::AdaptersDisabledGuard).
class LinearImpl : public torch::nn::Module, public ParameterRoles {
 public:
  explicit LinearImpl(const LinearOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., in) -> (..., out)

  /// Replaces the float weight by `q` (of the same shape); the bias stays a float parameter.
  void quantize(QuantizedWeight q);
  /// The quantized weight; null while the weight is float.
  const QuantizedWeight* quantized() const { return quantized_.get(); }
  /// Makes the weight a float parameter again, holding the values the quantized weight stands
  /// for (a no-op for a float layer).
  void dequantize();

  /// Gives the layer an adapter of `options` (in and out are the layer's); throws
  /// std::logic_error when it has one.
  void add_adapter(LoraOptions options);
  /// Adds the adapter's update into the weight (a quantized weight is dequantized first: the
  /// merged layer is float) and removes the adapter; a no-op without one.
  void merge_adapter();
  /// Removes the adapter, leaving the weight as it is.
  void remove_adapter();

  LinearOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without a bias
  Lora lora{nullptr};  // the adapter, or none
  /// Called with every input before the product (calibration statistics for pruning and
  /// quantization, e.g. per-feature input norms); unset: nothing.
  std::function<void(const torch::Tensor&)> input_observer;

 private:
  std::shared_ptr<const QuantizedWeight> quantized_;
};
TORCH_MODULE(Linear);

/// Every Linear below `model`, by module path, in registration (forward) order.
std::vector<std::pair<std::string, LinearImpl*>> linear_layers(const torch::nn::Module& model);

struct EmbeddingOptions {
  int64_t count = 0;              // rows (vocabulary, positions or segments); required
  int64_t dim = 0;                // width of a row; required
  int64_t padding_idx = -1;       // row whose gradient stays zero (BERT's [PAD]); -1: none
  c10::Device device = c10::kCPU; // where the table is created
};

/// Table lookup with `weight` (count, dim) ~ N(0, 0.02); the padding row starts at zero.
class EmbeddingImpl : public torch::nn::Module, public ParameterRoles {
 public:
  explicit EmbeddingImpl(const EmbeddingOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);  // (...) int64 -> (..., dim)

  EmbeddingOptions options;
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

}  // namespace lathe::nn
