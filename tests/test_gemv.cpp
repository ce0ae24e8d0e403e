// small_rows_linear (the decoding product of a few rows) against LibTorch's float32 at::linear:
// on bfloat16 values the only difference allowed is the final rounding to bfloat16 (and float
// sums in another order); on float32 values, float sums in another order.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "lathe/nn/gemv.hpp"

namespace {

/// |ours - reference| / (|reference| + 1): one bfloat16 rounding is at most 2^-8 relative, plus
/// float32 sums of a few thousand terms in another order.
double rel_err(const at::Tensor& ours, const at::Tensor& ref) {
  return ((ours.to(at::kFloat) - ref).abs() / (ref.abs() + 1)).max().item<double>();
}

/// The small-rows instruction sets this CPU has, each to be run under a GemvIsaCap.
std::vector<lathe::nn::GemvIsa> isas_here() {
  std::vector<lathe::nn::GemvIsa> isas{lathe::nn::GemvIsa::Avx512F};
  if (lathe::nn::gemv_isa() == lathe::nn::GemvIsa::Avx512Bf16) isas.push_back(lathe::nn::GemvIsa::Avx512Bf16);
  else WARN("no avx512_bf16 on this CPU: the bfloat16 dot-product and int4 kernels are not checked here");
  return isas;
}

const char* isa_name(lathe::nn::GemvIsa isa) {
  return isa == lathe::nn::GemvIsa::Avx512Bf16 ? "avx512_bf16" : "AVX-512F";
}

}  // namespace

TEST_CASE("nn: small-rows linear equals at::linear in float32 (bfloat16: up to the final rounding)", "[nn]") {
  if (!__builtin_cpu_supports("avx512f")) {
    WARN("no AVX-512 on this CPU: small_rows_linear declines every input (checked below)");
    torch::NoGradGuard no_grad;
    CHECK_FALSE(
        lathe::nn::small_rows_linear(at::ones({1, 16}, at::kBFloat16), at::ones({4, 16}, at::kBFloat16), {}).defined());
    return;
  }
  torch::NoGradGuard no_grad;
  at::manual_seed(5);
  // Each kernel this CPU has: the widening one, and avx512_bf16's dot product where it exists.
  for (auto isa : isas_here()) {
    const lathe::nn::GemvIsaCap cap(isa);
    // in: one block of 16 (the dot product's 32 do not divide it: the widening kernel), 48, one
    // dot block, 64 + a tail of 32, a 768-wide model, an MLP's 3072; out: odd counts.
    for (auto [in, out] :
         std::vector<std::pair<int64_t, int64_t>>{{16, 3}, {48, 97}, {32, 5}, {96, 33}, {768, 2305}, {3072, 768}}) {
      for (int64_t rows = 1; rows <= lathe::nn::kSmallRowsMax; ++rows) {
        for (bool with_bias : {false, true}) {
          INFO(isa_name(isa) << ": " << in << " -> " << out << ", " << rows << " rows, bias " << with_bias);
          const auto x = at::randn({rows, in}).to(at::kBFloat16);
          const auto w = (at::randn({out, in}) * 0.05).to(at::kBFloat16);
          const auto b = with_bias ? at::randn({out}).to(at::kBFloat16) : at::Tensor();
          const auto y = lathe::nn::small_rows_linear(x, w, b);
          REQUIRE(y.defined());
          CHECK(y.scalar_type() == at::kBFloat16);
          CHECK(y.sizes() == at::IntArrayRef({rows, out}));
          const auto ref = at::linear(x.to(at::kFloat), w.to(at::kFloat), with_bias ? b.to(at::kFloat) : at::Tensor());
          CHECK(rel_err(y, ref) <= 1.0 / 256 + 1e-5);
          const auto xf = x.to(at::kFloat) + at::randn({rows, in}) * 1e-3, wf = w.to(at::kFloat) + 1e-4;
          const auto bf = with_bias ? b.to(at::kFloat) : at::Tensor();
          const auto yf = lathe::nn::small_rows_linear(xf, wf, bf);
          REQUIRE(yf.defined());
          CHECK(yf.scalar_type() == at::kFloat);
          CHECK(rel_err(yf, at::linear(xf, wf, bf)) <= 1e-5);
        }
      }
    }
  }
  // Leading dimensions: (B, T, in) with B * T rows.
  const auto x3 = at::randn({2, 3, 64}).to(at::kBFloat16);
  const auto w3 = at::randn({40, 64}).to(at::kBFloat16);
  const auto y3 = lathe::nn::linear(x3, w3);
  CHECK(y3.sizes() == at::IntArrayRef({2, 3, 40}));
  CHECK(rel_err(y3, at::linear(x3.to(at::kFloat), w3.to(at::kFloat))) <= 1.0 / 256 + 1e-5);
}

