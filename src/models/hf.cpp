// Hugging Face config.json + model.safetensors: the GPT families transformers has, and the
// public entry points (BERT's are in hf/bert.cpp). A family is a file of its own under hf/
// (its key table, tensor names, layout, config reader and writer, and which GPTs it holds)
// plus its line in gpt_families() below.

#include "lathe/models/hf.hpp"

#include <array>

#include <fmt/format.h>

#include "hf/family.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/nn/init.hpp"

namespace lathe::models {
namespace hf {
const GptFamily& gpt2_family();
const GptFamily& llama_family();
const GptFamily& qwen2_family();
const GptFamily& mistral_family();
const GptFamily& gemma_family();
const GptFamily& gemma2_family();
const GptFamily& phi3_family();
}  // namespace hf

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using hf::GptFamily;

/// The GPT families, in the order save_hf tries them.
const auto& gpt_families() {
  static const std::array families{&hf::gpt2_family(),  &hf::llama_family(),  &hf::qwen2_family(),
                                   &hf::mistral_family(), &hf::gemma_family(), &hf::gemma2_family(),
                                   &hf::phi3_family()};
  return families;
}

/// How config.json carries each model option, one row per option in models::visit's order:
/// through the families' key tables (src/models/hf/<family>.cpp) or their read/write functions
/// above, a value fixed by the family (checked where save_hf chooses the family), or a refusal.
struct HfOption {
  std::string_view key;
  std::string_view how;
};
constexpr std::array kHfOptions{
    HfOption{"n_layer", "key tables"},
    HfOption{"n_head", "key tables"},
    HfOption{"n_kv_head", "llama: num_key_value_heads; gpt2 and bert have none (not gpt2-shaped)"},
    HfOption{"d_model", "key tables"},
    HfOption{"head_dim", "llama: head_dim; gpt2 and bert derive it (check_heads_fill_width)"},
    HfOption{"d_ff", "key tables"},
    HfOption{"max_seq_len", "key tables"},
    HfOption{"vocab_size", "key tables"},
    HfOption{"dropout", "key tables (gpt2 also embd_pdrop); llama has none"},
    HfOption{"attn_dropout", "key tables"},
    HfOption{"bias", "llama: attention_bias and mlp_bias; gpt2 always, bert always; qwen2 and mistral never"},
    HfOption{"qkv_bias", "qwen2: always (q, k, v biases); llama and mistral: never alone; gpt2 and bert: bias"},
    HfOption{"norm", "the family: gpt2 and bert layernorm, llama and kin rmsnorm, gemma rmsnorm_offset"},
    HfOption{"norm_eps", "key tables"},
    HfOption{"activation", "gpt2: activation_function; bert: hidden_act; llama and kin: silu (swiglu); gemma: "
                           "geglu_tanh (hidden_act gelu or gelu_pytorch_tanh)"},
    HfOption{"position", "the family: gpt2 and bert learned, llama rope"},
    HfOption{"rope_theta", "llama, qwen2, mistral: rope_theta / rope_parameters"},
    HfOption{"rope_scaling", "llama, qwen2, mistral: rope_parameters.rope_type (default, linear, llama3)"},
    HfOption{"rope_factor", "rope_parameters.factor"},
    HfOption{"rope_low_freq_factor", "rope_parameters.low_freq_factor"},
    HfOption{"rope_high_freq_factor", "rope_parameters.high_freq_factor"},
    HfOption{"rope_original_max_seq_len", "rope_parameters.original_max_position_embeddings"},
    HfOption{"sliding_window", "mistral, gemma2, phi3: sliding_window; qwen2 refuses use_sliding_window; others have "
                               "none"},
    HfOption{"sliding_window_pattern", "gemma2: layer_types; the others have one window for every layer (plain_blocks)"},
    HfOption{"attn_scale_dim", "gemma2: query_pre_attn_scalar; the others scale by the head width (plain_blocks)"},
    HfOption{"attn_softcap", "gemma2: attn_logit_softcapping; the others have none (plain_blocks)"},
    HfOption{"logit_softcap", "gemma2: final_logit_softcapping; the others have none (plain_blocks)"},
    HfOption{"sandwich_norm", "the family: gemma2 always (post_attention / post_feedforward norms), the others never"},
    HfOption{"tie_embeddings", "key tables (tie_word_embeddings)"},
    HfOption{"scale_embeddings", "the family: gemma and gemma2 always, the others never"},
    HfOption{"init_std", "key tables (initializer_range)"},
    HfOption{"type_vocab_size", "bert: type_vocab_size"},
    HfOption{"num_labels", "bert: num_labels, id2label"},
    HfOption{"pad_token_id", "bert: pad_token_id"},
    HfOption{"pooler", "bert: whether pooler.dense is among the tensors (BertModel); gpt families have none"},
};
static_assert(covers_every_option(kHfOptions),
              "src/models/hf.cpp: kHfOptions needs a row for every model option, in models::visit's order: a model "
              "option was added, removed or renamed; carry it in config.json for each family, or refuse it");

const GptFamily& family_of(const json& c, const fs::path& dir) {
  const auto type = hf::model_type(c, dir);
  std::string known;
  for (const auto* f : gpt_families()) {
    if (f->model_type == type) return *f;
    known += (known.empty() ? "" : ", ") + std::string(f->model_type);
  }
  throw Error((dir / "config.json").string() + ": model_type '" + type + "' is not a GPT lathe reads (" + known + ")");
}

}  // namespace

