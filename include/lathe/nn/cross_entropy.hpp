// Cross-entropy of a linear output layer, computed a block of rows at a time: the (N, V) logits
// of a large vocabulary are never held whole. The loss is the end of the graph, so each block's
// gradients (of the hidden states, the weight and the bias) are formed from its logits as soon
// as they exist; backward only scales them. The work is that of the unfused forward and
// backward; the memory is the gradients' instead of two (N, V) float tensors.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace lathe::nn {

/// Mean over the rows whose target is not `ignore_index` of
/// cross_entropy(hidden @ weight^T + bias, targets), in float32, at most `block_rows` rows at a
/// time (in blocks of equal size). `softcap` > 0: of the logits z soft-capped as
/// softcap * tanh(z / softcap) (Gemma 2), in float32.
/// hidden (N, C), weight (V, C), bias (V) or undefined, targets (N) int64. Differentiable in
/// hidden, weight and bias; under autocast the block products run in autocast's dtype, as
/// at::linear's would. 0 (with zero gradients) when no row is scored.
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& targets, int64_t block_rows = 2048, int64_t ignore_index = -100,
                                double softcap = 0.0);

}  // namespace lathe::nn
