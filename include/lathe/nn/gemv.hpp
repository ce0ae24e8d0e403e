// The product of a few rows with a bfloat16 weight, at the speed its weight streams from memory.
#pragma once

#include <ATen/core/Tensor.h>

namespace lathe::nn {

/// Rows of x that small_rows_linear takes at most (decoding: one row per sequence of the batch).
inline constexpr int64_t kSmallRowsMax = 8;

/// y = x W^T + b for bfloat16 `x` (..., in) with at most kSmallRowsMax rows, a bfloat16 `weight`
/// (out, in), contiguous, and an optional bfloat16 `bias` (out), on the CPU, without autograd.
/// Each weight row is read once for all rows of x, widened to float in registers (AVX-512) and
/// accumulated in float; output rows are split over the intra-op threads. Decoding a token reads
/// every weight once, so its speed is the rate the weights stream from memory; ATen's bfloat16
/// product ran at about half of that rate on one row (its fp32 one at about all of it, with
/// twice the bytes).
/// Returns an undefined tensor where it does not apply (another dtype or device, more rows, a
/// non-contiguous weight, gradients wanted, no AVX-512 on this CPU): the caller runs at::linear.
at::Tensor small_rows_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// small_rows_linear where it applies, else at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace lathe::nn
