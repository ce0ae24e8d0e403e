// Rotary position embeddings (RoPE) in the "rotate half" layout used by GPT-NeoX and Llama:
// the first and second halves of each head's features form the rotated pairs.
#pragma once

#include <ATen/core/Tensor.h>

namespace lathe::nn {

/// cos and sin tables for `positions` (T) as (T, head_dim), in float32.
/// Frequencies are theta^(-2i / head_dim) for i < head_dim / 2; head_dim must be even.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};
/// The rotation frequencies theta^(-2i / head_dim), i < head_dim / 2, float32 (head_dim / 2).
at::Tensor rotary_inv_freq(int64_t head_dim, double theta);
RotaryTables rotary_tables(const at::Tensor& positions, int64_t head_dim, double theta);

/// Rotates x (B, H, T, head_dim) by the tables (T, head_dim); returns x's dtype.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

}  // namespace lathe::nn
