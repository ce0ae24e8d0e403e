// The small-rows products: every weight streamed once, one row after the other, accumulated in
// float (float32 and int8 widened to float; bfloat16 and int4 by avx512_bf16's dot product).
//
// Built with -fopenmp and without the precompiled header (CMakeLists.txt): at::parallel_for's
// OpenMP body is compiled into the caller, so without -fopenmp it would run on one thread.

#include "lathe/nn/gemv.hpp"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIndexing.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/BFloat16.h>

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

// GCC 12 reports the intrinsics' own _mm512_undefined_* / _mm256_undefined_* operands as
// (maybe-)uninitialized when they are inlined into a target("avx512f") function.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace lathe::nn {
namespace {

/// Sixteen weights as floats: float32; bfloat16 (the high half of a float); int8 codes.
template <class W>
__attribute__((target("avx512f"))) inline __m512 load16(const W* p) {
  if constexpr (std::is_same_v<W, float>) {
    return _mm512_loadu_ps(p);
  } else if constexpr (std::is_same_v<W, int8_t>) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
}

/// float32, or bfloat16 as its bits.
template <class Y>
float to_float(Y v) {
  if constexpr (std::is_same_v<Y, float>) return v;
  else return static_cast<float>(c10::BFloat16(v, c10::BFloat16::from_bits()));
}

template <class Y>
Y from_float(float v) {
  if constexpr (std::is_same_v<Y, float>) return v;
  else return c10::BFloat16(v).x;  // round to nearest even
}

/// One product: x (rows of `in` floats), w (out, in) of W, optional per-row scales (int8
/// codes), optional bias and the output of Y.
template <class W, class Y>
struct Product {
  const float* x;
  const W* w;
  const float* scale;  // null: none
  const Y* b;          // null: none
  Y* y;
  int64_t in, out;
};

/// y[m][o] = the sum of `acc`'s lanes, times scale[o], plus b[o].
template <class W, class Y>
__attribute__((target("avx512f"))) inline void finish(const Product<W, Y>& p, int64_t o, int m, __m512 acc) {
  float s = _mm512_reduce_add_ps(acc);
  if (p.scale) s *= p.scale[o];
  if (p.b) s += to_float(p.b[o]);
  p.y[m * p.out + o] = from_float<Y>(s);
}

/// Output rows [o0, o1) of the product for M rows of x. `in` is a multiple of 16 (the caller
/// checks). One weight row at a time, front to back: the matrix is one sequential stream, which
/// the hardware prefetcher follows best (two rows interleaved, with software prefetches, streamed
/// about a quarter slower on one core here). Two accumulators per row of x: independent chains.
template <class W, class Y, int M>
__attribute__((target("avx512f"))) void rows_kernel(const Product<W, Y>& p, int64_t o0, int64_t o1) {
  const int64_t in = p.in;
  const float* x = p.x;
  for (int64_t o = o0; o < o1; ++o) {
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    const W* w = p.w + o * in;
    int64_t k = 0;
    for (; k + 64 <= in; k += 64) {
      const __m512 a = load16(w + k), c = load16(w + k + 16), d = load16(w + k + 32), e = load16(w + k + 48);
      for (int m = 0; m < M; ++m) {
        acc0[m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + m * in + k), acc0[m]);
        acc1[m] = _mm512_fmadd_ps(c, _mm512_loadu_ps(x + m * in + k + 16), acc1[m]);
        acc0[m] = _mm512_fmadd_ps(d, _mm512_loadu_ps(x + m * in + k + 32), acc0[m]);
        acc1[m] = _mm512_fmadd_ps(e, _mm512_loadu_ps(x + m * in + k + 48), acc1[m]);
      }
    }
    for (; k < in; k += 16) {
      const __m512 a = load16(w + k);
      for (int m = 0; m < M; ++m) acc0[m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + m * in + k), acc0[m]);
    }
    for (int m = 0; m < M; ++m) finish(p, o, m, _mm512_add_ps(acc0[m], acc1[m]));
  }
}

template <class W, class Y>
using Kernel = void (*)(const Product<W, Y>&, int64_t, int64_t);

template <class W, class Y, int... Ms>
Kernel<W, Y> pick(int64_t rows, std::integer_sequence<int, Ms...>) {
  Kernel<W, Y> k = nullptr;
  ((rows == Ms + 1 ? (k = &rows_kernel<W, Y, Ms + 1>, 0) : 0), ...);
  return k;
}

