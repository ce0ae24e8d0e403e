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
#include <cstring>
#include <vector>

// GCC 12 reports the intrinsics' own _mm512_undefined_* operands as maybe-uninitialized when they
// are inlined into a target("avx512f") function.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lathe::nn {
namespace {

/// Sixteen bfloat16 values as floats: a bfloat16 is the high half of a float.
__attribute__((target("avx512f"))) inline __m512 widen(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

/// y[m][o] = sum_k x[m][k] w[o][k] (+ b[o]) for o in [o0, o1); x as floats (M rows of `in`), w and
/// y bfloat16. `in` is a multiple of 16 (the caller pads nothing: it checks).
template <int M>
__attribute__((target("avx512f"))) void rows_kernel(const float* x, const uint16_t* w, const uint16_t* b, uint16_t* y,
                                                    int64_t in, int64_t out, int64_t o0, int64_t o1) {
  int64_t o = o0;
  // Two weight rows at a time: independent accumulation chains, and each x load serves both.
  for (; o + 2 <= o1; o += 2) {
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    const uint16_t* w0 = w + o * in;
    const uint16_t* w1 = w0 + in;
    for (int64_t k = 0; k < in; k += 16) {
      // The rows two pairs ahead, 32 cache lines per pair: the hardware prefetcher alone
      // kept about half of the memory bandwidth busy.
      _mm_prefetch(reinterpret_cast<const char*>(w0 + 4 * in + k), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w1 + 4 * in + k), _MM_HINT_T0);
      const __m512 a = widen(w0 + k), c = widen(w1 + k);
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * in + k);
        acc0[m] = _mm512_fmadd_ps(a, xv, acc0[m]);
        acc1[m] = _mm512_fmadd_ps(c, xv, acc1[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      float s0 = _mm512_reduce_add_ps(acc0[m]), s1 = _mm512_reduce_add_ps(acc1[m]);
      if (b) {
        s0 += static_cast<float>(c10::BFloat16(b[o], c10::BFloat16::from_bits()));
        s1 += static_cast<float>(c10::BFloat16(b[o + 1], c10::BFloat16::from_bits()));
      }
      y[m * out + o] = c10::BFloat16(s0).x;
      y[m * out + o + 1] = c10::BFloat16(s1).x;
    }
  }
  for (; o < o1; ++o) {
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    const uint16_t* w0 = w + o * in;
    for (int64_t k = 0; k < in; k += 16) {
      const __m512 a = widen(w0 + k);
      for (int m = 0; m < M; ++m) acc[m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + m * in + k), acc[m]);
    }
    for (int m = 0; m < M; ++m) {
      float s = _mm512_reduce_add_ps(acc[m]);
      if (b) s += static_cast<float>(c10::BFloat16(b[o], c10::BFloat16::from_bits()));
      y[m * out + o] = c10::BFloat16(s).x;
    }
  }
}

using Kernel = void (*)(const float*, const uint16_t*, const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int64_t);

template <int... Ms>
Kernel pick(int64_t rows, std::integer_sequence<int, Ms...>) {
  Kernel k = nullptr;
  ((rows == Ms + 1 ? (k = &rows_kernel<Ms + 1>, 0) : 0), ...);
  return k;
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

}  // namespace

at::Tensor small_rows_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!has_avx512() || at::GradMode::is_enabled()) return {};
  if (x.scalar_type() != at::kBFloat16 || weight.scalar_type() != at::kBFloat16 || !x.device().is_cpu() ||
      !weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous())
    return {};
  const int64_t out = weight.size(0), in = weight.size(1);
  if (x.dim() < 1 || x.size(-1) != in || in % 16 != 0) return {};
  if (bias.defined() && (bias.scalar_type() != at::kBFloat16 || !bias.device().is_cpu() || bias.numel() != out))
    return {};
  const int64_t rows = in > 0 ? x.numel() / in : 0;
  if (rows < 1 || rows > kSmallRowsMax) return {};
  const auto xf = x.reshape({rows, in}).to(at::kFloat).contiguous();
  const auto b = bias.defined() ? bias.contiguous() : at::Tensor();
  auto shape = x.sizes().vec();
  shape.back() = out;
  auto y = at::empty({rows, out}, x.options());
  const Kernel kernel = pick(rows, std::make_integer_sequence<int, kSmallRowsMax>{});
  const float* xp = xf.data_ptr<float>();
  const auto* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  const auto* bp = b.defined() ? reinterpret_cast<const uint16_t*>(b.data_ptr<at::BFloat16>()) : nullptr;
  auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  // Grains of 64 output rows (a 768-wide row is 1.5 KB): small layers stay on one thread.
  at::parallel_for(0, out, /*grain_size=*/64, [&](int64_t o0, int64_t o1) { kernel(xp, wp, bp, yp, in, out, o0, o1); });
  return y.view(shape);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (auto y = small_rows_linear(x, weight, bias); y.defined()) return y;
  return at::linear(x, weight, bias);
}

}  // namespace lathe::nn
