// Activation checkpointing: a block keeps only its input in the forward and runs its forward
// again in the backward, with the random-number and autocast state of the first run, so that
// its dropout masks and its gradients are the same as without checkpointing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "lathe/nn/block.hpp"

namespace lathe::nn {

/// train.activation_checkpointing's spelling as a block interval: "none" -> 0, "blocks" -> 1,
/// "every_<n>" -> n (n >= 1: blocks 0, n, 2n, ... are checkpointed); nothing for anything else.
std::optional<int64_t> checkpoint_interval(std::string_view spelling);

/// y = fn(x), keeping `x` and not the intermediate tensors of `fn`; the backward runs `fn`
/// again from `x` (with grad, the CPU's and `x`'s device's generator state and the autocast
/// settings as they were) and back-propagates through it: the parameters `fn` uses receive
/// their gradients then. Without grad mode it is just fn(x). `fn` must not depend on state that
/// changes before the backward, other than the generators.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

/// Whether this thread is re-running a checkpointed block's forward inside the backward: the
/// block's backward follows at once (a runner gathering parameters keeps them for it).
bool in_recompute();

/// `y` as it is, whose backward first calls `fn` (once) and then passes the gradient on: what
/// must happen before the backward of the operations that made `y` (gathering the parameters
/// they use). Without grad, or when `y` needs none, `y` itself.
at::Tensor before_backward(const at::Tensor& y, std::function<void()> fn);

/// Checkpoints every `every`-th block (index % every == 0) while grad mode is on.
class CheckpointRunner : public BlockRunner {
 public:
  explicit CheckpointRunner(int64_t every, std::shared_ptr<BlockRunner> next = nullptr);
  torch::Tensor run(int64_t index, BlockImpl& block, const torch::Tensor& x, const AttentionContext& ctx) override;

 private:
  int64_t every_;
};

}  // namespace lathe::nn
