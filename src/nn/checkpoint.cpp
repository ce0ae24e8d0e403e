// Activation checkpointing as a node of the autograd graph that re-runs its forward.

#include "lathe/nn/checkpoint.hpp"

#include <mutex>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

namespace lathe::nn {

std::optional<int64_t> checkpoint_interval(std::string_view s) {
  if (s == "none") return 0;
  if (s == "blocks") return 1;
  constexpr std::string_view prefix = "every_";
  if (!s.starts_with(prefix) || s.size() == prefix.size() || s.size() > prefix.size() + 9) return std::nullopt;
  int64_t n = 0;
  for (char c : s.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n < 1) return std::nullopt;
  return n;
}

namespace {

thread_local int recomputing = 0;  // CheckpointBackward re-runs in progress on this thread

/// The generators a block's randomness draws from: the CPU's and, for a CUDA input, its GPU's.
struct RngState {
  at::Tensor cpu;
  std::optional<at::Device> device;
  at::Tensor on_device;

  static RngState take(const at::Device& device) {
    RngState s;
    auto cpu = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard lock(cpu.mutex());
      s.cpu = cpu.get_state();
    }
    if (device.is_cuda()) {
      auto gen = at::globalContext().defaultGenerator(device);
      std::lock_guard lock(gen.mutex());
      s.device = device;
      s.on_device = gen.get_state();
    }
    return s;
  }
  void restore() const {
    auto cpu = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard lock(cpu.mutex());
      cpu.set_state(this->cpu);
    }
    if (device) {
      auto gen = at::globalContext().defaultGenerator(*device);
      std::lock_guard lock(gen.mutex());
      gen.set_state(on_device);
    }
  }
};

/// The autocast settings of the device types lathe trains on, taken and set again.
struct AutocastState {
  struct One {
    at::DeviceType type;
    bool enabled;
    at::ScalarType dtype;
  };
  std::vector<One> types;

  static AutocastState take() {
    AutocastState s;
    for (auto t : {at::kCPU, at::kCUDA})
      s.types.push_back({t, at::autocast::is_autocast_enabled(t), at::autocast::get_autocast_dtype(t)});
    return s;
  }
  void apply() const {
    for (const auto& o : types) {
      at::autocast::set_autocast_enabled(o.type, o.enabled);
      at::autocast::set_autocast_dtype(o.type, o.dtype);
    }
  }
};

class CheckpointBackward : public torch::autograd::Node {
 public:
  CheckpointBackward(std::function<at::Tensor(const at::Tensor&)> fn, at::Tensor input, RngState rng,
                     AutocastState autocast)
      : fn_(std::move(fn)), input_(std::move(input)), rng_(std::move(rng)), autocast_(std::move(autocast)) {}

  std::string name() const override { return "lathe::CheckpointBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    if (!fn_) throw std::logic_error("activation checkpointing: the block's backward ran twice (retain_graph)");
    const bool wants_input_grad = input_.requires_grad();
    auto x = input_.detach();
    x.requires_grad_(wants_input_grad);
    at::Tensor y;
    {
      // The forward again, as it ran: its generators' state (dropout draws the same masks) and
      // autocast's settings; the generators then continue from where the backward found them.
      const auto now_rng = RngState::take(x.device());
      const auto now_autocast = AutocastState::take();
      rng_.restore();
      autocast_.apply();
      at::AutoGradMode grad(true);
      ++recomputing;
      try {
        y = fn_(x);
      } catch (...) {
        --recomputing;
        now_rng.restore();
        now_autocast.apply();
        at::autocast::clear_cache();
        throw;
      }
      --recomputing;
      now_rng.restore();
      now_autocast.apply();
      at::autocast::clear_cache();
    }
    if (grads[0].defined() && y.requires_grad()) torch::autograd::backward({y}, {grads[0]});
    release_variables();
    return {wants_input_grad ? x.grad() : at::Tensor()};
  }

  void release_variables() override {
    fn_ = nullptr;
    input_.reset();
  }

 private:
  std::function<at::Tensor(const at::Tensor&)> fn_;
  at::Tensor input_;
  RngState rng_;
  AutocastState autocast_;
};

class BeforeBackward : public torch::autograd::Node {
 public:
  explicit BeforeBackward(std::function<void()> fn) : fn_(std::move(fn)) {}
  std::string name() const override { return "lathe::BeforeBackward"; }
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    if (fn_) {
      auto fn = std::move(fn_);
      fn_ = nullptr;
      fn();
    }
    return {grads[0]};
  }
  void release_variables() override { fn_ = nullptr; }

 private:
  std::function<void()> fn_;
};

}  // namespace

bool in_recompute() { return recomputing > 0; }

at::Tensor before_backward(const at::Tensor& y, std::function<void()> fn) {
  if (!at::GradMode::is_enabled() || !y.requires_grad()) return y;
  auto out = y.detach();
  auto node = std::shared_ptr<BeforeBackward>(new BeforeBackward(std::move(fn)), torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(y));
  torch::autograd::create_gradient_edge(out, std::move(node));
  return out;
}

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return fn(x);
  auto rng = RngState::take(x.device());
  auto autocast = AutocastState::take();
  at::Tensor y;
  {
    at::NoGradGuard no_grad;
    y = fn(x);
  }
  // The input as the backward will see it: a leaf-like handle on the same values whose
  // requires_grad says whether a gradient flows back to it.
  auto saved = x.detach();
  saved.requires_grad_(x.requires_grad());
  auto node = std::shared_ptr<CheckpointBackward>(
      new CheckpointBackward(fn, std::move(saved), std::move(rng), std::move(autocast)), torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(x));
  torch::autograd::create_gradient_edge(y, std::move(node));
  return y;
}

CheckpointRunner::CheckpointRunner(int64_t every, std::shared_ptr<BlockRunner> next)
    : BlockRunner(std::move(next)), every_(every) {
  if (every < 1) throw std::invalid_argument("CheckpointRunner: the interval must be at least 1");
}

torch::Tensor CheckpointRunner::run(int64_t index, BlockImpl& block, const torch::Tensor& x,
                                    const AttentionContext& ctx) {
  if (index % every_ != 0 || !at::GradMode::is_enabled() || ctx.cache) return forward_next(index, block, x, ctx);
  // The context's tables outlive this call: the backward needs them.
  AttentionContext kept = ctx;
  std::shared_ptr<RotaryTables> rotary;
  if (ctx.rotary) {
    rotary = std::make_shared<RotaryTables>(*ctx.rotary);
    kept.rotary = rotary.get();
  }
  return checkpointed(
      [this, index, &block, kept, rotary](const at::Tensor& input) { return forward_next(index, block, input, kept); },
      x);
}

}  // namespace lathe::nn
