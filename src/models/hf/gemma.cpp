// transformers' Gemma (GemmaForCausalLM): Llama's tensor names with token embeddings scaled by
// sqrt(hidden_size), RMSNorm weights stored as the scale minus one, a GeGLU MLP (the tanh GELU on
// the gate, whether hidden_act says gelu or gelu_pytorch_tanh), head_dim 256 unless the config says otherwise and a tied
// head. Gemma 2 (gemma2.cpp) reads the same keys through read_gemma_keys.

#include "family.hpp"

namespace lathe::models::hf {

ModelOptions read_gemma_keys(const json& c, const fs::path& dir, int64_t kv_heads, bool sandwich) {
  ModelOptions gemma = llama_style_defaults();  // GemmaConfig's / Gemma2Config's defaults for the keys they may omit
  gemma.norm = nn::NormKind::RmsNormOffset;
  gemma.activation = nn::Activation::GeGluTanh;
  gemma.scale_embeddings = true;
  gemma.sandwich_norm = sandwich;
  gemma.tie_embeddings = true;
  gemma.max_seq_len = 8192;
  gemma.n_kv_head = kv_heads;
  ModelOptions o = read_keys(c, dir, llama_keys(), gemma);
  read_kv_heads(c, o);
  read_rope(c, dir, o);
  if (get<bool>(c, dir, "attention_bias", false))
    unsupported(dir, "attention_bias", true, "Gemma without biases (lathe's bias switch covers the MLP too)");
  if (get<bool>(c, dir, "use_bidirectional_attention", false))
    unsupported(dir, "use_bidirectional_attention", true, "causal attention");
  const auto head_dim = get<int64_t>(c, dir, "head_dim", 256);
  if (head_dim < 1) unsupported(dir, "head_dim", head_dim, "head_dim must be positive");
  o.d_head = head_dim;
  return o;
}

namespace {

ModelOptions read(const json& c, const fs::path& dir) {
  ModelOptions o = read_gemma_keys(c, dir, 16, false);
  // transformers' GemmaConfig reads hidden_act "gelu" (the published configs') as
  // gelu_pytorch_tanh: Gemma's gate is the tanh GELU.
  const auto act = get<std::string>(c, dir, "hidden_act", "gelu_pytorch_tanh");
  if (act != "gelu" && act != "gelu_pytorch_tanh" && act != "gelu_new" && act != "gelu_fast")
    unsupported(dir, "hidden_act", act, "Gemma's MLP gates with the tanh GELU");
  return o;
}

json write(const ModelOptions& o) {
  json c = {{"architectures", {"GemmaForCausalLM"}},
            {"model_type", "gemma"},
            {"head_dim", o.head_dim()},
            {"hidden_act", "gelu_pytorch_tanh"},
            {"rope_parameters", rope_json(o)},
            {"attention_bias", false},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr},
            {"pad_token_id", nullptr}};
  write_keys(c, llama_keys(), Arch::Gpt, o);
  return c;
}

bool holds(const ModelOptions& o) {
  return o.position == nn::Position::Rope && o.norm == nn::NormKind::RmsNormOffset &&
         o.activation == nn::Activation::GeGluTanh && o.scale_embeddings &&
         !o.bias && !o.qkv_bias && o.sliding_window == 0 && plain_blocks(o);
}

}  // namespace

const GptFamily& gemma_family() {
  static const GptFamily family{
      "gemma", "rope, rmsnorm_offset, geglu_tanh and scaled embeddings without biases or a sliding window",
      holds, read, write, llama_tensors, llama_layout()};
  return family;
}

}  // namespace lathe::models::hf
