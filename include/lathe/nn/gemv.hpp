// The product of a few rows with a weight, at the speed the weight streams from memory.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace lathe::nn {

/// Rows of x that small_rows_linear takes at most (decoding: one row per sequence of the batch).
inline constexpr int64_t kSmallRowsMax = 8;

/// y = x W^T + b for `x` (..., in) with at most kSmallRowsMax rows, a contiguous `weight` (out,
/// in) and an optional `bias` (out), all bfloat16 or all float32 (1 to 8 rows),
/// on the CPU, without autograd. Each weight row is read once for all rows of x and accumulated
/// in float: bfloat16 pairs by avx512_bf16's dot product where the CPU has it (and `in` is a
/// multiple of 32), otherwise widened to float in registers (AVX-512F); output rows are split
/// over the intra-op threads. Decoding reads every weight once per step, so its speed is the rate
/// the weights stream from memory. One weight row after the other, front to back: two rows
/// interleaved with software prefetches streamed a quarter slower on one core here.
/// scripts/bench/gemv_bench.cpp measures each product against ATen's (one row, weights beyond
/// the caches, 1 / 2 threads, GB/s): float32 40 / 47 against 21 / 21 (ATen hands one float32 row
/// to MKL's sgemv, which runs on one thread); bfloat16 39 / 45 against 17 / 29.
/// Returns an undefined tensor where it does not apply (another dtype or device, other row
/// counts, a non-contiguous weight, gradients wanted, no AVX-512 on this CPU): the caller runs
/// at::linear.
at::Tensor small_rows_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// The int8 weight-only product of a few rows: y = (x codes^T) * scales + b with int8 `codes`
/// (out, in), one float32 scale per output row, `x` float32 or bfloat16 (1 to 8 rows; y in x's
/// dtype), the codes widened to float in registers and the scale applied to each row's sum.
/// Undefined where it does not apply (as small_rows_linear).
at::Tensor small_rows_linear_int8(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                                  const at::Tensor& bias);

/// The int4 weight-only codes in the form small_rows_linear_int4 reads: per output row, each
/// block of 128 inputs is 32 little-endian 16-bit lanes, nibble i of lane j holding code
/// 32 i + j; per group, the scale and the offset zero - 136 scale.
struct SmallRowsInt4 {
  at::Tensor codes;    // (out, in / 2) uint8
  at::Tensor scales;   // (out, in / group) float32
  at::Tensor offsets;  // (out, in / group) float32
  int64_t group = 0;
};

/// small_rows_linear_int4's form of int4 codes (out, in) uint8 in [0, 15] with per-group
/// float32 `scales` and `zeros` (out, in / group), w = (q - 8) scale + zero; empty (undefined
/// codes) where the kernel does not apply: `in` not a multiple of 128, a group other than 64 or
/// a multiple of 128, or a CPU without avx512_bf16 (and AVX512BW). (Groups of 32 take a scale
/// and a sum per 32 weights, and ATen's int4 kernel was 10% faster at them here; at 64 the two
/// were even, from 128 on this one is faster: scripts/bench/gemv_bench.cpp.)
SmallRowsInt4 small_rows_int4_pack(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& zeros,
                                   int64_t group);

/// The int4 weight-only product of 1 to kSmallRowsMax bfloat16 rows: each code q becomes the
/// bfloat16 128 + q exactly (a bit pattern, no conversion), avx512_bf16's dot product sums a
/// group's 32 pairs at a time in float, the group's scale multiplies its sum, and the offsets
/// times the group sums of x close it. y bfloat16. Undefined where it does not apply (an empty
/// form, x not bfloat16, other row counts, gradients wanted).
at::Tensor small_rows_linear_int4(const at::Tensor& x, const SmallRowsInt4& w, const at::Tensor& bias);

/// The instruction sets the small-rows products choose from. A bfloat16 weight with bfloat16 x
/// takes avx512_bf16's dot product (32 weights an instruction) where the CPU has it, otherwise
/// AVX-512F (weights widened to float, 16 an instruction); the int4 product needs avx512_bf16.
enum class GemvIsa { None, Avx512F, Avx512Bf16 };

/// The best the CPU has, or less while a GemvIsaCap lives.
GemvIsa gemv_isa();

/// Limits the small-rows products called from this thread to `max` while it lives (tests run
/// each kernel the CPU has; the last cap made wins, and its end restores the one before).
class GemvIsaCap {
 public:
  explicit GemvIsaCap(GemvIsa max);
  ~GemvIsaCap();
  GemvIsaCap(const GemvIsaCap&) = delete;
  GemvIsaCap& operator=(const GemvIsaCap&) = delete;

 private:
  GemvIsa previous_;
};

/// What the small-rows products run on this CPU, for benchmarks and `lathe env`: e.g.
/// "bfloat16: avx512_bf16 dot; float32, int8: AVX-512F; int4: avx512_bf16 dot (groups of 64 and
/// more; ATen for 32)".
std::string gemv_kernels();

/// small_rows_linear where it applies, else at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace lathe::nn
