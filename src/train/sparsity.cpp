// Holding pruning masks through training.

#include "lathe/train/sparsity.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.hpp"

namespace lathe::train {

void hold_masks(const Sparsity& sparsity, const models::AnyModel& model, Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  auto params = model.module()->named_parameters();
  for (const auto& [name, mask] : sparsity.masks) {
    auto* p = params.find(name);
    if (!p) throw Error("a pruning mask names " + name + ", which the model does not have");
    if (p->sizes() != mask.sizes())
      throw Error(fmt::format("the pruning mask of {} has shape [{}], the parameter [{}]", name,
                              fmt::join(mask.sizes(), ", "), fmt::join(p->sizes(), ", ")));
    p->mul_(mask.to(p->device()));
  }
  optimizer.mask_state(sparsity.masks);
}

void mask_gradients(const Sparsity& sparsity, const models::AnyModel& model) {
  torch::NoGradGuard no_grad;
  auto params = model.module()->named_parameters();
  for (const auto& [name, mask] : sparsity.masks)
    if (auto* p = params.find(name); p && p->grad().defined()) p->grad().mul_(mask);
}

}  // namespace lathe::train