// --- bfloat16 x and weights: avx512_bf16's dot product of pairs ------------------------------

/// x (rows, in) and w (out, in) bfloat16 as bits, optional bias, y bfloat16.
struct DotProduct {
  const uint16_t* x;
  const uint16_t* w;
  const uint16_t* b;  // null: none
  uint16_t* y;
  int64_t in, out;
};

#define LATHE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

LATHE_BF16_TARGET inline __m512bh load32bh(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }

/// y[m][o] of a DotProduct from `acc`'s lanes.
LATHE_BF16_TARGET inline void finish_dot(const DotProduct& p, int64_t o, int m, __m512 acc) {
  float s = _mm512_reduce_add_ps(acc);
  if (p.b) s += to_float(p.b[o]);
  p.y[m * p.out + o] = from_float<uint16_t>(s);
}

/// Output rows [o0, o1) for M rows of x, 32 weights an instruction (`in` a multiple of 32), one
/// weight row at a time as in rows_kernel. The products of bfloat16 pairs are exact in float;
/// the sums are float, as in rows_kernel.
template <int M>
LATHE_BF16_TARGET void dot_kernel(const DotProduct& p, int64_t o0, int64_t o1) {
  const int64_t in = p.in;
  for (int64_t o = o0; o < o1; ++o) {
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    const uint16_t* w = p.w + o * in;
    int64_t k = 0;
    for (; k + 64 <= in; k += 64) {
      const __m512bh a = load32bh(w + k), c = load32bh(w + k + 32);
      for (int m = 0; m < M; ++m) {
        acc0[m] = _mm512_dpbf16_ps(acc0[m], a, load32bh(p.x + m * in + k));
        acc1[m] = _mm512_dpbf16_ps(acc1[m], c, load32bh(p.x + m * in + k + 32));
      }
    }
    if (k < in) {
      const __m512bh a = load32bh(w + k);
      for (int m = 0; m < M; ++m) acc0[m] = _mm512_dpbf16_ps(acc0[m], a, load32bh(p.x + m * in + k));
    }
    for (int m = 0; m < M; ++m) finish_dot(p, o, m, _mm512_add_ps(acc0[m], acc1[m]));
  }
}

// --- int4 codes (SmallRowsInt4) with bfloat16 x -------------------------------------------

struct Int4Product {
  const uint16_t* x;    // (rows, in) bfloat16
  const uint8_t* w;     // (out, in / 2), SmallRowsInt4's layout
  const float* scale;   // (out, groups)
  const float* offset;  // (out, groups)
  const float* xsum;    // (rows, groups): each group's sum of x
  const uint16_t* b;    // null: none
  uint16_t* y;
  int64_t in, out, group;
};

/// A block's 128 codes as four vectors of 32 bfloat16 values 128 + q: nibble i of each 16-bit
/// lane, or-ed into the bits of 128.0 (0x4300), whose last mantissa bit is worth 1. No
/// conversion and no shuffle: shifts and one ternary-logic instruction per vector.
LATHE_BF16_TARGET inline void int4_block(const uint8_t* p, __m512bh n[4]) {
  const __m512i v = _mm512_loadu_si512(p);
  const __m512i nibble = _mm512_set1_epi16(0x000F), bits128 = _mm512_set1_epi16(0x4300);
  // (a & b) | c in one instruction: the truth table 0xEA.
  n[0] = (__m512bh)_mm512_ternarylogic_epi32(v, nibble, bits128, 0xEA);
  n[1] = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 4), nibble, bits128, 0xEA);
  n[2] = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 8), nibble, bits128, 0xEA);
  n[3] = (__m512bh)_mm512_or_si512(_mm512_srli_epi16(v, 12), bits128);
}

