// Rotary position embeddings (RoPE) in the "rotate half" layout used by GPT-NeoX and Llama:
// the first and second halves of each head's features form the rotated pairs.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "lathe/nn/enums.hpp"

namespace lathe::nn {

/// The rotary frequencies: base `theta`, stretched by `scaling` (transformers' rope_parameters:
/// `factor` for linear and llama3; llama3 also keeps wavelengths shorter than
/// original_max_seq_len / high_freq_factor, divides those longer than original_max_seq_len /
/// low_freq_factor by the factor, and interpolates between).
struct RotaryOptions {
  double theta = 10000.0;
  RopeScaling scaling = RopeScaling::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_seq_len = 8192;
};

/// cos and sin tables for `positions` (T) as (T, head_dim), or for per-row positions (B, T) as
/// (B, 1, T, head_dim), in float32.
/// Frequencies are theta^(-2i / head_dim) for i < head_dim / 2 (then scaled); head_dim must be even.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};
/// The rotation frequencies theta^(-2i / head_dim), i < head_dim / 2, scaled as `options` says,
/// float32 (head_dim / 2).
at::Tensor rotary_inv_freq(int64_t head_dim, const RotaryOptions& options);
RotaryTables rotary_tables(const at::Tensor& positions, int64_t head_dim, const RotaryOptions& options);

/// Rotates x (B, H, T, head_dim) by the tables (T or B, 1, T, head_dim); returns x's dtype.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

}  // namespace lathe::nn