TEST_CASE("nn: small-rows linear declines what it does not cover and at::linear runs instead", "[nn]") {
  const auto x = at::randn({1, 32}).to(at::kBFloat16), w = at::randn({8, 32}).to(at::kBFloat16);
  {
    torch::NoGradGuard no_grad;
    CHECK_FALSE(lathe::nn::small_rows_linear(x.to(at::kFloat).expand({2, 32}), w, {}).defined());      // mixed dtypes
    CHECK_FALSE(lathe::nn::small_rows_linear(at::randn({9, 32}).to(at::kBFloat16), w, {}).defined());  // 9 rows
    CHECK_FALSE(lathe::nn::small_rows_linear(x.narrow(1, 0, 24), w.narrow(1, 0, 24), {}).defined());   // in 24
    CHECK_FALSE(lathe::nn::small_rows_linear(x, at::randn({32, 8}).to(at::kBFloat16).t(), {}).defined());  // strided
    CHECK_FALSE(lathe::nn::small_rows_linear(x, w, at::zeros({8})).defined());  // float32 bias
  }
  // With gradients wanted it declines too: autograd goes through at::linear.
  auto wg = w.to(at::kFloat).requires_grad_(true);
  auto wb = wg.to(at::kBFloat16);
  CHECK_FALSE(lathe::nn::small_rows_linear(x, wb, {}).defined());
  auto y = lathe::nn::linear(x, wb);
  y.to(at::kFloat).sum().backward();
  REQUIRE(wg.grad().defined());
  CHECK((wg.grad() - x.to(at::kFloat).expand({8, 32})).abs().max().item<double>() == 0.0);
}

TEST_CASE("nn: small-rows int8 weight-only linear equals the float product of its codes and scales", "[nn]") {
  if (!__builtin_cpu_supports("avx512f")) {
    WARN("no AVX-512 on this CPU: small_rows_linear_int8 declines every input");
    return;
  }
  torch::NoGradGuard no_grad;
  at::manual_seed(6);
  for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{16, 5}, {768, 2305}}) {
    const auto codes = at::randint(-127, 128, {out, in}, at::kChar);
    const auto scales = at::rand({out}) * 0.01 + 1e-3;
    const auto bias = at::randn({out});
    // LibTorch's float product of the values the codes stand for.
    const auto values = codes.to(at::kFloat) * scales.unsqueeze(1);
    for (int64_t rows : {int64_t{1}, int64_t{3}, lathe::nn::kSmallRowsMax}) {
      INFO(in << " -> " << out << ", " << rows << " rows");
      const auto x = at::randn({rows, in});
      const auto yf = lathe::nn::small_rows_linear_int8(x, codes, scales, bias);
      REQUIRE(yf.defined());
      CHECK(yf.scalar_type() == at::kFloat);
      // The scale multiplies each row's sum here and each term in the reference: float32 sums of
      // `in` terms of up to 127 * scale each, in another order.
      CHECK(rel_err(yf, at::linear(x, values, bias)) <= 5e-5);
      const auto xb = x.to(at::kBFloat16);
      const auto yb = lathe::nn::small_rows_linear_int8(xb, codes, scales, bias.to(at::kBFloat16));
      REQUIRE(yb.defined());
      CHECK(yb.scalar_type() == at::kBFloat16);
      CHECK(rel_err(yb, at::linear(xb.to(at::kFloat), values, bias.to(at::kBFloat16).to(at::kFloat))) <=
            1.0 / 256 + 1e-5);
    }
  }
  const auto codes = at::zeros({4, 32}, at::kChar);
  CHECK_FALSE(lathe::nn::small_rows_linear_int8(at::randn({9, 32}), codes, at::ones({4}), {}).defined());  // 9 rows
  CHECK_FALSE(lathe::nn::small_rows_linear_int8(at::randn({1, 32}), codes, at::ones({4}, at::kDouble), {}).defined());
}

