// transformers' Llama (LlamaForCausalLM): rotary positions, RMSNorm, SwiGLU, grouped-query
// attention, separate q / k / v and gate / up projections; Llama 3's rope scaling. Its tensor
// names and rope parameters are shared by the families built on it (qwen2.cpp, mistral.cpp).

#include "family.hpp"

#include <algorithm>

namespace lathe::models::hf {

Table llama_tensors(const ModelOptions& o) {
  const int64_t q = o.n_head * o.head_dim(), kv = o.kv_heads() * o.head_dim(), ff = o.ff_width();
  Table t{{"wte.weight", {"model.embed_tokens.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "input_layernorm.", false);
    add_stacked(t, p + "attn.qkv.", h + "self_attn.", {"q_proj", "k_proj", "v_proj"}, {q, kv, kv}, o.bias || o.qkv_bias);
    add_wb(t, p + "attn.proj.", h + "self_attn.o_proj.", o.bias);
    add_wb(t, p + "ln_2.", h + "post_attention_layernorm.", false);
    add_stacked(t, p + "mlp.fc.", h + "mlp.", {"gate_proj", "up_proj"}, {ff, ff}, o.bias);
    add_wb(t, p + "mlp.proj.", h + "mlp.down_proj.", o.bias);
  }
  add_wb(t, "ln_f.", "model.norm.", false);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

const Layout& llama_layout() {
  static const Layout layout{"model.", {"lm_head."}, {"rotary_emb.inv_freq", "lm_head.weight"}};
  return layout;
}

ModelOptions llama_style_defaults() {
  ModelOptions o;
  o.norm = nn::NormKind::RmsNorm;
  o.norm_eps = 1e-6;
  o.activation = nn::Activation::SwiGlu;
  o.position = nn::Position::Rope;
  o.tie_embeddings = false;
  o.bias = false;
  return o;
}

bool llama_style(const ModelOptions& o) {
  return o.position == nn::Position::Rope && o.norm == nn::NormKind::RmsNorm &&
         o.activation == nn::Activation::SwiGlu && !o.scale_embeddings;
}

void read_rope(const json& c, const fs::path& dir, ModelOptions& o) {
  // transformers 5 writes rope_parameters (rope_theta inside); earlier versions and most
  // published checkpoints a top-level rope_theta and rope_scaling, which wins where both are
  // (transformers takes rope_scaling or rope_parameters).
  std::string where = "rope_parameters";
  json rp = json::object();
  if (c.contains("rope_scaling") && !c["rope_scaling"].is_null() && !c["rope_scaling"].empty()) {
    where = "rope_scaling";
    rp = c["rope_scaling"];
  } else if (c.contains("rope_parameters") && !c["rope_parameters"].is_null()) {
    rp = c["rope_parameters"];
  }
  if (!rp.is_object()) unsupported(dir, where, rp, "rope parameters are an object");
  auto number = [&](const char* key, double fallback) {
    try {
      return rp.contains(key) ? rp[key].get<double>() : fallback;
    } catch (const json::exception&) {
      throw Error((dir / "config.json").string() + ": " + where + "." + key + ": unexpected value " + rp[key].dump());
    }
  };
  o.rope_theta = number("rope_theta", o.rope_theta);
  const auto type = rp.value("rope_type", rp.value("type", std::string("default")));
  std::vector<std::string> known{"rope_type", "type", "rope_theta"};
  if (type == "default") {
    o.rope_scaling = nn::RopeScaling::None;
  } else if (type == "linear" || type == "llama3") {
    o.rope_scaling = type == "linear" ? nn::RopeScaling::Linear : nn::RopeScaling::Llama3;
    if (!rp.contains("factor")) throw Error((dir / "config.json").string() + ": " + where + ": missing key 'factor'");
    o.rope_factor = number("factor", 1.0);
    known.push_back("factor");
    if (type == "llama3") {
      for (const char* key : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
        if (!rp.contains(key)) throw Error((dir / "config.json").string() + ": " + where + ": missing key '" + key + "'");
        known.push_back(key);
      }
      o.rope_low_freq_factor = number("low_freq_factor", 1.0);
      o.rope_high_freq_factor = number("high_freq_factor", 4.0);
      o.rope_original_max_seq_len = static_cast<int64_t>(number("original_max_position_embeddings", 8192));
    }
  } else {
    unsupported(dir, where + ".rope_type", type, "lathe implements default, linear and llama3 rotary embeddings");
  }
  if (number("partial_rotary_factor", 1.0) != 1.0)
    unsupported(dir, where + ".partial_rotary_factor", rp["partial_rotary_factor"], "rotary on every head feature");
  known.push_back("partial_rotary_factor");
  for (const auto& [key, value] : rp.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      unsupported(dir, where + "." + key, value, "a rope parameter of " + type + " lathe does not implement");
}

json rope_json(const ModelOptions& o) {
  json rp = {{"rope_type", o.rope_scaling == nn::RopeScaling::None ? "default" : std::string(enum_name(o.rope_scaling))},
             {"rope_theta", o.rope_theta}};
  if (o.rope_scaling != nn::RopeScaling::None) rp["factor"] = o.rope_factor;
  if (o.rope_scaling == nn::RopeScaling::Llama3) {
    rp["low_freq_factor"] = o.rope_low_freq_factor;
    rp["high_freq_factor"] = o.rope_high_freq_factor;
    rp["original_max_position_embeddings"] = o.rope_original_max_seq_len;
  }
  return rp;
}

const KeyTable& llama_keys() {
  static const KeyTable keys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                             {"d_model", "hidden_size", true}, {"n_layer", "num_hidden_layers", true},
                             {"n_head", "num_attention_heads", true}, {"n_kv_head", "num_key_value_heads"},
                             {"d_ff", "intermediate_size", true}, {"norm_eps", "rms_norm_eps"},
                             {"rope_theta", "rope_theta"}, {"attn_dropout", "attention_dropout"},
                             {"init_std", "initializer_range"}, {"tie_embeddings", "tie_word_embeddings"}};
  return keys;
}

void read_kv_heads(const json& c, ModelOptions& o) {
  if (c.contains("num_key_value_heads") && c["num_key_value_heads"].is_null()) o.n_kv_head = 0;
  if (o.n_kv_head == o.n_head) o.n_kv_head = 0;
}

void read_head_dim(const json& c, const fs::path& dir, ModelOptions& o) {
  // head_dim may differ from hidden_size / num_attention_heads (Llama 3.2 3B's is not; a model
  // with pruned heads, Mistral's Nemo).
  if (o.n_head <= 0) return;
  if (auto hd = get<int64_t>(c, dir, "head_dim", o.d_model / o.n_head); hd != o.d_model / o.n_head) {
    if (hd < 1) unsupported(dir, "head_dim", hd, "head_dim must be positive");
    o.d_head = hd;
  }
}

namespace {

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions llama = llama_style_defaults();  // LlamaConfig's defaults for the keys it may omit
  llama.max_seq_len = 2048;
  ModelOptions o = read_keys(c, dir, llama_keys(), llama);
  read_kv_heads(c, o);
  read_rope(c, dir, o);
  const bool attn_bias = get<bool>(c, dir, "attention_bias", false), mlp_bias = get<bool>(c, dir, "mlp_bias", false);
  if (attn_bias != mlp_bias)
    unsupported(dir, "attention_bias", attn_bias, "lathe has one bias switch; attention_bias must equal mlp_bias");
  o.bias = attn_bias;
  if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
    unsupported(dir, "hidden_act", act, "Llama's MLP is SwiGLU (silu)");
  if (auto tp = get<int64_t>(c, dir, "pretraining_tp", 1); tp != 1)
    unsupported(dir, "pretraining_tp", tp, "the projections are computed whole");
  read_head_dim(c, dir, o);
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"head_dim", o.head_dim()},
            {"hidden_act", "silu"},
            {"rope_parameters", rope_json(o)},
            {"attention_bias", o.bias},
            {"mlp_bias", o.bias},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr}};
  write_keys(c, llama_keys(), Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return llama_style(o) && (o.bias || !o.qkv_bias) && o.sliding_window == 0 && plain_blocks(o);
}

}  // namespace

const GptFamily& llama_family() {
  static const GptFamily family{"llama", "rope, rmsnorm and swiglu without a sliding window or q/k/v-only biases",
                                holds, read, write, llama_tensors, llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
