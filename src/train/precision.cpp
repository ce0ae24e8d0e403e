// Autocast, fp16 loss scaling and the policy for non-finite steps.

#include "lathe/train/precision.hpp"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"

namespace lathe::train {
using recipe::Precision;

AutocastScope::AutocastScope(Precision p, const at::Device& device) : type_(device.type()) {
  if (p == Precision::Fp32) return;
  active_ = true;
  was_enabled_ = at::autocast::is_autocast_enabled(type_);
  was_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, recipe::scalar_type(p));
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  at::autocast::set_autocast_enabled(type_, was_enabled_);
  at::autocast::set_autocast_dtype(type_, was_dtype_);
  at::autocast::clear_cache();
}

void check_precision(const recipe::TrainConfig& tr, const at::Device& device, bool distributed, int world) {
  if (tr.precision == Precision::Fp16 && !device.is_cuda())
    throw Error("train.precision fp16 needs CUDA (dynamic loss scaling); use bf16 on the CPU");
  if (!tr.cuda_graphs) return;
  if (!device.is_cuda())
    throw Error("train.cuda_graphs needs a CUDA device, and this run is on " + device.str() +
                "; set train.cuda_graphs: false");
  if (distributed)
    throw Error(fmt::format("train.cuda_graphs: data-parallel training ({} ranks) reduces gradients during the "
                            "backward, outside any graph; set train.cuda_graphs: false",
                            world));
}

MixedPrecision::MixedPrecision(const recipe::TrainConfig& tr, at::Device device, std::filesystem::path checkpoints)
    : precision_(tr.precision), nan_policy_(tr.nan_policy), device_(device), checkpoints_(std::move(checkpoints)) {}

void MixedPrecision::begin_step(const TrainerState& state) {
  if (!loss_scaling()) return;
  if (!loss_scale_.defined()) loss_scale_ = at::empty({}, at::TensorOptions(device_).dtype(at::kFloat));
  loss_scale_.fill_(state.loss_scale);
}

at::Tensor MixedPrecision::scale(const at::Tensor& loss) const {
  return loss_scaling() ? loss * loss_scale_ : loss;
}

at::Tensor MixedPrecision::unscale(const std::vector<at::Tensor>& grads, const TrainerState& state) const {
  auto found_inf = at::zeros({1}, at::TensorOptions(device_).dtype(at::kFloat));
  if (loss_scaling()) {
    auto inv = at::full({1}, 1.0 / state.loss_scale, at::TensorOptions(device_).dtype(at::kFloat));
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv);
  }
  return found_inf;
}

std::optional<std::string> MixedPrecision::verdict(TrainerState& state, double loss, double grad_norm,
                                                   bool overflow) const {
  if (!std::isfinite(loss)) return non_finite(state, "loss", loss);
  if (loss_scaling()) {
    // An overflow is routine for fp16: it is not a bad step (skipped_steps), it is counted in
    // overflow_steps.
    if (overflow) {
      state.loss_scale *= 0.5;
      state.good_steps = 0;
      ++state.overflow_steps;
      return fmt::format("fp16 overflow, loss scale now {}", state.loss_scale);
    }
    if (++state.good_steps >= 2000) {
      state.loss_scale *= 2.0;
      state.good_steps = 0;
    }
  }
  if (!std::isfinite(grad_norm)) return non_finite(state, "gradient norm", grad_norm);
  return std::nullopt;
}

std::optional<std::string> MixedPrecision::non_finite(TrainerState& state, const std::string& what,
                                                      double value) const {
  if (nan_policy_ == recipe::NanPolicy::Error)
    throw Error(fmt::format("step {}: the {} is {} (train.nan_policy: error); lower optim.lr, keep optim.grad_clip "
                            "on, or set train.nan_policy: skip. Checkpoints already written are kept in {}",
                            state.step + 1, what, value, checkpoints_.string()));
  ++state.skipped_steps;
  return fmt::format("the {} is {} (train.nan_policy: skip)", what, value);
}

}  // namespace lathe::train