/// Output row o for M rows of x. The dot products give the sum of (128 + q) x per group; times
/// the scale, plus the offset (zero - 136 scale) times the group's sum of x, that is the sum of
/// ((q - 8) scale + zero) x. Four sums per row of x, one per quarter of a block: independent
/// chains of additions. Q: the quarters of a block in one group (2: groups of 64, 4: a block or
/// more).
template <int M, int Q>
LATHE_BF16_TARGET void int4_row(const Int4Product& p, int64_t o) {
  const int64_t in = p.in, groups = in / p.group;
  const int64_t blocks_per_group = Q == 4 ? p.group / 128 : 1;
  const uint8_t* w = p.w + o * (in / 2);
  const float* scale = p.scale + o * groups;
  __m512 total[M][4];
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < 4; ++i) total[m][i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in; k += 128 * blocks_per_group) {
    __m512 sum[M][4];
    for (int m = 0; m < M; ++m)
      for (int i = 0; i < 4; ++i) sum[m][i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks_per_group; ++b) {
      const int64_t kb = k + 128 * b;
      __m512bh n[4];
      int4_block(w + kb / 2, n);
      for (int m = 0; m < M; ++m)
        for (int i = 0; i < 4; ++i) sum[m][i] = _mm512_dpbf16_ps(sum[m][i], n[i], load32bh(p.x + m * in + kb + 32 * i));
    }
    const float* s = scale + k / p.group;
    for (int i = 0; i < 4; ++i) {
      const __m512 si = _mm512_set1_ps(s[i / Q]);
      for (int m = 0; m < M; ++m) total[m][i] = _mm512_fmadd_ps(sum[m][i], si, total[m][i]);
    }
  }
  const float* offset = p.offset + o * groups;
  for (int m = 0; m < M; ++m) {
    const __m512 t = _mm512_add_ps(_mm512_add_ps(total[m][0], total[m][1]), _mm512_add_ps(total[m][2], total[m][3]));
    float y = _mm512_reduce_add_ps(t);
    for (int64_t g = 0; g < groups; ++g) y += offset[g] * p.xsum[m * groups + g];
    if (p.b) y += to_float(p.b[o]);
    p.y[m * p.out + o] = from_float<uint16_t>(y);
  }
}

template <int M>
void int4_kernel(const Int4Product& p, int64_t o0, int64_t o1) {
  const auto row = p.group == 64 ? &int4_row<M, 2> : &int4_row<M, 4>;
  for (int64_t o = o0; o < o1; ++o) row(p, o);
}

#undef LATHE_BF16_TARGET

/// The kernel for `rows` rows of x: K<1> ... K<kSmallRowsMax>.
template <class P, template <int> class K, int... Ms>
void (*pick_rows(int64_t rows, std::integer_sequence<int, Ms...>))(const P&, int64_t, int64_t) {
  void (*k)(const P&, int64_t, int64_t) = nullptr;
  ((rows == Ms + 1 ? (k = &K<Ms + 1>::run, 0) : 0), ...);
  return k;
}

template <int M>
struct DotKernel {
  static void run(const DotProduct& p, int64_t o0, int64_t o1) { dot_kernel<M>(p, o0, o1); }
};
template <int M>
struct Int4Kernel {
  static void run(const Int4Product& p, int64_t o0, int64_t o1) { int4_kernel<M>(p, o0, o1); }
};

/// y (rows, out) of Y from x2 (rows, in) float32 contiguous, the weight of W, optional scales
/// (float32) and bias (of Y).
template <class W, class Y>
void run(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& scales, const at::Tensor& bias,
         at::Tensor& y) {
  const int64_t rows = x2.size(0);
  const Product<W, Y> p{x2.data_ptr<float>(),
                        static_cast<const W*>(weight.data_ptr()),
                        scales.defined() ? scales.data_ptr<float>() : nullptr,
                        bias.defined() ? static_cast<const Y*>(bias.data_ptr()) : nullptr,
                        static_cast<Y*>(y.data_ptr()),
                        weight.size(1),
                        weight.size(0)};
  const auto kernel = pick<W, Y>(rows, std::make_integer_sequence<int, kSmallRowsMax>{});
  // Grains of 64 output rows (a 768-wide row is 1.5 KB): small layers stay on one thread.
  at::parallel_for(0, p.out, /*grain_size=*/64, [&](int64_t o0, int64_t o1) { kernel(p, o0, o1); });
}

GemvIsa cpu_isa() {
  // The bfloat16 kernels also use AVX512BW's 16-bit shifts and widening.
  static const GemvIsa isa = !__builtin_cpu_supports("avx512f") ? GemvIsa::None
                             : __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw")
                                 ? GemvIsa::Avx512Bf16
                                 : GemvIsa::Avx512F;
  return isa;
}

// Per thread: the kernel is chosen on the calling thread, before the work is split.
thread_local GemvIsa isa_cap = GemvIsa::Avx512Bf16;

