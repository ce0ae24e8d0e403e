// Multi-head self-attention on at::scaled_dot_product_attention, with one fused QKV projection,
// optional grouped key/value heads, rotary positions, padding masks and a KV cache.
#pragma once

#include <optional>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/linear.hpp"

#include "lathe/nn/rotary.hpp"

namespace lathe::nn {

struct AttentionOptions {
  int64_t d_model = 0;     // width of the residual stream; required
  int64_t n_head = 1;      // query heads; must divide d_model
  int64_t n_kv_head = 0;   // key/value heads (grouped-query attention); must divide n_head. 0: n_head
  int64_t d_head = 0;      // width of one head. 0: d_model / n_head (heads may be pruned to fewer)
  bool causal = true;      // each position attends to itself and earlier positions only
  bool bias = true;        // biases in the QKV and output projections
  bool qkv_bias = false;   // biases in the QKV projection alone (Qwen2), when `bias` is off
  /// Each query sees the last `sliding_window` positions only, itself included (Mistral); 0: all.
  int64_t sliding_window = 0;
  /// Factor of the scores q . k; 0: 1 / sqrt(head_dim).
  double scale = 0.0;
  /// Scores s become softcap * tanh(s / softcap) before the mask (Gemma 2); 0: none. The scores
  /// are then formed explicitly instead of by the fused kernel.
  double softcap = 0.0;
  double attn_dropout = 0.0;  // dropout on attention probabilities, in training mode
  double dropout = 0.0;       // dropout on the output projection, in training mode
  c10::Device device = c10::kCPU;  // where the parameters are created

  int64_t head_dim() const { return d_head > 0 ? d_head : d_model / n_head; }
  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
};

/// Keys and values of one layer for the positions seen so far, stored in preallocated tensors
/// (B, kv_heads, capacity, head_dim).
struct LayerKv {
  at::Tensor k;
  at::Tensor v;
};

/// The cache of a whole model: one LayerKv per layer plus the number of cached positions.
struct KvCache {
  std::vector<LayerKv> layers;
  int64_t length = 0;    // positions already cached (the next token's position)
  int64_t capacity = 0;  // positions the tensors hold
};

/// What a call to forward sees besides its input.
struct AttentionContext {
  const RotaryTables* rotary = nullptr;  // tables for the new positions, when rotary is used
  /// Keys to attend to, (B, T_keys) bool, true = real token; undefined: all. With a cache,
  /// T_keys covers the cached and the new positions.
  at::Tensor key_mask;
  LayerKv* cache = nullptr;  // this layer's slot; new keys/values are written at cache_pos
  int64_t cache_pos = 0;
  /// Packed rows: (B, T) int64, the example each position belongs to; a query sees keys of its
  /// own example only (a block-diagonal causal mask). Undefined: one sequence per row. Not with
  /// a cache.
  at::Tensor segments;
};

/// Parameters: `qkv` (Linear d_model -> (n_head + 2 * kv_heads) * head_dim, Role::HeadBlock;
/// rows are all query heads, then all key heads, then all value heads) and `proj` (Linear
/// n_head * head_dim -> d_model, Role::ResidualProjection; its columns are the heads). The options are
/// checked by the model that builds the layer (models::ModelOptions::problems).
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx = {});  // (B, T, C) -> (B, T, C)

  AttentionOptions options;
  Linear qkv{nullptr};
  Linear proj{nullptr};

 private:
  /// The heads (B, H, T, head_dim) joined, projected (and dropped out in training).
  torch::Tensor finish_attention(const torch::Tensor& heads, int64_t B, int64_t T, int64_t width);
};
TORCH_MODULE(Attention);

}  // namespace lathe::nn
