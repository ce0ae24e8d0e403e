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

// GCC 12 reports the intrinsics' own _mm512_undefined_* operands as maybe-uninitialized when they
// are inlined into a target("avx512f") function.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lathe::nn {
namespace {

/// Sixteen weights as floats (a bfloat16 is the high half of a float).
template <class W>
__attribute__((target("avx512f"))) inline __m512 load16(const W* p) {
  if constexpr (std::is_same_v<W, float>) {
    return _mm512_loadu_ps(p);
  } else {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
}

template <class W>
float to_float(W v) {
  if constexpr (std::is_same_v<W, float>) return v;
  else return static_cast<float>(c10::BFloat16(v, c10::BFloat16::from_bits()));
}

template <class W>
W from_float(float v) {
  if constexpr (std::is_same_v<W, float>) return v;
  else return c10::BFloat16(v).x;  // round to nearest even
}

/// y[m][o] = the sum of `acc`'s lanes (+ b[o]).
template <class W>
__attribute__((target("avx512f"))) inline void finish(W* y, const W* b, int64_t out, int64_t o, int m, __m512 acc) {
  float s = _mm512_reduce_add_ps(acc);
  if (b) s += to_float(b[o]);
  y[m * out + o] = from_float<W>(s);
}

/// y[m][o] = sum_k x[m][k] w[o][k] (+ b[o]) for o in [o0, o1); x as floats (M rows of `in`), w, b
/// and y of W (float, or bfloat16 as uint16_t). `in` is a multiple of 16 (the caller checks).
template <class W, int M>
__attribute__((target("avx512f"))) void rows_kernel(const float* x, const W* w, const W* b, W* y, int64_t in,
                                                    int64_t out, int64_t o0, int64_t o1) {
  int64_t o = o0;
  // Two weight rows at a time: independent accumulation chains, and each x load serves both.
  for (; o + 2 <= o1; o += 2) {
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    const W* w0 = w + o * in;
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
      finish(y, b, out, o, m, acc0[m]);
      finish(y, b, out, o + 1, m, acc1[m]);
    }
  }
  for (; o < o1; ++o) {
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    const W* w0 = w + o * in;
    for (int64_t k = 0; k < in; k += 16) {
      const __m512 a = load16(w0 + k);
      for (int m = 0; m < M; ++m) acc[m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + m * in + k), acc[m]);
    }
    for (int m = 0; m < M; ++m) finish(y, b, out, o, m, acc[m]);
  }
}

template <class W>
using Kernel = void (*)(const float*, const W*, const W*, W*, int64_t, int64_t, int64_t, int64_t);

template <class W, int... Ms>
Kernel<W> pick(int64_t rows, std::integer_sequence<int, Ms...>) {
  Kernel<W> k = nullptr;
  ((rows == Ms + 1 ? (k = &rows_kernel<W, Ms + 1>, 0) : 0), ...);
  return k;
}

template <class W>
void run(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& y) {
  const int64_t rows = x2.size(0), in = weight.size(1), out = weight.size(0);
  const auto kernel = pick<W>(rows, std::make_integer_sequence<int, kSmallRowsMax>{});
  const float* xp = x2.data_ptr<float>();
  const auto* wp = static_cast<const W*>(weight.data_ptr());
  const auto* bp = bias.defined() ? static_cast<const W*>(bias.data_ptr()) : nullptr;
  auto* yp = static_cast<W*>(y.data_ptr());
  // Grains of 64 output rows (a 768-wide row is 1.5 KB): small layers stay on one thread.
  at::parallel_for(0, out, /*grain_size=*/64, [&](int64_t o0, int64_t o1) { kernel(xp, wp, bp, yp, in, out, o0, o1); });
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

}  // namespace

at::Tensor small_rows_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!has_avx512() || at::GradMode::is_enabled()) return {};
  const auto type = weight.scalar_type();
  if ((type != at::kBFloat16 && type != at::kFloat) || x.scalar_type() != type || !x.device().is_cpu() ||
      !weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous())
    return {};
  const int64_t out = weight.size(0), in = weight.size(1);
  if (x.dim() < 1 || x.size(-1) != in || in == 0 || in % 16 != 0) return {};
  if (bias.defined() && (bias.scalar_type() != type || !bias.device().is_cpu() || bias.numel() != out)) return {};
  const int64_t rows = x.numel() / in;
  // float32: one row is left to ATen's product, which streams a float32 weight at the memory's
  // rate already; from two rows on, ATen's runs at about a third of it.
  if (rows < (type == at::kFloat ? 2 : 1) || rows > kSmallRowsMax) return {};
  const auto x2 = x.reshape({rows, in}).to(at::kFloat).contiguous();
  auto y = at::empty({rows, out}, x.options());
  const auto b = bias.defined() ? bias.contiguous() : at::Tensor();
  if (type == at::kFloat) run<float>(x2, weight, b, y);
  else run<uint16_t>(x2, weight, b, y);
  auto shape = x.sizes().vec();
  shape.back() = out;
  return y.view(shape);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (auto y = small_rows_linear(x, weight, bias); y.defined()) return y;
  return at::linear(x, weight, bias);
}

}  // namespace lathe::nn
