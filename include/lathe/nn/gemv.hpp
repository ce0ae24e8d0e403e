// The product of a few rows with a weight, at the speed the weight streams from memory.
#pragma once

#include <ATen/core/Tensor.h>

namespace lathe::nn {

/// Rows of x that small_rows_linear takes at most (decoding: one row per sequence of the batch).
inline constexpr int64_t kSmallRowsMax = 8;

/// y = x W^T + b for `x` (..., in) with at most kSmallRowsMax rows, a contiguous `weight` (out,
/// in) and an optional `bias` (out), all bfloat16 or all float32 (1 to 8 rows),
/// on the CPU, without autograd. Each weight row is read once for all rows of x (bfloat16
/// widened to float in registers, AVX-512) and accumulated in float; output rows are split over
/// the intra-op threads. Decoding reads every weight once per step, so its speed is the rate the
/// weights stream from memory. Measured against ATen here (2 cores, weights beyond the caches):
/// bfloat16 one row about 21 GB/s against ATen's 12; float32 eight rows about 3x ATen's, whose
/// product streamed at 8 GB/s there. One float32 row: ATen hands it to MKL's sgemv, which runs
/// on one thread (GPT-2 124M decoding at 34 tokens/s on 1 or 2 threads, against 54 and 76 here).
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

/// small_rows_linear where it applies, else at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace lathe::nn
