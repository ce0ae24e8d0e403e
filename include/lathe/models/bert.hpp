// BERT: a bidirectional post-LN encoder with token, position and segment embeddings, plus the
// masked-LM head (tied decoder) and the sequence-classification head.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/block.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/norm.hpp"
#include "lathe/models/options.hpp"

namespace lathe::models {

/// Submodules: `word_embeddings`, `position_embeddings`, `token_type_embeddings`,
/// `embeddings_norm`, `layers.<i>` (nn::Block, post-LN) and, when built with a pooler, `pooler`.
class BertModelImpl : public torch::nn::Module, public nn::BlockStack {
 public:
  BertModelImpl(ModelOptions options, bool with_pooler);

  /// ids (B, T) int64; token_types (B, T) int64 or undefined (all 0); attention_mask (B, T)
  /// (nonzero = real token) or undefined (all real) -> hidden states (B, T, d_model).
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  /// tanh(pooler(hidden[:, 0])) -> (B, d_model); needs the pooler.
  torch::Tensor pool(const torch::Tensor& hidden);

  /// BERT's initialisation, each parameter drawn once (see GptImpl::reset_parameters).
  void reset_parameters(const nn::ValueSink& sink = {});

  ModelOptions options;
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
class BertForMaskedLMImpl : public torch::nn::Module, public nn::ParameterRoles {
 public:
  explicit BertForMaskedLMImpl(ModelOptions options);
  /// -> logits (B, T, vocab_size)
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  /// The MLM head alone: (..., d_model) -> (..., vocab_size); apply it to the selected positions
  /// only to save the full-vocabulary projection of unselected ones.
  torch::Tensor head(const torch::Tensor& hidden);
  /// BERT's initialisation, each parameter drawn once (see GptImpl::reset_parameters).
  void reset_parameters(const nn::ValueSink& sink = {});

  BertModel bert{nullptr};
  nn::Linear mlm_dense{nullptr};
  nn::Norm mlm_norm{nullptr};
  torch::Tensor mlm_bias;
};
TORCH_MODULE(BertForMaskedLM);

/// Submodules: `bert` (with pooler), `classifier` (Linear d_model -> num_labels).
class BertForSequenceClassificationImpl : public torch::nn::Module {
 public:
  explicit BertForSequenceClassificationImpl(ModelOptions options);
  /// -> logits (B, num_labels)
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_types = {},
                        const torch::Tensor& attention_mask = {});
  /// BERT's initialisation, each parameter drawn once (see GptImpl::reset_parameters).
  void reset_parameters(const nn::ValueSink& sink = {});

  BertModel bert{nullptr};
  nn::Linear classifier{nullptr};
};
TORCH_MODULE(BertForSequenceClassification);

}  // namespace lathe::models
