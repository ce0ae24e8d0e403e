// Blockwise linear + cross-entropy whose gradients are formed block by block in the forward pass.

#include "lathe/nn/cross_entropy.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace lathe::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// The loss is a scalar at the end of the graph, so d loss / d logits is known in the forward
/// pass: (softmax - onehot(target)) * valid / count. Each block's logits are used for the loss
/// and at once for that block's contribution to the gradients of hidden, weight and bias, then
/// dropped; backward only scales the stored gradients by the incoming one. No logits are
/// recomputed and no (N, V) tensor ever exists.
struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& targets, int64_t block, int64_t ignore, double softcap) {
    const int64_t n = hidden.size(0);
    const bool has_bias = bias.numel() > 0;  // an empty tensor stands for none (inputs must be defined)
    const bool grad_h = hidden.requires_grad(), grad_w = weight.requires_grad(), grad_b = has_bias && bias.requires_grad();
    auto valid = targets.ne(ignore);
    auto safe = targets.masked_fill(valid.logical_not(), 0);
    auto count = valid.sum().to(at::kFloat).clamp_min(1.0);
    auto inv_count = count.reciprocal();
    auto total = at::zeros({}, hidden.options().dtype(at::kDouble));  // many blocks: sum in double
    at::Tensor gh = grad_h ? at::empty_like(hidden) : at::Tensor();
    at::Tensor gw = grad_w ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();
    at::Tensor gb = grad_b ? at::zeros(bias.sizes(), bias.options().dtype(at::kFloat)) : at::Tensor();
    // Blocks of equal size, at most `block` rows: no small remainder block, whose products run
    // far below the GEMM's rate.
    const int64_t blocks = std::max<int64_t>(1, (n + block - 1) / block);
    const int64_t rows = std::max<int64_t>(1, (n + blocks - 1) / blocks);
    for (int64_t r = 0; r < n; r += rows) {
      const int64_t m = std::min(rows, n - r);
      auto h = hidden.narrow(0, r, m);
      auto logits = has_bias ? at::linear(h, weight, bias) : at::linear(h, weight);  // (m, V), autocast's dtype when on
      const auto compute = logits.scalar_type();
      auto lf = logits.to(at::kFloat);
      logits = at::Tensor();
      at::Tensor capped;  // tanh(z / softcap): d capped-logit / dz = 1 - tanh^2
      if (softcap > 0) {
        capped = at::tanh(lf / softcap);
        lf = capped * softcap;
      }
      // log_softmax and softmax are ATen's own vectorised row kernels. at::logsumexp and
      // at::exp go through MKL's vector math instead, whose first call in a process, made by
      // two threads at once, sometimes rounds differently from every later call (measured: 8
      // processes in 150), which made a resumed run differ bitwise from an uninterrupted one.
      auto t = safe.narrow(0, r, m).unsqueeze(1);
      auto v = valid.narrow(0, r, m).to(at::kFloat);
      total.sub_((at::log_softmax(lf, 1).gather(1, t).squeeze(1) * v).sum(at::kDouble));
      if (!(grad_h || grad_w || grad_b)) continue;
      auto d = at::softmax(lf, 1);
      lf = at::Tensor();
      d.scatter_add_(1, t, at::full({m, 1}, -1.0, d.options()));
      d.mul_((v * inv_count).unsqueeze(1));
      if (softcap > 0) d.mul_(capped.square_().neg_().add_(1.0));  // in place: no more (m, V) temporaries
      auto dc = d.to(compute);
      // In float32 the products write into the gradients themselves (the weight's accumulates
      // over the blocks inside the GEMM); a reduced-precision product goes through a temporary
      // and is accumulated in float32.
      if (grad_h) {
        auto rows_of_gh = gh.narrow(0, r, m);
        if (compute == gh.scalar_type()) at::mm_out(rows_of_gh, dc, weight.to(compute));
        else rows_of_gh.copy_(at::mm(dc, weight.to(compute)));
      }
      if (grad_w) {
        if (compute == at::kFloat) gw.addmm_(dc.t(), h.to(compute));
        else gw.add_(at::mm(dc.t(), h.to(compute)));
      }
      if (grad_b) gb.add_(d.sum(0));
    }
    ctx->save_for_backward({gh, gw, gb});
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return (total / count.to(at::kDouble)).to(at::kFloat);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto g = grads[0];
    auto scaled = [&](const at::Tensor& t, at::ScalarType dtype) {
      return t.defined() ? (t * g.to(t.scalar_type())).to(dtype) : at::Tensor();
    };
    const auto wdtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    return {saved[0].defined() ? saved[0] * g.to(saved[0].scalar_type()) : at::Tensor(), scaled(saved[1], wdtype),
            scaled(saved[2], wdtype), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& targets, int64_t block_rows, int64_t ignore_index, double softcap) {
  if (hidden.dim() != 2 || weight.dim() != 2 || hidden.size(1) != weight.size(1) || targets.dim() != 1 ||
      targets.size(0) != hidden.size(0))
    throw std::invalid_argument("linear_cross_entropy: needs hidden (N, C), weight (V, C) and targets (N)");
  if (block_rows < 1) throw std::invalid_argument("linear_cross_entropy: block_rows must be >= 1");
  if (softcap < 0) throw std::invalid_argument("linear_cross_entropy: softcap must be >= 0");
  return LinearCrossEntropy::apply(hidden, weight, bias.defined() ? bias : at::empty({0}, weight.options()), targets,
                                   block_rows, ignore_index, softcap);
}

}  // namespace lathe::nn
