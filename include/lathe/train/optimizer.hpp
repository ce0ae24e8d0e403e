// AdamW (decoupled weight decay; the fused multi-tensor kernel at::_fused_adamw_ where the
// device has it) and SGD with momentum, over two parameter groups: with and without weight
// decay. The state is plain named tensors, saved in checkpoints as safetensors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "lathe/nn/roles.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::train {

/// Whether a parameter of `role` is decayed: matrices are; biases, norm scales and (unless
/// decay_embeddings) embedding tables are not.
bool decays(nn::Role role, bool decay_embeddings);

/// What the optimizer updates: a parameter, or (sharded optimizer) the part of one a rank owns.
/// The update reads `tensor.grad()` and writes `tensor` in place.
struct OptimizerSlot {
  std::string name;   // names its state: "exp_avg.<name>", ...
  at::Tensor tensor;
  bool decay = true;  // in the weight-decay group
};

class Optimizer {
 public:
  /// Every trainable parameter of `model`, grouped by its role (nn::roles_of).
  Optimizer(const torch::nn::Module& model, const recipe::OptimConfig& config);
  /// The given slots (the sharded optimizer's segments).
  Optimizer(std::vector<OptimizerSlot> slots, const recipe::OptimConfig& config);
  /// The slots of every trainable parameter of `model`, with decay by role.
  static std::vector<OptimizerSlot> slots_of(const torch::nn::Module& model, const recipe::OptimConfig& config);

  /// One update with learning rate `lr` from the gradients in .grad(); parameters without a
  /// gradient are left alone.
  void step(double lr);
  /// Drops every gradient (the next backward creates them afresh), or with `keep` zeroes them
  /// in place (their memory stays where a captured CUDA graph writes it).
  void zero_grad(bool keep = false);

  /// Global L2 norm of all gradients; scales them to `max_norm` when above it (max_norm > 0).
  /// Returns the norm before clipping as a 0-dim float tensor on the gradients' device: no host
  /// synchronisation (undefined when no parameter has a gradient).
  at::Tensor clip_grad_norm(double max_norm);
  /// The two halves of clip_grad_norm, for a norm summed over ranks in between: the sum of the
  /// squared gradients of the slots (0-dim float tensor; undefined when none has a gradient),
  /// and the clipping of every gradient to `max_norm` given the total norm.
  at::Tensor grad_norm_squared() const;
  void clip_to(const at::Tensor& total_norm, double max_norm);
  /// The slots' gradients (those defined).
  std::vector<at::Tensor> grads() const;

  /// State as named tensors ("exp_avg.<param>", "exp_avg_sq.<param>", "step.<param>",
  /// "momentum.<param>") and restoring it; restore checks names and shapes.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state, const std::string& file);
  /// Zeroes the state (moments, momentum) of the entries whose mask is false, so a pruned
  /// weight gets no update from history; `masks` maps parameter names to bool masks.
  void mask_state(const std::map<std::string, at::Tensor>& masks);

  /// Names of the parameters in the decay group (for reports and tests).
  std::vector<std::string> decayed_names() const;
  bool fused() const { return fused_; }

 private:
  struct Param {
    std::string name;
    at::Tensor p;
    bool decay = true;
    at::Tensor exp_avg, exp_avg_sq, step;  // adamw (step: the fused kernel's counter, on the device)
    at::Tensor momentum;                   // sgd
    int64_t steps = 0;                     // updates applied; the host's copy of `step`, never read back
  };
  void adamw(std::vector<Param*>& group, double lr, double weight_decay);
  void sgd(std::vector<Param*>& group, double lr, double weight_decay);

  recipe::OptimConfig config_;
  std::vector<Param> params_;
  bool fused_ = false;
};

}  // namespace lathe::train
