// transformers' Gemma 2 (Gemma2ForCausalLM): Gemma's scaled embeddings, offset RMSNorms and
// GeGLU, plus four norms per block (input, post-attention, pre- and post-feedforward), attention
// scores scaled by query_pre_attn_scalar and soft-capped (attn_logit_softcapping), soft-capped
// output logits (final_logit_softcapping), and layers that alternate between a sliding window
// and full attention (layer_types).

#include "family.hpp"

#include <algorithm>

namespace lathe::models::hf {
namespace {

Table tensors(const ModelOptions& o) {
  const int64_t q = o.n_head * o.head_dim(), kv = o.kv_heads() * o.head_dim(), ff = o.ff_width();
  Table t{{"wte.weight", {"model.embed_tokens.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "input_layernorm.", false);
    add_stacked(t, p + "attn.qkv.", h + "self_attn.", {"q_proj", "k_proj", "v_proj"}, {q, kv, kv}, false);
    add_wb(t, p + "attn.proj.", h + "self_attn.o_proj.", false);
    add_wb(t, p + "post_ln_1.", h + "post_attention_layernorm.", false);
    add_wb(t, p + "ln_2.", h + "pre_feedforward_layernorm.", false);
    add_stacked(t, p + "mlp.fc.", h + "mlp.", {"gate_proj", "up_proj"}, {ff, ff}, false);
    add_wb(t, p + "mlp.proj.", h + "mlp.down_proj.", false);
    add_wb(t, p + "post_ln_2.", h + "post_feedforward_layernorm.", false);
  }
  add_wb(t, "ln_f.", "model.norm.", false);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

/// A soft-capping key: absent, Gemma2Config's default; null, none. 0 (transformers divides by
/// it: NaN logits) and negative caps are refused.
double read_cap(const json& c, const fs::path& dir, const std::string& key, double fallback) {
  if (!c.contains(key)) return fallback;
  if (c[key].is_null()) return 0.0;
  const double cap = get<double>(c, dir, key, 0.0);
  if (cap <= 0) unsupported(dir, key, c[key], "a cap > 0, or null for none");
  return cap;
}

/// layer_types as lathe's window and pattern: all full (no window), all sliding (pattern 0),
/// or every k-th layer full (pattern k); anything else is refused by name.
void read_layer_types(const json& c, const fs::path& dir, ModelOptions& o) {
  const int64_t n = o.n_layer;
  std::vector<bool> full(static_cast<std::size_t>(n));
  if (!c.contains("layer_types") || c["layer_types"].is_null()) {
    for (int64_t i = 0; i < n; ++i) full[i] = (i + 1) % 2 == 0;  // Gemma2Config's default
  } else {
    const auto& types = c["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != n)
      unsupported(dir, "layer_types", types, "a list of num_hidden_layers (" + std::to_string(n) + ") layer types");
    for (int64_t i = 0; i < n; ++i) {
      const auto& t = types[i];
      if (t != "full_attention" && t != "sliding_attention")
        unsupported(dir, "layer_types[" + std::to_string(i) + "]", t, "full_attention or sliding_attention");
      full[i] = t == "full_attention";
    }
  }
  const auto fulls = std::count(full.begin(), full.end(), true);
  if (fulls == n) {
    o.sliding_window = 0;
    return;
  }
  // transformers' Gemma 2 fails on a sliding layer without a window of at least one position.
  if (o.sliding_window < 1)
    unsupported(dir, "sliding_window", c.contains("sliding_window") ? c["sliding_window"] : json(o.sliding_window),
                "a window of positions >= 1 where layer_types has sliding_attention");
  if (fulls == 0) return;  // every layer windowed
  for (int64_t k = 2; k <= n; ++k) {
    bool fits = true;
    for (int64_t i = 0; i < n && fits; ++i) fits = full[i] == ((i + 1) % k == 0);
    if (fits) {
      o.sliding_window_pattern = k;
      return;
    }
  }
  unsupported(dir, "layer_types", c["layer_types"],
              "layers that alternate regularly: every k-th (counted from 1) with full attention, the others windowed");
}

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions o = read_gemma_keys(c, dir, 4, /*sandwich=*/true);
  // Gemma2Config takes hidden_activation at its word: "gelu" is the exact GELU here.
  const auto act = get<std::string>(c, dir, "hidden_activation", "gelu_pytorch_tanh");
  if (act == "gelu") o.activation = nn::Activation::GeGlu;
  else if (act != "gelu_pytorch_tanh" && act != "gelu_new" && act != "gelu_fast")
    unsupported(dir, "hidden_activation", act, "Gemma 2's MLP gates with a GELU (gelu or gelu_pytorch_tanh)");
  const auto scalar = get<double>(c, dir, "query_pre_attn_scalar", 256.0);
  if (scalar < 1 || scalar != static_cast<double>(static_cast<int64_t>(scalar)))
    unsupported(dir, "query_pre_attn_scalar", c["query_pre_attn_scalar"], "a whole number >= 1");
  o.attn_scale_dim = static_cast<int64_t>(scalar);
  o.attn_softcap = read_cap(c, dir, "attn_logit_softcapping", 50.0);
  o.logit_softcap = read_cap(c, dir, "final_logit_softcapping", 30.0);
  // Absent: Gemma2Config's 4096; null or below 1 is refused where a layer slides (read_layer_types).
  o.sliding_window = c.contains("sliding_window") ? get<int64_t>(c, dir, "sliding_window", 0) : 4096;
  read_layer_types(c, dir, o);
  return o;
}

json write(const ModelOptions& o) {
  json types = json::array();
  for (int64_t i = 0; i < o.n_layer; ++i) types.push_back(o.layer_window(i) > 0 ? "sliding_attention" : "full_attention");
  auto cap = [](double v) { return v > 0 ? json(v) : json(nullptr); };
  json c = {{"architectures", {"Gemma2ForCausalLM"}},
            {"model_type", "gemma2"},
            {"head_dim", o.head_dim()},
            {"hidden_activation", o.activation == nn::Activation::GeGlu ? "gelu" : "gelu_pytorch_tanh"},
            {"rope_parameters", rope_json(o)},
            {"attention_bias", false},
            {"query_pre_attn_scalar", o.attn_scale_dim > 0 ? o.attn_scale_dim : o.head_dim()},
            {"attn_logit_softcapping", cap(o.attn_softcap)},
            {"final_logit_softcapping", cap(o.logit_softcap)},
            // Without a window every layer is full_attention, but transformers' Gemma 2 builds its
            // sliding mask anyway and needs a value: Gemma2Config's default.
            {"sliding_window", o.sliding_window > 0 ? o.sliding_window : int64_t{4096}},
            {"layer_types", types},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr},
            {"pad_token_id", nullptr}};
  write_keys(c, llama_keys(), Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return o.position == nn::Position::Rope && o.norm == nn::NormKind::RmsNormOffset &&
         (o.activation == nn::Activation::GeGluTanh || o.activation == nn::Activation::GeGlu) && o.scale_embeddings &&
         o.sandwich_norm && !o.bias && !o.qkv_bias;
}

}  // namespace

const GptFamily& gemma2_family() {
  static const GptFamily family{
      "gemma2", "rope, rmsnorm_offset, geglu or geglu_tanh, scaled embeddings and sandwich norms without biases",
      holds, read, write, tensors, llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
