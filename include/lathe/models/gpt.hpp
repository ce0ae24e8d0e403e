// GPT: a decoder-only causal language model. The defaults are GPT-2 (learned positions, pre-LN,
// tanh GELU, biases, tied input/output embedding); rope + rmsnorm + swiglu + bias: false +
// n_kv_head give a Llama-style decoder from the same parts.
#pragma once

#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/attention.hpp"
#include "lathe/nn/block.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/norm.hpp"
#include "lathe/models/options.hpp"

namespace lathe::models {

/// Submodules: `wte`, `wpe` (learned positions only), `blocks.<i>` (nn::Block), `ln_f`,
/// `lm_head` (only when the embedding is not tied, or its head was separated to be quantized).
class GptImpl : public torch::nn::Module, public nn::BlockStack {
 public:
  /// Throws std::invalid_argument naming the options to change (ModelOptions::validate).
  explicit GptImpl(ModelOptions options);

  /// ids (B, T) int64 -> logits (B, T, vocab_size). `key_mask` (B, T_keys) bool marks real tokens
  /// (left padding); with a cache, T_keys counts cached and new positions and the new tokens are
  /// at positions cache->length ...; the cache advances by T.
  /// `segments` (B, T) int64: packed rows, several examples per row (nn::AttentionContext): each
  /// example attends within itself and its positions restart at 0, so a packed row computes
  /// what its examples compute alone.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& key_mask = {}, nn::KvCache* cache = nullptr,
                        const torch::Tensor& segments = {});

  /// The final hidden states (B, T, d_model), before the output projection.
  torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& key_mask = {}, nn::KvCache* cache = nullptr,
                       const torch::Tensor& segments = {});
  /// Output projection: (..., d_model) -> (..., vocab_size), soft-capped when logit_softcap is set.
  torch::Tensor logits(const torch::Tensor& hidden);

  /// An empty cache for `batch` sequences of up to `capacity` positions (default max_seq_len),
  /// on the parameters' device and dtype. Left-padded batches may need more columns than
  /// max_seq_len: each row's own positions are what must fit.
  nn::KvCache make_cache(int64_t batch, int64_t capacity = 0) const;

  /// For a model with tied embeddings: an output head of its own (`lm_head`, a copy of the
  /// token embedding), so that the head can be quantized while the lookup table stays float.
  /// options.tie_embeddings stays true. A no-op when the model has its own head.
  void separate_head();

  /// GPT-2 initialisation (see ModelOptions::init_std); deterministic under torch::manual_seed.
  /// Each parameter is drawn once, in place, or (with `sink`) into tensors handed to it one at
  /// a time (nn::initialise): the constructor draws nothing else.
  void reset_parameters(const nn::ValueSink& sink = {});

  ModelOptions options;
  /// The Hugging Face model_type the model was read as ("phi3"), empty otherwise: save_hf writes
  /// that family again where it holds the options, the first family that does otherwise.
  std::string hf_family;
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
