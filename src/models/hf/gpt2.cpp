// transformers' GPT-2 (GPT2LMHeadModel): learned positions, layernorm, GELU, biases, Conv1D
// weights stored (in, out).

#include "family.hpp"

namespace lathe::models::hf {
namespace {

Table gpt2_table(const ModelOptions& o) {
  Table t{{"wte.weight", {"transformer.wte.weight"}}, {"wpe.weight", {"transformer.wpe.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "transformer.h." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "ln_1.", true);
    add_wb(t, p + "attn.qkv.", h + "attn.c_attn.", true, Xf::Transpose);
    add_wb(t, p + "attn.proj.", h + "attn.c_proj.", true, Xf::Transpose);
    add_wb(t, p + "ln_2.", h + "ln_2.", true);
    add_wb(t, p + "mlp.fc.", h + "mlp.c_fc.", true, Xf::Transpose);
    add_wb(t, p + "mlp.proj.", h + "mlp.c_proj.", true, Xf::Transpose);
  }
  add_wb(t, "ln_f.", "transformer.ln_f.", true);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

const KeyTable kGpt2Keys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "n_positions"}, {"d_model", "n_embd"},
                         {"n_layer", "n_layer"}, {"n_head", "n_head"}, {"d_ff", "n_inner"},
                         {"norm_eps", "layer_norm_epsilon"}, {"dropout", "resid_pdrop"}, {"attn_dropout", "attn_pdrop"},
                         {"init_std", "initializer_range"}, {"tie_embeddings", "tie_word_embeddings"}};

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions gpt2;  // GPT2Config's defaults
  gpt2.dropout = gpt2.attn_dropout = 0.1;
  ModelOptions o = read_keys(c, dir, kGpt2Keys, gpt2);
  o.activation = read_activation(c, dir, "activation_function", "gelu_new");
  for (const char* key : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"})
    if (get<bool>(c, dir, key, false)) unsupported(dir, key, true, "lathe's GPT-2 attention is the standard one");
  if (!get<bool>(c, dir, "scale_attn_weights", true))
    unsupported(dir, "scale_attn_weights", false, "attention is always scaled by 1/sqrt(head_dim)");
  return o;
}

json write(const ModelOptions& o) {
  check_heads_fill_width(o, "gpt2");
  json c = {{"architectures", {"GPT2LMHeadModel"}},
            {"model_type", "gpt2"},
            {"activation_function", o.activation == nn::Activation::Gelu ? "gelu" : "gelu_new"},
            {"embd_pdrop", o.dropout},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr}};
  write_keys(c, kGpt2Keys, Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return o.position == nn::Position::Learned && o.norm == nn::NormKind::LayerNorm && o.bias &&
         o.n_kv_head == 0 && !nn::gated(o.activation) && o.sliding_window == 0 && !o.scale_embeddings &&
         plain_blocks(o);
}

}  // namespace

const GptFamily& gpt2_family() {
  static const GptFamily family{
      "gpt2", "learned positions, layernorm, gelu and biases", holds, read, write, gpt2_table,
      Layout{"transformer.", {"lm_head."}, {".attn.bias", ".attn.masked_bias", "lm_head.weight"}}};
  return family;
}

}  // namespace lathe::models::hf
