// Normalisation over the last dimension: LayerNorm (GPT-2, BERT) or RMSNorm (Llama-style).
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/enums.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::nn {

struct NormOptions {
  int64_t dim = 0;                                   // features normalised (the last dimension); required
  NormKind kind = NormKind::LayerNorm;               // layernorm or rmsnorm
  double eps = 1e-5;                                 // added to the variance (mean square for rmsnorm)
  bool bias = true;                                  // layernorm only: learn a shift besides the scale
  c10::Device device = c10::kCPU;                    // where the parameters are created
};

/// y = (x - mean) / sqrt(var + eps) * weight + bias   (layernorm)
/// y = x / sqrt(mean(x^2) + eps) * weight              (rmsnorm)
/// Parameters: `weight` (dim) initialised to 1, `bias` (dim) initialised to 0 when present.
class NormImpl : public torch::nn::Module, public ParameterRoles {
 public:
  explicit NormImpl(const NormOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim) -> (..., dim)
  void reset_parameters();

  NormOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without a bias
};
TORCH_MODULE(Norm);

}  // namespace lathe::nn
