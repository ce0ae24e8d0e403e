// One transformer block: attention and MLP, each with a residual connection and a norm, in the
// pre-LN order (GPT-2, Llama) or the post-LN order (BERT).
#pragma once

#include <memory>

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
  /// Pre-LN with a norm on each branch's output too: x + norm_out(f(norm_in(x))) (Gemma 2).
  bool sandwich_norm = false;
};

/// Submodules: `ln_1`, `attn`, `ln_2`, `mlp`, and with sandwich norms `post_ln_1` (on the
/// attention's output) and `post_ln_2` (on the MLP's). In post-LN order ln_1 follows attention
/// and ln_2 follows the MLP.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(BlockOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx = {});  // (B, T, C)

  BlockOptions options;
  Norm ln_1{nullptr};
  Attention attn{nullptr};
  Norm ln_2{nullptr};
  Mlp mlp{nullptr};
  Norm post_ln_1{nullptr};
  Norm post_ln_2{nullptr};
};
TORCH_MODULE(Block);

/// How a model runs each of its blocks: activation checkpointing and sharded parameters wrap
/// the block's forward without the model knowing. A runner may hand the call on to `next`.
class BlockRunner {
 public:
  explicit BlockRunner(std::shared_ptr<BlockRunner> next = nullptr) : next_(std::move(next)) {}
  virtual ~BlockRunner() = default;
  /// Must give what block.forward(x, ctx) gives. `index` counts the model's blocks from 0.
  virtual torch::Tensor run(int64_t index, BlockImpl& block, const torch::Tensor& x, const AttentionContext& ctx) {
    return forward_next(index, block, x, ctx);
  }

 protected:
  torch::Tensor forward_next(int64_t index, BlockImpl& block, const torch::Tensor& x, const AttentionContext& ctx) {
    return next_ ? next_->run(index, block, x, ctx) : block.forward(x, ctx);
  }

 private:
  std::shared_ptr<BlockRunner> next_;
};

/// A model's stack of blocks (GPT's, BERT's encoder's), run through its runner when it has one.
class BlockStack {
 public:
  virtual ~BlockStack() = default;
  torch::Tensor run_block(int64_t index, BlockImpl& block, const torch::Tensor& x, const AttentionContext& ctx) {
    return runner_ ? runner_->run(index, block, x, ctx) : block.forward(x, ctx);
  }
  void set_runner(std::shared_ptr<BlockRunner> runner) { runner_ = std::move(runner); }
  const std::shared_ptr<BlockRunner>& runner() const { return runner_; }

 private:
  std::shared_ptr<BlockRunner> runner_;
};

/// Gives every block stack in `model` (itself or a submodule) the runner `runner` (null: run
/// blocks directly); returns how many stacks it found.
int set_block_runner(torch::nn::Module& model, const std::shared_ptr<BlockRunner>& runner);

}  // namespace lathe::nn
