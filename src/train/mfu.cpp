// The device's measured matmul peak and the model's FLOPs per token.

#include "lathe/train/mfu.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "lathe/nn/roles.hpp"

namespace lathe::train {
using Clock = std::chrono::steady_clock;
using recipe::Precision;

double measure_peak_flops(const at::Device& device, Precision p) {
  const int64_t n = device.is_cuda() ? 4096 : 1024;
  const auto dtype = recipe::scalar_type(p);
  torch::NoGradGuard no_grad;
  // Constant operands: the throughput does not depend on the values, and the global random
  // streams (dropout, resume) stay untouched.
  auto a = at::full({n, n}, 0.5, at::TensorOptions(device).dtype(dtype));
  auto b = at::full({n, n}, 0.25, at::TensorOptions(device).dtype(dtype));
  auto sync = [&] {
    if (device.is_cuda()) (void)a.sum().item<float>();
  };
  std::vector<std::function<at::Tensor()>> kernels{[&] { return at::linear(a, b); }};
  // On the CPU, reduced-precision at::mm takes a slow reference path no training step uses.
  if (device.is_cuda() || p == Precision::Fp32) kernels.push_back([&] { return at::mm(a, b); });
  const int reps = device.is_cuda() ? 10 : 3;
  double best = std::numeric_limits<double>::infinity();
  for (const auto& kernel : kernels) {
    kernel();
    sync();
    for (int i = 0; i < reps; ++i) {
      const auto t0 = Clock::now();
      kernel();
      sync();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  return 2.0 * static_cast<double>(n * n * n) / std::max(best, 1e-9);
}

double flops_per_token(const models::AnyModel& m, int64_t seq_len) {
  // 6 per trainable weight (the product, and the gradients of its input and of itself); 4 per
  // frozen one (a base under adapters, quantized weights: no gradient of its own).
  int64_t trained = 0, frozen = 0;
  for (const auto& p : nn::roles_of(*m.module()))
    if (p.role != nn::Role::Embedding) (p.tensor.requires_grad() ? trained : frozen) += p.tensor.numel();
  for (const auto& [path, q] : models::quantized_layers(m)) frozen += q->out() * q->in();
  const auto& o = m.options();
  return 6.0 * static_cast<double>(trained) + 4.0 * static_cast<double>(frozen) +
         12.0 * static_cast<double>(o.n_layer * seq_len * o.d_model);
}

}  // namespace lathe::train
