// GPT: a decoder-only causal language model. The defaults are GPT-2 (learned positions, pre-LN,
// tanh GELU, biases, tied input/output embedding); rope + rmsnorm + swiglu + bias: false +
// n_kv_head give a Llama-style decoder from the same parts.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/attention.hpp"
#include "lathe/nn/block.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/norm.hpp"

namespace lathe::models {

struct GptOptions {
  int64_t vocab_size = 50257;   // embedding rows
  int64_t max_seq_len = 1024;   // longest sequence (rows of the learned position table)
  int64_t n_layer = 12;         // transformer blocks
  int64_t n_head = 12;          // attention heads; must divide d_model
  int64_t n_kv_head = 0;        // key/value heads (grouped-query attention); 0: n_head
  int64_t d_model = 768;        // residual width
  int64_t d_ff = 0;             // MLP hidden width; 0: 4 * d_model
  double dropout = 0.0;         // embeddings, attention output and MLP output, in training mode
  double attn_dropout = 0.0;    // attention probabilities, in training mode
  bool bias = true;             // biases in linear layers and layernorms
  recipe::Norm norm = recipe::Norm::LayerNorm;
  double norm_eps = 1e-5;
  recipe::Activation activation = recipe::Activation::GeluTanh;
  recipe::Position position = recipe::Position::Learned;
  double rope_theta = 10000.0;  // rope: frequency base
  bool tie_embeddings = true;   // the output projection is the token embedding
  double init_std = 0.02;       // N(0, init_std) init; residual projections use init_std / sqrt(2 n_layer)
  c10::Device device = c10::kCPU;  // where the parameters are created (meta: shapes only)

  /// Throws std::invalid_argument with a message that names the values to change.
  void validate() const;
};

/// Submodules: `wte`, `wpe` (learned positions only), `blocks.<i>` (nn::Block), `ln_f`,
/// `lm_head` (only when the embedding is not tied).
class GptImpl : public torch::nn::Module {
 public:
  explicit GptImpl(GptOptions options);

  /// ids (B, T) int64 -> logits (B, T, vocab_size). `key_mask` (B, T_keys) bool marks real tokens
  /// (left padding); with a cache, T_keys counts cached and new positions and the new tokens are
  /// at positions cache->length ...; the cache advances by T.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& key_mask = {}, nn::KvCache* cache = nullptr);

  /// The final hidden states (B, T, d_model), before the output projection.
  torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& key_mask = {}, nn::KvCache* cache = nullptr);
  /// Output projection: (..., d_model) -> (..., vocab_size).
  torch::Tensor logits(const torch::Tensor& hidden);

  /// An empty cache for `batch` sequences of up to `capacity` positions (default max_seq_len),
  /// on the parameters' device and dtype.
  nn::KvCache make_cache(int64_t batch, int64_t capacity = 0) const;

  /// GPT-2 initialisation (see GptOptions::init_std); deterministic under torch::manual_seed.
  void reset_parameters();

  GptOptions options;
  nn::Embedding wte{nullptr};
  nn::Embedding wpe{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  nn::Norm ln_f{nullptr};
  nn::Linear lm_head{nullptr};
};
TORCH_MODULE(Gpt);

/// Parameters counted once (a tied embedding is one tensor).
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace lathe::models
