// Recipe model section -> model options.

#include "lathe/models/config.hpp"

#include <fmt/format.h>

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

namespace {

class Differences {
 public:
  template <class T>
  void check(const char* key, const T& have, const T& want) {
    if (have != want) out.push_back(fmt::format("model.{}: {} in the checkpoint, {} in the recipe", key, text(have), text(want)));
  }
  std::vector<std::string> out;

 private:
  template <class T>
  static std::string text(const T& v) {
    if constexpr (std::is_enum_v<T>) return std::string(recipe::enum_name(v));
    else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
    else return fmt::format("{}", v);
  }
};

int64_t ff_width(int64_t d_ff, int64_t d_model) { return d_ff > 0 ? d_ff : 4 * d_model; }

/// The keys GPT and BERT options share.
template <class Options>
Differences shared_differences(const Options& have, const Options& want) {
  Differences d;
  d.check("vocab_size", have.vocab_size, want.vocab_size);
  d.check("max_seq_len", have.max_seq_len, want.max_seq_len);
  d.check("n_layer", have.n_layer, want.n_layer);
  d.check("n_head", have.n_head, want.n_head);
  d.check("d_model", have.d_model, want.d_model);
  d.check("d_ff", ff_width(have.d_ff, have.d_model), ff_width(want.d_ff, want.d_model));
  d.check("norm_eps", have.norm_eps, want.norm_eps);
  d.check("activation", have.activation, want.activation);
  return d;
}

}  // namespace

std::vector<std::string> architecture_differences(const GptOptions& have, const GptOptions& want) {
  auto d = shared_differences(have, want);
  d.check("n_kv_head", have.n_kv_head > 0 ? have.n_kv_head : have.n_head,
          want.n_kv_head > 0 ? want.n_kv_head : want.n_head);
  d.check("bias", have.bias, want.bias);
  d.check("norm", have.norm, want.norm);
  d.check("position", have.position, want.position);
  if (want.position == recipe::Position::Rope) d.check("rope_theta", have.rope_theta, want.rope_theta);
  d.check("tie_embeddings", have.tie_embeddings, want.tie_embeddings);
  return d.out;
}

std::vector<std::string> architecture_differences(const BertOptions& have, const BertOptions& want) {
  auto d = shared_differences(have, want);
  d.check("type_vocab_size", have.type_vocab_size, want.type_vocab_size);
  return d.out;
}

}  // namespace lathe::models
