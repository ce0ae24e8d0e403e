// BERT encoder and heads.

#include "lathe/models/bert.hpp"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

#include "lathe/nn/init.hpp"

namespace lathe::models {
namespace {

std::string s(int64_t v) { return std::to_string(v); }

nn::NormOptions norm_options(const ModelOptions& o) {
  return {.dim = o.d_model, .kind = nn::NormKind::LayerNorm, .eps = o.norm_eps, .bias = true, .device = o.device};
}

/// BERT's init: every matrix and table N(0, std), biases 0, norms 1, the [PAD] row 0.
void init_bert_parameters(torch::nn::Module& m, const BertModelImpl& bert, const nn::ValueSink& sink) {
  const auto* words = bert.word_embeddings->weight.unsafeGetTensorImpl();
  nn::initialise(
      m,
      [&](const nn::RoledParameter& p, at::Tensor& t) {
        if (p.role == nn::Role::Bias) t.zero_();
        else if (p.role == nn::Role::Norm) t.fill_(1.0);
        else t.normal_(0.0, bert.options.init_std);
        if (p.tensor.unsafeGetTensorImpl() == words && bert.options.pad_token_id >= 0)
          t[bert.options.pad_token_id].zero_();
      },
      sink);
}

}  // namespace

BertModelImpl::BertModelImpl(ModelOptions o, bool with_pooler) : options(std::move(o)) {
  options.validate(Arch::Bert);
  const auto& op = options;
  {
    nn::SkipInitGuard layers_draw_nothing;  // reset_parameters() below draws every parameter once
    word_embeddings = register_module(
        "word_embeddings", nn::Embedding(nn::EmbeddingOptions{op.vocab_size, op.d_model, op.pad_token_id, op.device}));
    position_embeddings = register_module(
        "position_embeddings", nn::Embedding(nn::EmbeddingOptions{op.max_seq_len, op.d_model, -1, op.device}));
    token_type_embeddings = register_module(
        "token_type_embeddings", nn::Embedding(nn::EmbeddingOptions{op.type_vocab_size, op.d_model, -1, op.device}));
    embeddings_norm = register_module("embeddings_norm", nn::Norm(norm_options(op)));
    layers = register_module("layers", torch::nn::ModuleList());
    nn::BlockOptions b;
    b.attention = {.d_model = op.d_model, .n_head = op.n_head, .n_kv_head = 0, .d_head = op.d_head, .causal = false, .bias = true,
                   .attn_dropout = op.attn_dropout, .dropout = op.dropout, .device = op.device};
    b.mlp = {.d_model = op.d_model, .d_ff = op.ff_width(), .activation = op.activation, .bias = true, .dropout = op.dropout,
             .device = op.device};
    b.norm = norm_options(op);
    b.pre_norm = false;
    for (int64_t i = 0; i < op.n_layer; ++i) layers->push_back(nn::Block(b));
    if (with_pooler) pooler = register_module("pooler", nn::Linear(nn::LinearOptions{op.d_model, op.d_model, true, op.device}));
  }
  reset_parameters();
}

void BertModelImpl::reset_parameters(const nn::ValueSink& sink) { init_bert_parameters(*this, *this, sink); }

torch::Tensor BertModelImpl::forward(const torch::Tensor& ids, const torch::Tensor& token_types,
                                     const torch::Tensor& attention_mask) {
  const int64_t T = ids.size(1);
  if (T > options.max_seq_len)
    throw std::invalid_argument("bert: sequence of " + s(T) + " tokens exceeds max_seq_len (" +
                                s(options.max_seq_len) + ")");
  auto positions = at::arange(T, ids.options().dtype(at::kLong));
  auto types = token_types.defined() ? token_types : at::zeros_like(ids);
  auto x = word_embeddings(ids) + position_embeddings(positions) + token_type_embeddings(types);
  x = embeddings_norm(x);
  if (options.dropout > 0 && is_training()) x = at::dropout(x, options.dropout, /*train=*/true);
  nn::AttentionContext ctx;
  if (attention_mask.defined()) ctx.key_mask = attention_mask.to(at::kBool);
  for (std::size_t i = 0; i < layers->size(); ++i)
    x = run_block(static_cast<int64_t>(i), *layers[i]->as<nn::Block>(), x, ctx);
  return x;
}

torch::Tensor BertModelImpl::pool(const torch::Tensor& hidden) {
  if (!pooler) throw std::logic_error("bert: this encoder was built without a pooler");
  return at::tanh(pooler(hidden.select(1, 0)));
}

BertForMaskedLMImpl::BertForMaskedLMImpl(ModelOptions o) {
  {
    nn::SkipInitGuard layers_draw_nothing;  // reset_parameters() below draws every parameter once
    bert = register_module("bert", BertModel(o, /*with_pooler=*/false));
    const auto& op = bert->options;
    mlm_dense = register_module("mlm_dense", nn::Linear(nn::LinearOptions{op.d_model, op.d_model, true, op.device}));
    mlm_norm = register_module("mlm_norm", nn::Norm(norm_options(op)));
    mlm_bias = add(*this, "mlm_bias", torch::empty({op.vocab_size}, op.device), nn::Role::Bias);
  }
  reset_parameters();
}

void BertForMaskedLMImpl::reset_parameters(const nn::ValueSink& sink) { init_bert_parameters(*this, *bert, sink); }

torch::Tensor BertForMaskedLMImpl::head(const torch::Tensor& hidden) {
  auto h = mlm_dense(hidden);
  h = bert->options.activation == nn::Activation::GeluTanh ? at::gelu(h, "tanh") : at::gelu(h);
  return at::linear(mlm_norm(h), bert->word_embeddings->weight, mlm_bias);
}

torch::Tensor BertForMaskedLMImpl::forward(const torch::Tensor& ids, const torch::Tensor& token_types,
                                           const torch::Tensor& attention_mask) {
  return head(bert(ids, token_types, attention_mask));
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(ModelOptions o) {
  {
    nn::SkipInitGuard layers_draw_nothing;  // reset_parameters() below draws every parameter once
    bert = register_module("bert", BertModel(o, /*with_pooler=*/true));
    const auto& op = bert->options;
    classifier = register_module(
        "classifier", nn::Linear(nn::LinearOptions{op.d_model, op.num_labels, true, op.device, nn::Role::OutputHead}));
  }
  reset_parameters();
}

void BertForSequenceClassificationImpl::reset_parameters(const nn::ValueSink& sink) {
  init_bert_parameters(*this, *bert, sink);
}

torch::Tensor BertForSequenceClassificationImpl::forward(const torch::Tensor& ids, const torch::Tensor& token_types,
                                                         const torch::Tensor& attention_mask) {
  auto pooled = bert->pool(bert(ids, token_types, attention_mask));
  if (bert->options.dropout > 0 && is_training()) pooled = at::dropout(pooled, bert->options.dropout, true);
  return classifier(pooled);
}

}  // namespace lathe::models
