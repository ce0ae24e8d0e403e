// BERT: a bidirectional post-LN encoder with token, position and segment embeddings, plus the
// masked-LM head (tied decoder) and the sequence-classification head.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/block.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/norm.hpp"

namespace lathe::models {

struct BertOptions {
  int64_t vocab_size = 30522;   // embedding rows
  int64_t max_seq_len = 512;    // rows of the position table
  int64_t type_vocab_size = 2;  // segment (token type) embeddings
  int64_t n_layer = 12;
  int64_t n_head = 12;          // must divide d_model
  int64_t d_model = 768;
  int64_t d_ff = 0;             // 0: 4 * d_model
  double dropout = 0.1;         // embeddings, attention output, MLP output, classifier input
  double attn_dropout = 0.1;    // attention probabilities
  double norm_eps = 1e-12;
  recipe::Activation activation = recipe::Activation::Gelu;  // MLP and MLM-head activation
  int64_t pad_token_id = 0;     // the [PAD] row of the word embedding gets no gradient; -1: none
  int64_t num_labels = 2;       // classification: classes
  double init_std = 0.02;
  c10::Device device = c10::kCPU;

  void validate() const;
};

/// Submodules: `word_embeddings`, `position_embeddings`, `token_type_embeddings`,
/// `embeddings_norm`, `layers.<i>` (nn::Block, post-LN) and, when built with a pooler, `pooler`.
class BertModelImpl : public torch::nn::Module {
 public:
  BertModelImpl(BertOptions options, bool with_pooler);

  /// ids (B, T) int64; token_types (B, T) int64 or undefined (all 0); attention_mask (B, T)
  /// (nonzero = real token) or undefined (all real) -> hidden states (B, T, d_model).
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  /// tanh(pooler(hidden[:, 0])) -> (B, d_model); needs the pooler.
  torch::Tensor pool(const torch::Tensor& hidden);

  void reset_parameters();

  BertOptions options;
  nn::Embedding word_embeddings{nullptr};
  nn::Embedding position_embeddings{nullptr};
  nn::Embedding token_type_embeddings{nullptr};
  nn::Norm embeddings_norm{nullptr};
  torch::nn::ModuleList layers{nullptr};
  nn::Linear pooler{nullptr};
};
TORCH_MODULE(BertModel);

/// Submodules: `bert` (no pooler), `mlm_dense`, `mlm_norm`, parameter `mlm_bias`; the decoder is
/// the word embedding.
class BertForMaskedLMImpl : public torch::nn::Module {
 public:
  explicit BertForMaskedLMImpl(BertOptions options);
  /// -> logits (B, T, vocab_size)
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  /// The MLM head alone: (..., d_model) -> (..., vocab_size); apply it to the selected positions
  /// only to save the full-vocabulary projection of unselected ones.
  torch::Tensor head(const torch::Tensor& hidden);
  void reset_parameters();

  BertModel bert{nullptr};
  nn::Linear mlm_dense{nullptr};
  nn::Norm mlm_norm{nullptr};
  torch::Tensor mlm_bias;
};
TORCH_MODULE(BertForMaskedLM);

/// Submodules: `bert` (with pooler), `classifier` (Linear d_model -> num_labels).
class BertForSequenceClassificationImpl : public torch::nn::Module {
 public:
  explicit BertForSequenceClassificationImpl(BertOptions options);
  /// -> logits (B, num_labels)
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  void reset_parameters();

  BertModel bert{nullptr};
  nn::Linear classifier{nullptr};
};
TORCH_MODULE(BertForSequenceClassification);

}  // namespace lathe::models
