// small_rows_linear: bfloat16 weights streamed once, widened to float, accumulated in float.
//
// Built with -fopenmp and without the precompiled header (CMakeLists.txt): at::parallel_for's
// OpenMP body is compiled into the caller, so without -fopenmp it would run on one thread.

#include "lathe/nn/gemv.hpp"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/BFloat16.h>

#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

// GCC 12 reports the intrinsics' own _mm512_undefined_* operands as maybe-uninitialized when they
// are inlined into a target("avx512f") function.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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
/// checks).
template <class W, class Y, int M>
__attribute__((target("avx512f"))) void rows_kernel(const Product<W, Y>& p, int64_t o0, int64_t o1) {
  const int64_t in = p.in;
  const float* x = p.x;
  int64_t o = o0;
  // Two weight rows at a time: independent accumulation chains, and each x load serves both.
  for (; o + 2 <= o1; o += 2) {
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    const W* w0 = p.w + o * in;
    const W* w1 = w0 + in;
    for (int64_t k = 0; k < in; k += 16) {
      // The pair two pairs ahead, into L2: the hardware prefetcher alone kept about half of the
      // memory bandwidth busy, and an L2 prefetch is not bounded by L1's few outstanding misses.
      _mm_prefetch(reinterpret_cast<const char*>(w0 + 4 * in + k), _MM_HINT_T2);
      _mm_prefetch(reinterpret_cast<const char*>(w1 + 4 * in + k), _MM_HINT_T2);
      const __m512 a = load16(w0 + k), c = load16(w1 + k);
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * in + k);
        acc0[m] = _mm512_fmadd_ps(a, xv, acc0[m]);
        acc1[m] = _mm512_fmadd_ps(c, xv, acc1[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      finish(p, o, m, acc0[m]);
      finish(p, o + 1, m, acc1[m]);
    }
  }
  for (; o < o1; ++o) {
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    const W* w0 = p.w + o * in;
    for (int64_t k = 0; k < in; k += 16) {
      const __m512 a = load16(w0 + k);
      for (int m = 0; m < M; ++m) acc[m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + m * in + k), acc[m]);
    }
    for (int m = 0; m < M; ++m) finish(p, o, m, acc[m]);
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

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

/// Rows of x as a (rows, in) float32 matrix, or undefined when x does not fit (CPU, last
/// dimension `in`, a multiple of 16, 1 to kSmallRowsMax rows).
at::Tensor small_rows(const at::Tensor& x, int64_t in) {
  if (!has_avx512() || at::GradMode::is_enabled() || !x.device().is_cpu()) return {};
  if (x.dim() < 1 || x.size(-1) != in || in == 0 || in % 16 != 0) return {};
  const int64_t rows = x.numel() / in;
  if (rows < 1 || rows > kSmallRowsMax) return {};
  return x.reshape({rows, in}).to(at::kFloat).contiguous();
}

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
  const auto x2 = small_rows(x, in);
  if (!x2.defined()) return {};
  auto y = at::empty({x2.size(0), out}, x.options());
  const auto b = bias.defined() ? bias.contiguous() : at::Tensor();
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

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (auto y = small_rows_linear(x, weight, bias); y.defined()) return y;
  return at::linear(x, weight, bias);
}

}  // namespace lathe::nn
