// Recipe model section -> model options.

#include "lathe/models/config.hpp"

namespace lathe::models {

GptOptions gpt_options(const recipe::ModelConfig& m, int64_t vocab_size) {
  GptOptions o;
  o.vocab_size = m.vocab_size > 0 ? m.vocab_size : vocab_size;
  o.max_seq_len = m.max_seq_len;
  o.n_layer = m.n_layer;
  o.n_head = m.n_head;
  o.n_kv_head = m.n_kv_head;
  o.d_model = m.d_model;
  o.d_ff = m.d_ff;
  o.dropout = m.dropout;
  o.attn_dropout = m.attn_dropout;
  o.bias = m.bias;
  o.norm = m.norm;
  o.norm_eps = m.norm_eps;
  o.activation = m.activation;
  o.position = m.position;
  o.rope_theta = m.rope_theta;
  o.tie_embeddings = m.tie_embeddings;
  o.init_std = m.init_std;
  return o;
}

BertOptions bert_options(const recipe::ModelConfig& m, int64_t vocab_size, int64_t pad_token_id) {
  BertOptions o;
  o.vocab_size = m.vocab_size > 0 ? m.vocab_size : vocab_size;
  o.max_seq_len = m.max_seq_len;
  o.type_vocab_size = m.type_vocab_size;
  o.n_layer = m.n_layer;
  o.n_head = m.n_head;
  o.d_model = m.d_model;
  o.d_ff = m.d_ff;
  o.dropout = m.dropout;
  o.attn_dropout = m.attn_dropout;
  o.norm_eps = m.norm_eps;
  o.activation = m.activation;
  o.pad_token_id = pad_token_id;
  o.num_labels = m.num_labels;
  o.init_std = m.init_std;
  return o;
}

}  // namespace lathe::models
