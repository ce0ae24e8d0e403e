// transformers' Llama (LlamaForCausalLM): rotary positions, RMSNorm, SwiGLU, grouped-query
// attention, separate q / k / v and gate / up projections.

#include "family.hpp"

namespace lathe::models::hf {
namespace {

Table llama_table(const ModelOptions& o) {
  const int64_t q = o.n_head * o.head_dim(), kv = o.kv_heads() * o.head_dim(), ff = o.ff_width();
  Table t{{"wte.weight", {"model.embed_tokens.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "input_layernorm.", false);
    add_stacked(t, p + "attn.qkv.", h + "self_attn.", {"q_proj", "k_proj", "v_proj"}, {q, kv, kv}, o.bias);
    add_wb(t, p + "attn.proj.", h + "self_attn.o_proj.", o.bias);
    add_wb(t, p + "ln_2.", h + "post_attention_layernorm.", false);
    add_stacked(t, p + "mlp.fc.", h + "mlp.", {"gate_proj", "up_proj"}, {ff, ff}, o.bias);
    add_wb(t, p + "mlp.proj.", h + "mlp.down_proj.", o.bias);
  }
  add_wb(t, "ln_f.", "model.norm.", false);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

const KeyTable kLlamaKeys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                          {"d_model", "hidden_size", true}, {"n_layer", "num_hidden_layers", true},
                          {"n_head", "num_attention_heads", true}, {"n_kv_head", "num_key_value_heads"},
                          {"d_ff", "intermediate_size", true}, {"norm_eps", "rms_norm_eps"},
                          {"rope_theta", "rope_theta"}, {"attn_dropout", "attention_dropout"},
                          {"init_std", "initializer_range"}, {"tie_embeddings", "tie_word_embeddings"}};

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions llama;  // LlamaConfig's defaults for the keys it may omit
  llama.max_seq_len = 2048;
  llama.norm = nn::NormKind::RmsNorm;
  llama.norm_eps = 1e-6;
  llama.activation = nn::Activation::SwiGlu;
  llama.position = nn::Position::Rope;
  llama.tie_embeddings = false;
  ModelOptions o = read_keys(c, dir, kLlamaKeys, llama);
  if (o.n_kv_head == o.n_head) o.n_kv_head = 0;
  if (c.contains("rope_parameters") && c["rope_parameters"].is_object()) {
    const auto& rp = c["rope_parameters"];
    if (rp.value("rope_type", "default") != "default")
      unsupported(dir, "rope_parameters.rope_type", rp["rope_type"], "only the default rotary embedding");
    o.rope_theta = rp.value("rope_theta", o.rope_theta);
  }
  if (c.contains("rope_scaling") && !c["rope_scaling"].is_null())
    unsupported(dir, "rope_scaling", c["rope_scaling"], "only the default rotary embedding");
  const bool attn_bias = get<bool>(c, dir, "attention_bias", false), mlp_bias = get<bool>(c, dir, "mlp_bias", false);
  if (attn_bias != mlp_bias)
    unsupported(dir, "attention_bias", attn_bias, "lathe has one bias switch; attention_bias must equal mlp_bias");
  o.bias = attn_bias;
  if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
    unsupported(dir, "hidden_act", act, "Llama's MLP is SwiGLU (silu)");
  // Llama's head_dim may differ from hidden_size / num_attention_heads (a model with pruned heads).
  if (o.n_head > 0)
    if (auto hd = get<int64_t>(c, dir, "head_dim", o.d_model / o.n_head); hd != o.d_model / o.n_head) {
      if (hd < 1) unsupported(dir, "head_dim", hd, "head_dim must be positive");
      o.d_head = hd;
    }
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"head_dim", o.head_dim()},
            {"hidden_act", "silu"},
            {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", o.rope_theta}}},
            {"attention_bias", o.bias},
            {"mlp_bias", o.bias},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr}};
  write_keys(c, kLlamaKeys, Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return o.position == nn::Position::Rope && o.norm == nn::NormKind::RmsNorm &&
         o.activation == nn::Activation::SwiGlu;
}

}  // namespace

const GptFamily& llama_family() {
  static const GptFamily family{"llama", "rope, rmsnorm and swiglu", holds, read, write, llama_table,
                                Layout{"model.", {"lm_head."}, {"rotary_emb.inv_freq", "lm_head.weight"}}};
  return family;
}

}  // namespace lathe::models::hf