bool has_avx512() { return gemv_isa() >= GemvIsa::Avx512F; }
bool has_bf16_dot() { return gemv_isa() >= GemvIsa::Avx512Bf16; }

/// Rows of x as a (rows, in) float32 matrix, or undefined when x does not fit (CPU, last
/// dimension `in`, a multiple of 16, 1 to kSmallRowsMax rows).
at::Tensor small_rows(const at::Tensor& x, int64_t in) {
  if (!has_avx512() || at::GradMode::is_enabled() || !x.device().is_cpu()) return {};
  if (x.dim() < 1 || x.size(-1) != in || in == 0 || in % 16 != 0) return {};
  const int64_t rows = x.numel() / in;
  if (rows < 1 || rows > kSmallRowsMax) return {};
  return x.reshape({rows, in}).to(at::kFloat).contiguous();
}

/// x as a (rows, in) bfloat16 matrix for the dot kernels, or undefined when it does not fit (as
/// small_rows; `in` a multiple of 32, x bfloat16, a CPU with avx512_bf16).
at::Tensor small_rows_bf16(const at::Tensor& x, int64_t in) {
  if (!has_bf16_dot() || at::GradMode::is_enabled() || !x.device().is_cpu() || x.scalar_type() != at::kBFloat16)
    return {};
  if (x.dim() < 1 || x.size(-1) != in || in == 0 || in % 32 != 0) return {};
  const int64_t rows = x.numel() / in;
  if (rows < 1 || rows > kSmallRowsMax) return {};
  return x.reshape({rows, in}).contiguous();
}

const uint16_t* bits(const at::Tensor& t) { return t.defined() ? static_cast<const uint16_t*>(t.data_ptr()) : nullptr; }

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t out) {
  auto shape = x.sizes().vec();
  shape.back() = out;
  return shape;
}

}  // namespace

at::Tensor small_rows_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const auto type = weight.scalar_type();
  if ((type != at::kBFloat16 && type != at::kFloat) || x.scalar_type() != type || !weight.device().is_cpu() ||
      weight.dim() != 2 || !weight.is_contiguous())
    return {};
  const int64_t out = weight.size(0), in = weight.size(1);
  if (bias.defined() && (bias.scalar_type() != type || !bias.device().is_cpu() || bias.numel() != out)) return {};
  const auto b = bias.defined() ? bias.contiguous() : at::Tensor();
  if (auto xb = type == at::kBFloat16 ? small_rows_bf16(x, in) : at::Tensor(); xb.defined()) {
    auto y = at::empty({xb.size(0), out}, x.options());
    const DotProduct p{bits(xb), bits(weight), bits(b), static_cast<uint16_t*>(y.data_ptr()), in, out};
    const auto kernel = pick_rows<DotProduct, DotKernel>(xb.size(0), std::make_integer_sequence<int, kSmallRowsMax>{});
    at::parallel_for(0, out, /*grain_size=*/64, [&](int64_t o0, int64_t o1) { kernel(p, o0, o1); });
    return y.view(out_shape(x, out));
  }
  const auto x2 = small_rows(x, in);
  if (!x2.defined()) return {};
  auto y = at::empty({x2.size(0), out}, x.options());
  if (type == at::kFloat) run<float, float>(x2, weight, {}, b, y);
  else run<uint16_t, uint16_t>(x2, weight, {}, b, y);
  return y.view(out_shape(x, out));
}

at::Tensor small_rows_linear_int8(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                                  const at::Tensor& bias) {
  const auto type = x.scalar_type();
  if ((type != at::kBFloat16 && type != at::kFloat) || codes.scalar_type() != at::kChar || codes.dim() != 2 ||
      !codes.is_contiguous() || !codes.device().is_cpu())
    return {};
  const int64_t out = codes.size(0), in = codes.size(1);
  if (scales.scalar_type() != at::kFloat || !scales.is_contiguous() || scales.numel() != out) return {};
  if (bias.defined() && (!bias.device().is_cpu() || bias.numel() != out)) return {};
  const auto x2 = small_rows(x, in);
  if (!x2.defined()) return {};
  auto y = at::empty({x2.size(0), out}, x.options());
  const auto b = bias.defined() ? bias.to(type).contiguous() : at::Tensor();
  if (type == at::kFloat) run<int8_t, float>(x2, codes, scales, b, y);
  else run<int8_t, uint16_t>(x2, codes, scales, b, y);
  return y.view(out_shape(x, out));
}

