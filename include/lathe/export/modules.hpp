// Each exportable nn module emits its ONNX nodes: given the names of its input values in a
// Graph, it adds its weights and nodes and returns the name of its output. Shapes in the
// comments are those of the values at run time (B batch, T new positions, P cached positions).
#pragma once

#include <string>
#include <vector>

#include "lathe/export/graph.hpp"
#include "lathe/nn/attention.hpp"
#include "lathe/nn/block.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/mlp.hpp"
#include "lathe/nn/norm.hpp"

namespace lathe::export_ {

/// Where lathe's float kernels have an ONNX pattern that ONNX Runtime fuses, the pattern is
/// the one it looks for: LayerNormalization, x * 0.5 * (1 + erf(x / sqrt 2)) (Gelu),
/// the tanh GELU polynomial (FastGelu), the RMSNorm chain (SimplifiedLayerNormalization),
/// MatMul + Add, MatMul -> Div -> Add(mask) -> Softmax -> MatMul (attention).

/// (..., in) -> (..., out). A float weight is stored transposed for MatMul; a quantized one as:
///   int8_dynamic      DynamicQuantizeLinear + MatMulInteger (int8 codes, per-channel scales
///                     applied to the int32 product): the activation is quantized per tensor,
///                     asymmetric uint8 — ONNX's dynamic scheme — where lathe quantizes per token;
///   int8_weight_only  com.microsoft MatMulNBits (8 bits, the channel's scale on every block,
///                     float32 compute);
///   int4_weight_only  com.microsoft MatMulNBits (4 bits, block = group_size, float zero points,
///                     float32 compute).
/// A scheme whose ONNX row has no emitter is refused with an Error naming it.
std::string emit(Graph& g, nn::LinearImpl& linear, const std::string& x);
/// Where the ONNX graph of the quantized `layers` computes something other than lathe's kernels,
/// one note per difference present (the emitters' own notes, from their rows).
std::vector<std::string> quantized_notes(const std::vector<const nn::QuantizedWeight*>& layers);
/// x (..., C) @ table^T: the output head tied to an embedding table (count, C), plus `bias`
/// (count) when defined.
std::string emit_tied_head(Graph& g, const at::Tensor& table, const at::Tensor& bias, const std::string& x);

/// (..., dim) -> (..., dim).
std::string emit(Graph& g, nn::NormImpl& norm, const std::string& x);

/// GELU (exact or tanh) of x, elementwise; SwiGLU is the MLP's (it splits its input).
std::string emit_gelu(Graph& g, nn::Activation activation, const std::string& x);

/// The MLP, (B, T, d_model) -> (B, T, d_model).
std::string emit(Graph& g, nn::MlpImpl& mlp, const std::string& x);

/// What attention sees besides its input, as graph values.
struct AttentionValues {
  std::string mask;  // additive float mask broadcastable to (B, H, T, T_keys); empty: none
  std::string cos;   // rotary tables (B, 1, T, head_dim); empty: no rotary
  std::string sin;
  std::string past_key;    // (B, kv_heads, P, head_dim); empty: no cache
  std::string past_value;
  /// The fused path: ONNX Runtime's com.microsoft GroupQueryAttention, causal over the first
  /// seqlens_k + 1 positions of each row (B, int32) out of total_length (int32 scalar), rotary
  /// from cos_cache / sin_cache (max_seq_len, head_dim / 2) when those are set. Empty
  /// seqlens_k: standard ONNX ops with `mask`, `cos`, `sin`.
  std::string seqlens_k, total_length, cos_cache, sin_cache;
};

/// Attention's outputs: y (B, T, d_model) and, with a cache, the keys and values of all
/// P + T positions (B, kv_heads, P + T, head_dim).
struct AttentionOutputs {
  std::string y;
  std::string present_key;
  std::string present_value;
};

AttentionOutputs emit(Graph& g, nn::AttentionImpl& attention, const std::string& x, const AttentionValues& ctx);

/// A block (pre- or post-LN), (B, T, d_model) -> (B, T, d_model).
AttentionOutputs emit(Graph& g, nn::BlockImpl& block, const std::string& x, const AttentionValues& ctx);

/// The embedding rows of `ids` (any shape, int64) -> (..., dim).
std::string emit(Graph& g, nn::EmbeddingImpl& embedding, const std::string& ids);

}  // namespace lathe::export_
