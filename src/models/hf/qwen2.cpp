// transformers' Qwen2 / Qwen2.5 (Qwen2ForCausalLM): Llama's layout with biases on the q, k and v
// projections alone; its per-layer sliding window is refused by name.

#include "family.hpp"

namespace lathe::models::hf {
namespace {

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions qwen2 = llama_style_defaults();  // Qwen2Config's defaults for the keys it may omit
  qwen2.max_seq_len = 32768;
  qwen2.qkv_bias = true;
  qwen2.n_kv_head = 32;
  ModelOptions o = read_keys(c, dir, llama_keys(), qwen2);
  read_kv_heads(c, o);
  read_rope(c, dir, o);
  if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
    unsupported(dir, "hidden_act", act, "Qwen2's MLP is SwiGLU (silu)");
  if (get<bool>(c, dir, "use_sliding_window", false))
    unsupported(dir, "use_sliding_window", true, "lathe's Qwen2 attends to every earlier position in every layer");
  if (c.contains("layer_types") && c["layer_types"].is_array())
    for (const auto& type : c["layer_types"])
      if (type != "full_attention") unsupported(dir, "layer_types", type, "every layer full_attention");
  read_head_dim(c, dir, o);
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"Qwen2ForCausalLM"}},
            {"model_type", "qwen2"},
            {"hidden_act", "silu"},
            {"rope_parameters", rope_json(o)},
            {"use_sliding_window", false},
            {"sliding_window", nullptr},
            {"layer_types", std::vector<std::string>(static_cast<std::size_t>(o.n_layer), "full_attention")},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr}};
  if (o.head_dim() * o.n_head != o.d_model) c["head_dim"] = o.head_dim();
  write_keys(c, llama_keys(), Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return llama_style(o) && !o.bias && o.qkv_bias && o.sliding_window == 0 && plain_blocks(o);
}

}  // namespace

const GptFamily& qwen2_family() {
  static const GptFamily family{"qwen2", "rope, rmsnorm and swiglu with biases on q, k and v alone", holds, read,
                                write, llama_tensors, llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
