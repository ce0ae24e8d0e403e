// The feed-forward half of a transformer block.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/linear.hpp"

#include "lathe/nn/enums.hpp"

namespace lathe::nn {

struct MlpOptions {
  int64_t d_model = 0;                                     // input and output width; required
  int64_t d_ff = 0;                                        // hidden width; required
  Activation activation = Activation::GeluTanh;            // gelu_tanh, gelu (exact), swiglu, geglu, geglu_tanh
  bool bias = true;                                        // biases in both projections
  double dropout = 0.0;                                    // on the output, in training mode
  c10::Device device = c10::kCPU;                          // where the parameters are created
};

/// Parameters: `fc` (Role::NeuronBlock: its rows are the hidden neurons) and `proj`
/// (Role::ResidualProjection: its columns are the neurons).
/// gelu:   proj(act(fc(x)))
/// swiglu: proj(silu(gate(x)) * up(x)), with gate and up stacked in one matrix `fc`
///         ((2 * d_ff, d_model): rows [0, d_ff) are the gate, [d_ff, 2 * d_ff) the up projection).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const MlpOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, d_model) -> (B, T, d_model)

  MlpOptions options;
  Linear fc{nullptr};
  Linear proj{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace lathe::nn
