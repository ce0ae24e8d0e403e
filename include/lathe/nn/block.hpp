// One transformer block: attention and MLP, each with a residual connection and a norm, in the
// pre-LN order (GPT-2, Llama) or the post-LN order (BERT).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/attention.hpp"
#include "lathe/nn/mlp.hpp"
#include "lathe/nn/norm.hpp"

namespace lathe::nn {

struct BlockOptions {
  AttentionOptions attention;
  MlpOptions mlp;
  NormOptions norm;       // dim and device are taken from attention
  bool pre_norm = true;   // pre-LN: x + f(norm(x)); post-LN: norm(x + f(x))
};

/// Submodules: `ln_1`, `attn`, `ln_2`, `mlp`. In post-LN order ln_1 follows attention and
/// ln_2 follows the MLP.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(BlockOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx = {});  // (B, T, C)

  BlockOptions options;
  Norm ln_1{nullptr};
  Attention attn{nullptr};
  Norm ln_2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace lathe::nn