SmallRowsInt4 small_rows_int4_pack(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& zeros,
                                   int64_t group) {
  if (cpu_isa() < GemvIsa::Avx512Bf16 || codes.dim() != 2 || codes.scalar_type() != at::kByte ||
      !codes.device().is_cpu())
    return {};
  const int64_t out = codes.size(0), in = codes.size(1);
  // A group is half a block (64) or whole blocks (multiples of 128): a block never spans two
  // groups of 128 or more.
  if (in % 128 != 0 || (group != 64 && (group <= 0 || group % 128 != 0)) || in % group != 0) return {};
  if (scales.sizes() != at::IntArrayRef({out, in / group}) || zeros.sizes() != scales.sizes()) return {};
  at::NoGradGuard no_grad;
  // Block of 128: lane j's nibble i is code 32 i + j; the lanes little-endian.
  const auto q = codes.reshape({out, in / 128, 4, 32}).to(at::kInt).bitwise_and(15);
  using namespace at::indexing;
  auto lanes = q.index({Slice(), Slice(), 0});
  for (int i = 1; i < 4; ++i) lanes = lanes.bitwise_or(q.index({Slice(), Slice(), i}).bitwise_left_shift(4 * i));
  SmallRowsInt4 form;
  form.codes = at::stack({lanes.bitwise_and(0xFF), lanes.bitwise_right_shift(8)}, -1)
                   .to(at::kByte)
                   .reshape({out, in / 2})
                   .contiguous();
  form.scales = scales.to(at::kFloat).contiguous();
  form.offsets = zeros.to(at::kFloat).sub(form.scales, /*alpha=*/136.0).contiguous();
  form.group = group;
  return form;
}

at::Tensor small_rows_linear_int4(const at::Tensor& x, const SmallRowsInt4& w, const at::Tensor& bias) {
  if (!w.codes.defined()) return {};
  const int64_t out = w.codes.size(0), in = w.codes.size(1) * 2, groups = in / w.group;
  if (bias.defined() && (!bias.device().is_cpu() || bias.numel() != out)) return {};
  const auto xb = small_rows_bf16(x, in);
  if (!xb.defined()) return {};
  const int64_t rows = xb.size(0);
  const auto xsum = xb.view({rows, groups, w.group}).sum(-1, /*keepdim=*/false, at::kFloat).contiguous();
  const auto b = bias.defined() ? bias.to(at::kBFloat16).contiguous() : at::Tensor();
  auto y = at::empty({rows, out}, x.options());
  const Int4Product p{bits(xb),
                      w.codes.data_ptr<uint8_t>(),
                      w.scales.data_ptr<float>(),
                      w.offsets.data_ptr<float>(),
                      xsum.data_ptr<float>(),
                      bits(b),
                      static_cast<uint16_t*>(y.data_ptr()),
                      in,
                      out,
                      w.group};
  const auto kernel = pick_rows<Int4Product, Int4Kernel>(rows, std::make_integer_sequence<int, kSmallRowsMax>{});
  // Grains of 64 output rows, as for the other products (a 2048-wide int4 row is 1 KB).
  at::parallel_for(0, out, /*grain_size=*/64, [&](int64_t o0, int64_t o1) { kernel(p, o0, o1); });
  return y.view(out_shape(x, out));
}

GemvIsa gemv_isa() { return std::min(cpu_isa(), isa_cap); }

GemvIsaCap::GemvIsaCap(GemvIsa max) : previous_(std::exchange(isa_cap, max)) {}
GemvIsaCap::~GemvIsaCap() { isa_cap = previous_; }

std::string gemv_kernels() {
  switch (gemv_isa()) {
    case GemvIsa::Avx512Bf16:
      return "bfloat16: avx512_bf16 dot; float32, int8: AVX-512F; int4: avx512_bf16 dot (groups of 64 and more; "
             "ATen for 32)";
    case GemvIsa::Avx512F: return "bfloat16, float32, int8: AVX-512F (bfloat16 widened to float); int4: ATen";
    case GemvIsa::None: break;
  }
  return "none (no AVX-512: ATen's products)";
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (auto y = small_rows_linear(x, weight, bias); y.defined()) return y;
  return at::linear(x, weight, bias);
}

}  // namespace lathe::nn
