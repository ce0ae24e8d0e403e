// Normalisation over the last dimension: LayerNorm (GPT-2, BERT) or RMSNorm (Llama-style, Gemma's).
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/enums.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::nn {

struct NormOptions {
  int64_t dim = 0;                                   // features normalised (the last dimension); required
  NormKind kind = NormKind::LayerNorm;               // layernorm, rmsnorm or rmsnorm_offset
  double eps = 1e-5;                                 // added to the variance (mean square for rmsnorm)
  bool bias = true;                                  // layernorm only: learn a shift besides the scale
  c10::Device device = c10::kCPU;                    // where the parameters are created
};

/// y = (x - mean) / sqrt(var + eps) * weight + bias   (layernorm)
/// y = x / sqrt(mean(x^2) + eps) * weight              (rmsnorm)
/// y = x / sqrt(mean(x^2) + eps) * (1 + weight)        (rmsnorm_offset)
/// Parameters: `weight` (dim) initialised to 1 (rmsnorm_offset: 0), `bias` (dim) initialised to 0
/// when present.
class NormImpl : public torch::nn::Module, public ParameterRoles {
 public:
  explicit NormImpl(const NormOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim) -> (..., dim)
  void reset_parameters();

  /// The value `weight` starts at: 0 for rmsnorm_offset, else 1.
  static double initial_weight(NormKind kind) { return kind == NormKind::RmsNormOffset ? 0.0 : 1.0; }

  NormOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without a bias
};
TORCH_MODULE(Norm);

}  // namespace lathe::nn
