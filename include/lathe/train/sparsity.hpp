// Pruning masks held through training.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "lathe/models/store.hpp"
#include "lathe/train/optimizer.hpp"

namespace lathe::train {

/// Parameters held sparse while training: an entry whose mask is false is zero in its weight
/// and stays exactly zero. The trainer zeroes its gradient before every update, and the weight
/// and its optimizer moments whenever the masks change, so neither the update nor weight decay
/// revives it. The masks travel in checkpoints (trainer.safetensors, "mask.<parameter>") and
/// come back on resume. A pruning schedule (gradual pruning) overrides `update`.
class Sparsity {
 public:
  virtual ~Sparsity() = default;
  /// Called before every step with the number of steps completed; returns true when it changed
  /// `masks` (the trainer then applies them to the weights and the optimizer state).
  virtual bool update(int64_t step, const models::AnyModel& model) {
    (void)step;
    (void)model;
    return false;
  }
  std::map<std::string, at::Tensor> masks;  // parameter name -> bool mask of its shape (true: kept)
};

/// Brings the weights and the optimizer state in line with the masks (after they change);
/// refuses a mask that names no parameter of `model` or has another shape.
void hold_masks(const Sparsity& sparsity, const models::AnyModel& model, Optimizer& optimizer);

/// Zeroes the gradients of the masked entries before an update: a pruned weight gets no
/// gradient, so no update and no moment.
void mask_gradients(const Sparsity& sparsity, const models::AnyModel& model);

}  // namespace lathe::train
