// AdamW and SGD over decay / no-decay groups.

#include "lathe/train/optimizer.hpp"

#include <cmath>

#include <ATen/ATen.h>

#include "lathe/core/error.hpp"

namespace lathe::train {

bool decays(nn::Role role, bool decay_embeddings) {
  // Adapters are decayed as the Hugging Face Trainer that PEFT and TRL train with decays them.
  return nn::is_matrix(role) || role == nn::Role::Adapter || (decay_embeddings && role == nn::Role::Embedding);
}

std::vector<OptimizerSlot> Optimizer::slots_of(const torch::nn::Module& model, const recipe::OptimConfig& config) {
  std::vector<OptimizerSlot> slots;
  for (const auto& item : nn::roles_of(model))
    if (item.tensor.requires_grad()) slots.push_back({item.name, item.tensor, decays(item.role, config.decay_embeddings)});
  return slots;
}

Optimizer::Optimizer(const torch::nn::Module& model, const recipe::OptimConfig& config)
    : Optimizer(slots_of(model, config), config) {}

Optimizer::Optimizer(std::vector<OptimizerSlot> slots, const recipe::OptimConfig& config) : config_(config) {
  for (auto& slot : slots) {
    Param p{std::move(slot.name), slot.tensor, slot.decay, {}, {}, {}, {}};
    if (config.name == recipe::Optimizer::AdamW) {
      p.exp_avg = at::zeros_like(p.p, at::MemoryFormat::Contiguous);
      p.exp_avg_sq = at::zeros_like(p.p, at::MemoryFormat::Contiguous);
      // Fused kernels keep the step count as a float tensor on the parameter's device.
      p.step = at::zeros({}, p.p.options().dtype(at::kFloat));
    } else if (config.momentum > 0) {
      p.momentum = at::zeros_like(p.p, at::MemoryFormat::Contiguous);
    }
    params_.push_back(std::move(p));
  }
  if (params_.empty()) throw Error("optimizer: the model has no trainable parameters");
  // at::_fused_adamw_ exists for CPU and CUDA tensors of float, half and bfloat16.
  const auto dev = params_.front().p.device();
  fused_ = config.name == recipe::Optimizer::AdamW && config.fused && (dev.is_cpu() || dev.is_cuda());
}

void Optimizer::zero_grad(bool keep) {
  // Dropping the gradients (rather than zeroing them) lets the next backward write them
  // directly instead of adding to zeros.
  if (!keep) {
    for (auto& p : params_) p.p.mutable_grad().reset();
    return;
  }
  std::vector<at::Tensor> defined;
  for (auto& p : params_)
    if (p.p.grad().defined()) defined.push_back(p.p.mutable_grad());
  if (!defined.empty()) at::_foreach_zero_(defined);
}

std::vector<at::Tensor> Optimizer::grads() const {
  std::vector<at::Tensor> grads;
  for (const auto& p : params_)
    if (p.p.grad().defined()) grads.push_back(p.p.grad());
  return grads;
}

at::Tensor Optimizer::grad_norm_squared() const {
  const auto grads = this->grads();
  if (grads.empty()) return {};
  // torch.nn.utils.clip_grad_norm_'s arithmetic: per-tensor norms, then the norm of those.
  auto norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  return norm * norm;
}

void Optimizer::clip_to(const at::Tensor& total, double max_norm) {
  if (max_norm <= 0) return;
  auto grads = this->grads();
  if (grads.empty()) return;
  // A coefficient clamped at 1 multiplies every gradient, as in clip_grad_norm_.
  auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
  at::_foreach_mul_(grads, coef);
}

at::Tensor Optimizer::clip_grad_norm(double max_norm) {
  const auto grads = this->grads();
  if (grads.empty()) return {};
  auto total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  clip_to(total, max_norm);
  return total;
}

void Optimizer::step(double lr) {
  std::vector<Param*> decay, no_decay;
  for (auto& p : params_) {
    if (!p.p.grad().defined()) continue;
    (p.decay ? decay : no_decay).push_back(&p);
  }
  torch::NoGradGuard no_grad;
  if (config_.name == recipe::Optimizer::AdamW) {
    adamw(decay, lr, config_.weight_decay);
    adamw(no_decay, lr, 0.0);
  } else {
    sgd(decay, lr, config_.weight_decay);
    sgd(no_decay, lr, 0.0);
  }
}

void Optimizer::adamw(std::vector<Param*>& group, double lr, double wd) {
  if (group.empty()) return;
  const double b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  if (fused_) {
    std::vector<at::Tensor> ps, gs, m, v, steps;
    for (auto* p : group) {
      ps.push_back(p->p);
      gs.push_back(p->p.grad());
      m.push_back(p->exp_avg);
      v.push_back(p->exp_avg_sq);
      steps.push_back(p->step);
    }
    at::_foreach_add_(steps, 1.0);
    for (auto* p : group) ++p->steps;
    at::_fused_adamw_(ps, gs, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, b1, b2, wd, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
    return;
  }
  for (auto* p : group) {
    auto g = p->p.grad();
    p->step.add_(1.0);
    const auto t = static_cast<double>(++p->steps);
    p->p.mul_(1.0 - lr * wd);
    p->exp_avg.lerp_(g, 1.0 - b1);
    p->exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
    const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
    auto denom = (p->exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(eps);
    p->p.addcdiv_(p->exp_avg, denom, -lr / bc1);
  }
}

void Optimizer::sgd(std::vector<Param*>& group, double lr, double wd) {
  for (auto* p : group) {
    auto g = p->p.grad();
    if (wd > 0) p->p.mul_(1.0 - lr * wd);  // decoupled, as for AdamW
    if (p->momentum.defined()) {
      // PyTorch's convention: the first step's buffer is the gradient itself.
      if (p->steps > 0) p->momentum.mul_(config_.momentum).add_(g);
      else p->momentum.copy_(g);
      if (!p->step.defined()) p->step = at::zeros({}, p->p.options().dtype(at::kFloat));
      p->step.add_(1.0);
      ++p->steps;
      g = config_.nesterov ? g.add(p->momentum, config_.momentum) : p->momentum;
    }
    p->p.add_(g, -lr);
  }
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : params_) {
    if (p.exp_avg.defined()) out.emplace_back("exp_avg." + p.name, p.exp_avg);
    if (p.exp_avg_sq.defined()) out.emplace_back("exp_avg_sq." + p.name, p.exp_avg_sq);
    if (p.momentum.defined()) out.emplace_back("momentum." + p.name, p.momentum);
    if (p.step.defined()) out.emplace_back("step." + p.name, p.step.reshape({1}));
  }
  return out;
}

void Optimizer::mask_state(const std::map<std::string, at::Tensor>& masks) {
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    auto it = masks.find(p.name);
    if (it == masks.end()) continue;
    const auto keep = it->second.to(p.p.device());
    for (auto* t : {&p.exp_avg, &p.exp_avg_sq, &p.momentum})
      if (t->defined()) t->mul_(keep);
  }
}

void Optimizer::load_state(const std::map<std::string, at::Tensor>& state, const std::string& file) {
  std::vector<std::string> problems;
  auto take = [&](const std::string& key, at::Tensor& into, bool required) {
    auto it = state.find(key);
    if (it == state.end()) {
      if (required) problems.push_back("missing " + key);
      return;
    }
    auto value = it->second;
    if (key.starts_with("step.")) value = value.reshape({});
    if (value.sizes() != into.sizes()) {
      problems.push_back(key + " has the wrong shape");
      return;
    }
    into.copy_(value);  // onto the parameter's device
  };
  auto count = [&](Param& p) { p.steps = p.step.defined() ? static_cast<int64_t>(p.step.item<double>()) : 0; };
  for (auto& p : params_) {
    if (config_.name == recipe::Optimizer::AdamW) {
      take("exp_avg." + p.name, p.exp_avg, true);
      take("exp_avg_sq." + p.name, p.exp_avg_sq, true);
      take("step." + p.name, p.step, true);
      count(p);
    } else if (p.momentum.defined()) {
      take("momentum." + p.name, p.momentum, true);
      if (state.count("step." + p.name)) {
        p.step = at::zeros({}, p.p.options().dtype(at::kFloat));
        take("step." + p.name, p.step, true);
      }
      count(p);
    }
  }
  if (!problems.empty()) {
    std::string msg = file + ": optimizer state does not match the model:";
    for (std::size_t i = 0; i < problems.size() && i < 10; ++i) msg += "\n  " + problems[i];
    if (problems.size() > 10) msg += "\n  ... and " + std::to_string(problems.size() - 10) + " more";
    throw Error(msg);
  }
}

std::vector<std::string> Optimizer::decayed_names() const {
  std::vector<std::string> out;
  for (const auto& p : params_)
    if (p.decay) out.push_back(p.name);
  return out;
}

}  // namespace lathe::train
