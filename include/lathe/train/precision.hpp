// Mixed precision in training: autocast for bf16 / fp16, fp16's dynamic loss scaling, and what
// a step whose loss or gradient is not finite does (train.nan_policy).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "lathe/recipe/recipe.hpp"
#include "lathe/train/checkpoint.hpp"

namespace lathe::train {

/// Autocast for bf16 / fp16 on the device type, restored on exit (nothing for fp32).
class AutocastScope {
 public:
  AutocastScope(recipe::Precision precision, const at::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType type_;
  bool active_ = false, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// Refuses the precision settings the device cannot run: fp16 (dynamic loss scaling) off CUDA,
/// train.cuda_graphs off CUDA or in a launched data-parallel job (`distributed`, even of one
/// rank: its gradients go through the communicator; `world` ranks). The recipe checks what it
/// can before this; a device of `auto` is known only here.
void check_precision(const recipe::TrainConfig& train, const at::Device& device, bool distributed, int world);

/// The precision policy of one training run. The step keeps the loss, the gradient norm and the
/// overflow flag on the device; after its one host read, verdict() decides whether the update
/// is applied.
class MixedPrecision {
 public:
  /// `checkpoints`: named by the error of nan_policy error (what is kept).
  MixedPrecision(const recipe::TrainConfig& train, at::Device device, std::filesystem::path checkpoints);

  recipe::Precision precision() const { return precision_; }
  bool loss_scaling() const { return precision_ == recipe::Precision::Fp16; }

  /// fp16: the scale of `state` into the device tensor that scale() reads (one tensor for the
  /// whole run, so that a captured micro-step reads each step's scale).
  void begin_step(const TrainerState& state);
  /// The loss to differentiate: `loss` times the loss scale (fp16), else `loss`.
  at::Tensor scale(const at::Tensor& loss) const;
  /// fp16: unscales `grads` in place; returns the overflow flag (1-element float tensor on the
  /// device, non-zero when a gradient is not finite), zero for the other precisions.
  at::Tensor unscale(const std::vector<at::Tensor>& grads, const TrainerState& state) const;

  /// After the step's host read: nullopt when the update is applied; otherwise why the step is
  /// skipped (counted in `state`: skipped_steps, or overflow_steps for an fp16 overflow, which
  /// halves the scale; 2000 clean fp16 steps double it, torch.amp.GradScaler's rule). A
  /// non-finite loss or gradient norm under nan_policy error throws, naming the step.
  std::optional<std::string> verdict(TrainerState& state, double loss, double grad_norm, bool overflow) const;

 private:
  std::optional<std::string> non_finite(TrainerState& state, const std::string& what, double value) const;

  recipe::Precision precision_;
  recipe::NanPolicy nan_policy_;
  at::Device device_;
  std::filesystem::path checkpoints_;
  at::Tensor loss_scale_;  // fp16: the scale on the device
};

}  // namespace lathe::train
