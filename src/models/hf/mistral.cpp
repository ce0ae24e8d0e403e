// transformers' Mistral (MistralForCausalLM): Llama's layout without biases, grouped-query
// attention and a sliding attention window.

#include "family.hpp"

namespace lathe::models::hf {
namespace {

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions mistral = llama_style_defaults();  // MistralConfig's defaults for the keys it may omit
  mistral.max_seq_len = 4096 * 32;
  mistral.n_kv_head = 8;
  ModelOptions o = read_keys(c, dir, llama_keys(), mistral);
  read_kv_heads(c, o);
  read_rope(c, dir, o);
  if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
    unsupported(dir, "hidden_act", act, "Mistral's MLP is SwiGLU (silu)");
  // null: no window (Mistral 7B v0.2 and later); absent: MistralConfig's 4096.
  o.sliding_window = c.contains("sliding_window") ? get<int64_t>(c, dir, "sliding_window", 0) : 4096;
  if (o.sliding_window < 0) unsupported(dir, "sliding_window", o.sliding_window, "a window of positions >= 1");
  read_head_dim(c, dir, o);
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"MistralForCausalLM"}},
            {"model_type", "mistral"},
            {"head_dim", o.head_dim()},
            {"hidden_act", "silu"},
            {"rope_parameters", rope_json(o)},
            {"sliding_window", o.sliding_window},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr}};
  write_keys(c, llama_keys(), Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return llama_style(o) && !o.bias && !o.qkv_bias && o.sliding_window > 0 && plain_blocks(o);
}

}  // namespace

const GptFamily& mistral_family() {
  static const GptFamily family{"mistral", "rope, rmsnorm and swiglu without biases, with a sliding window", holds,
                                read, write, llama_tensors, llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