TEST_CASE("nn: small-rows int4 linear equals at::linear of the values its codes stand for", "[nn]") {
  torch::NoGradGuard no_grad;
  at::manual_seed(7);
  const auto values = [](const at::Tensor& q, const at::Tensor& scales, const at::Tensor& zeros, int64_t group) {
    // w = (q - 8) scale + zero, per group of inputs: the scheme's own definition.
    const int64_t out = q.size(0), in = q.size(1);
    const auto g = q.to(at::kFloat).view({out, in / group, group});
    return ((g - 8.0) * scales.unsqueeze(-1) + zeros.unsqueeze(-1)).view({out, in});
  };
  if (lathe::nn::gemv_isa() != lathe::nn::GemvIsa::Avx512Bf16) {
    WARN("no avx512_bf16 on this CPU: small_rows_int4_pack gives no form and ATen's int4 kernel runs");
    const auto q = at::randint(0, 16, {4, 128}, at::kByte);
    CHECK_FALSE(lathe::nn::small_rows_int4_pack(q, at::ones({4, 2}), at::zeros({4, 2}), 64).codes.defined());
    return;
  }
  // Every group the kernel takes (64 spans half a block of 128, 256 two blocks); one and 16 blocks.
  for (int64_t group : {64, 128, 256}) {
    for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{256, 7}, {2048, 129}}) {
      const auto q = at::randint(0, 16, {out, in}, at::kByte);
      const auto scales = at::rand({out, in / group}) * 0.01 + 1e-3;
      const auto zeros = at::randn({out, in / group}) * 0.01;
      const auto form = lathe::nn::small_rows_int4_pack(q, scales, zeros, group);
      REQUIRE(form.codes.defined());
      const auto w = values(q, scales, zeros, group);
      const auto bias = at::randn({out}).to(at::kBFloat16);
      for (int64_t rows = 1; rows <= lathe::nn::kSmallRowsMax; ++rows) {
        INFO("group " << group << ": " << in << " -> " << out << ", " << rows << " rows");
        const auto x = at::randn({rows, in}).to(at::kBFloat16);
        const auto y = lathe::nn::small_rows_linear_int4(x, form, bias);
        REQUIRE(y.defined());
        CHECK(y.scalar_type() == at::kBFloat16);
        CHECK(y.sizes() == at::IntArrayRef({rows, out}));
        // One bfloat16 rounding of the result, and float sums of (128 + q) x less 136 scale
        // times the group's sum of x: a few bits of float32 lost to the offset.
        CHECK(rel_err(y, at::linear(x.to(at::kFloat), w, bias.to(at::kFloat))) <= 1.0 / 256 + 1e-4);
        const auto y0 = lathe::nn::small_rows_linear_int4(x, form, {});
        CHECK(rel_err(y0, at::linear(x.to(at::kFloat), w)) <= 1.0 / 256 + 1e-4);
      }
    }
  }
  const auto q = at::randint(0, 16, {4, 128}, at::kByte);
  const auto s1 = at::ones({4, 2}), z1 = at::zeros({4, 2});
  CHECK_FALSE(lathe::nn::small_rows_int4_pack(q.narrow(1, 0, 64).contiguous(), at::ones({4, 1}), at::zeros({4, 1}), 64)
                  .codes.defined());  // in 64: not a whole block of 128
  CHECK_FALSE(lathe::nn::small_rows_int4_pack(q, at::ones({4, 4}), at::zeros({4, 4}), 32).codes.defined());  // group 32
  const auto q384 = at::randint(0, 16, {4, 384}, at::kByte);
  CHECK_FALSE(lathe::nn::small_rows_int4_pack(q384, at::ones({4, 2}), at::zeros({4, 2}), 192)
                  .codes.defined());  // 192: a block of 128 would span two groups
  CHECK_FALSE(lathe::nn::small_rows_int4_pack(q, at::ones({4, 3}), at::zeros({4, 3}), 64).codes.defined());  // scales
  const auto form = lathe::nn::small_rows_int4_pack(q, s1, z1, 64);
  REQUIRE(form.codes.defined());
  CHECK_FALSE(lathe::nn::small_rows_linear_int4(at::randn({1, 128}), form, {}).defined());  // float32 x
  CHECK_FALSE(lathe::nn::small_rows_linear_int4(at::randn({9, 128}).to(at::kBFloat16), form, {}).defined());  // 9 rows
  const lathe::nn::GemvIsaCap cap(lathe::nn::GemvIsa::Avx512F);
  CHECK_FALSE(lathe::nn::small_rows_linear_int4(at::randn({1, 128}).to(at::kBFloat16), form, {}).defined());  // capped
}
