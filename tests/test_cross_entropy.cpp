// The blockwise linear cross-entropy against at::linear + at::cross_entropy_loss (LibTorch's own
// loss and autograd): loss and the gradients of the hidden states, the weight and the bias.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "lathe/nn/cross_entropy.hpp"

namespace {

/// Largest |difference| allowed between the blockwise loss / gradients and LibTorch's, float32:
/// the same sums in another order.
constexpr double kCeTol = 1e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("nn: blockwise linear cross-entropy equals at::cross_entropy on loss and gradients", "[nn][loss]") {
  torch::manual_seed(3);
  const int64_t n = 301, c = 48, v = 997;
  for (const bool with_bias : {false, true})
    for (const int64_t block : {1, 64, 128, 4096}) {
      auto h = (at::randn({n, c}) * 2).requires_grad_(true);
      auto w = (at::randn({v, c}) * 0.3).requires_grad_(true);
      auto b = with_bias ? (at::randn({v}) * 0.5).requires_grad_(true) : at::Tensor();
      auto t = at::randint(0, v, {n}, at::kLong);
      t.index_put_({at::arange(0, n, 7)}, -100);  // ignored rows

      auto ours = lathe::nn::linear_cross_entropy(h, w, b, t, block);
      std::vector<at::Tensor> inputs{h, w};
      if (with_bias) inputs.push_back(b);
      auto g_ours = torch::autograd::grad({ours * 1.7}, inputs);

      auto ref = at::cross_entropy_loss(at::linear(h, w, b), t);
      auto g_ref = torch::autograd::grad({ref * 1.7}, inputs);

      INFO("bias " << with_bias << ", block " << block);
      CHECK(std::abs(ours.item<double>() - ref.item<double>()) <= kCeTol);
      for (std::size_t i = 0; i < inputs.size(); ++i) CHECK(max_diff(g_ours[i], g_ref[i]) <= kCeTol);
    }
}

TEST_CASE("nn: blockwise linear cross-entropy with every row ignored is 0 with zero gradients", "[nn][loss]") {
  auto h = at::randn({5, 4}).requires_grad_(true);
  auto w = at::randn({9, 4}).requires_grad_(true);
  auto loss = lathe::nn::linear_cross_entropy(h, w, {}, at::full({5}, -100, at::kLong), 2);
  CHECK(loss.item<double>() == 0.0);
  loss.backward();
  CHECK(h.grad().abs().max().item<double>() == 0.0);
  CHECK(w.grad().abs().max().item<double>() == 0.0);
}

TEST_CASE("nn: blockwise linear cross-entropy of soft-capped logits equals at::cross_entropy of cap * tanh(z / cap)",
          "[nn][loss]") {
  torch::manual_seed(5);
  const int64_t n = 97, c = 24, v = 301;
  const double cap = 1.5;  // small against the logits (std ~3), so the cap bends most of them
  auto h = (at::randn({n, c}) * 2).requires_grad_(true);
  auto w = (at::randn({v, c}) * 0.3).requires_grad_(true);
  auto b = (at::randn({v}) * 0.5).requires_grad_(true);
  auto t = at::randint(0, v, {n}, at::kLong);
  t.index_put_({at::arange(0, n, 5)}, -100);
  auto ours = lathe::nn::linear_cross_entropy(h, w, b, t, 32, -100, cap);
  auto g_ours = torch::autograd::grad({ours}, {h, w, b});
  auto ref = at::cross_entropy_loss(at::tanh(at::linear(h, w, b) / cap) * cap, t);
  auto g_ref = torch::autograd::grad({ref}, {h, w, b});
  CHECK(std::abs(ours.item<double>() - ref.item<double>()) <= kCeTol);
  for (std::size_t i = 0; i < 3; ++i) CHECK(max_diff(g_ours[i], g_ref[i]) <= kCeTol);
  // The cap changes the loss: the test would pass for an implementation that ignored it otherwise.
  CHECK(std::abs(ours.item<double>() - at::cross_entropy_loss(at::linear(h, w, b), t).item<double>()) > 0.1);
}
