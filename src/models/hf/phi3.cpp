// transformers' Phi-3 (Phi3ForCausalLM): Llama's computation with the q / k / v projections in
// one tensor (qkv_proj) and gate / up in one (gate_up_proj), rows in lathe's own order, and a
// sliding window when sliding_window is set. It computes what a Llama (no window) or a Mistral
// (a window) of the same options computes: save_hf writes Phi-3 for a model read as Phi-3.

#include "family.hpp"

namespace lathe::models::hf {
namespace {

const KeyTable kPhi3Keys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                         {"d_model", "hidden_size", true}, {"n_layer", "num_hidden_layers", true},
                         {"n_head", "num_attention_heads", true}, {"n_kv_head", "num_key_value_heads"},
                         {"d_ff", "intermediate_size", true}, {"norm_eps", "rms_norm_eps"},
                         {"rope_theta", "rope_theta"}, {"dropout", "resid_pdrop"},
                         {"attn_dropout", "attention_dropout"}, {"init_std", "initializer_range"},
                         {"tie_embeddings", "tie_word_embeddings"}};

Table tensors(const ModelOptions& o) {
  Table t{{"wte.weight", {"model.embed_tokens.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "input_layernorm.", false);
    add_wb(t, p + "attn.qkv.", h + "self_attn.qkv_proj.", false);  // q rows, then k, then v
    add_wb(t, p + "attn.proj.", h + "self_attn.o_proj.", false);
    add_wb(t, p + "ln_2.", h + "post_attention_layernorm.", false);
    add_wb(t, p + "mlp.fc.", h + "mlp.gate_up_proj.", false);  // gate rows, then up
    add_wb(t, p + "mlp.proj.", h + "mlp.down_proj.", false);
  }
  add_wb(t, "ln_f.", "model.norm.", false);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions phi3 = llama_style_defaults();  // Phi3Config's defaults for the keys it may omit
  phi3.max_seq_len = 4096;
  phi3.norm_eps = 1e-5;
  ModelOptions o = read_keys(c, dir, kPhi3Keys, phi3);
  read_kv_heads(c, o);
  // Phi-3's rope_scaling "longrope" (the 128k models; "su" and "yarn" in older files) is refused
  // by read_rope, as is a partial rotary factor (Phi-4-mini) in rope_scaling or at the top level.
  read_rope(c, dir, o);
  if (o.rope_scaling != nn::RopeScaling::None)  // Phi3Config takes default and longrope alone
    unsupported(dir, "rope_parameters.rope_type", std::string(enum_name(o.rope_scaling)),
                "Phi-3's default rotary embedding");
  if (auto f = get<double>(c, dir, "partial_rotary_factor", 1.0); f != 1.0)
    unsupported(dir, "partial_rotary_factor", f, "rotary on every head feature");
  if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
    unsupported(dir, "hidden_act", act, "Phi-3's MLP is SwiGLU (silu)");
  o.sliding_window = get<int64_t>(c, dir, "sliding_window", 0);  // null: none
  if (o.sliding_window < 0) unsupported(dir, "sliding_window", o.sliding_window, "a window of positions >= 1");
  read_head_dim(c, dir, o);
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"Phi3ForCausalLM"}},
            {"model_type", "phi3"},
            {"hidden_act", "silu"},
            {"rope_parameters", rope_json(o)},
            {"original_max_position_embeddings", o.max_seq_len},
            {"embd_pdrop", o.dropout},
            {"sliding_window", o.sliding_window > 0 ? json(o.sliding_window) : json(nullptr)},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr},
            {"pad_token_id", nullptr}};
  if (o.head_dim() * o.n_head != o.d_model) c["head_dim"] = o.head_dim();
  write_keys(c, kPhi3Keys, Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return llama_style(o) && !o.bias && !o.qkv_bias && o.rope_scaling == nn::RopeScaling::None && plain_blocks(o);
}

}  // namespace

const GptFamily& phi3_family() {
  static const GptFamily family{"phi3", "rope, rmsnorm and swiglu without biases", holds, read, write, tensors,
                                llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