std::string read_hf_model_type(const fs::path& dir) { return hf::model_type(hf::read_config(dir), dir); }

at::ScalarType hf_storage_dtype(const fs::path& dir) {
  const json c = hf::read_config(dir);
  const auto name = hf::get<std::string>(c, dir, "dtype", hf::get<std::string>(c, dir, "torch_dtype", "float32"));
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  hf::unsupported(dir, c.contains("dtype") ? "dtype" : "torch_dtype", name, "float32, bfloat16 or float16 weights");
}

bool is_hf_model_dir(const fs::path& dir) {
  auto j = io::read_json_if_valid(dir / "config.json");
  return j && j->is_object() && j->contains("model_type");
}

ModelOptions read_hf_gpt_config(const fs::path& dir) {
  const json c = hf::read_config(dir);
  const auto o = family_of(c, dir).read(c, dir);
  hf::validate_read(o, Arch::Gpt, dir);
  return o;
}

Gpt load_hf_gpt(const fs::path& dir, io::Read read) {
  const json c = hf::read_config(dir);
  const auto& family = family_of(c, dir);
  auto options = family.read(c, dir);
  hf::validate_read(options, Arch::Gpt, dir);
  Gpt model = [&] {
    nn::SkipInitGuard skip_init;  // every parameter is read (or the file is refused)
    return Gpt(options);
  }();
  hf::load_tensors(*model, family.tensors(options), hf::weights_files(dir), family.layout, {}, nullptr, read);
  model->hf_family = family.model_type;
  return model;
}

std::pair<Gpt, nn::ValueSource> open_hf_gpt(const fs::path& dir) {
  const json c = hf::read_config(dir);
  const auto& family = family_of(c, dir);
  auto options = family.read(c, dir);
  hf::validate_read(options, Arch::Gpt, dir);
  options.device = at::kMeta;
  Gpt model = [&] {
    nn::SkipInitGuard skip_init;
    return Gpt(options);
  }();
  auto values = hf::tensor_values(*model, family.tensors(options), hf::weights_files(dir), family.layout, {}, nullptr,
                                  io::Read::Map);
  model->hf_family = family.model_type;
  return {model, std::move(values)};
}

namespace {

/// The family save_hf writes a GPT of options `o` as: `wanted` when it holds them, else the
/// first that does.
const GptFamily& write_family(const ModelOptions& o, const std::string& wanted) {
  for (const auto* f : gpt_families())
    if (f->model_type == wanted && f->holds(o)) return *f;
  std::string needs;
  for (const auto* f : gpt_families()) {
    if (f->holds(o)) return *f;
    needs += fmt::format("{}{} needs {}", needs.empty() ? "" : "; ", f->model_type, f->needs);
  }
  throw Error(fmt::format("this GPT has no Hugging Face counterpart: {}; and only gemma2 has soft-capping, sandwich "
                          "norms, alternating windows or a score scale other than the head width (got position {}, "
                          "norm {}, activation {})",
                          needs, enum_name(o.position), enum_name(o.norm), enum_name(o.activation)));
}

/// The options a GPT is written with: a head separated from a tied embedding (to be quantized)
/// holds other values than the table and is written as an untied lm_head.
ModelOptions written_options(const GptImpl& model) {
  auto o = model.options;
  if (model.lm_head) o.tie_embeddings = false;
  return o;
}

}  // namespace

std::vector<std::string> save_hf(Gpt& model, const fs::path& dir, const HfWriteOptions& options) {
  const auto o = written_options(*model);
  const auto& f = write_family(o, options.family.empty() ? model->hf_family : options.family);
  return hf::save_tensors(*model, f.tensors(o), dir, f.write(o), options);
}

HfNaming hf_naming(const Gpt& model) {
  const auto o = written_options(*model);
  const auto& f = write_family(o, model->hf_family);
  HfNaming naming{std::string(f.model_type), false, {}};
  for (const auto& rule : f.tensors(o)) {
    naming.transposed_linears = naming.transposed_linears || rule.xf == hf::Xf::Transpose;
    naming.tensors.push_back({rule.ours, rule.theirs, rule.sizes});
  }
  return naming;
}

}  // namespace lathe::models
