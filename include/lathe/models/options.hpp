// The options of a transformer, declared once.
//
// Every option is a field of ModelOptions and is declared once more, with its key, its
// documentation, its allowed range and its traits, in `visit` below. That declaration is what
// the recipe binds YAML through (the `model:` section), what the model file stores
// (lathe.model metadata), what Hugging Face config.json is read into and written from, what
// `recipe keys` documents, what a resume compares and what `problems()` checks. Adding an
// option is a field, a line in `visit`, and its use in the layers; the consumers that must say
// what they do with every option (Hugging Face config.json, the ONNX graphs) hold a row per
// key, checked at compile time against model_option_keys(), so a new option does not build
// until each of them has its row.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "lathe/core/enum_table.hpp"
#include "lathe/core/schema.hpp"
#include "lathe/nn/enums.hpp"
#include "lathe/nn/rotary.hpp"

namespace lathe::models {

using lathe::operator<<;

/// gpt: decoder-only causal LM; bert: bidirectional encoder.
enum class Arch { Gpt, Bert };

/// One problem with a set of options: the keys involved (the first is the one to change when
/// the user wrote none of them) and what is wrong, e.g. {"n_head", "d_model"}, "n_head (3)
/// must divide d_model (64)".
struct OptionProblem {
  std::vector<std::string> keys;
  std::string message;
};

struct ModelOptions {
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_kv_head = 0;
  int64_t d_model = 768;
  int64_t d_ff = 0;
  int64_t d_head = 0;
  int64_t max_seq_len = 1024;
  int64_t vocab_size = 0;
  double dropout = 0.0;
  double attn_dropout = 0.0;
  bool bias = true;
  bool qkv_bias = false;
  nn::NormKind norm = nn::NormKind::LayerNorm;
  double norm_eps = 1e-5;
  nn::Activation activation = nn::Activation::GeluTanh;
  nn::Position position = nn::Position::Learned;
  double rope_theta = 10000.0;
  nn::RopeScaling rope_scaling = nn::RopeScaling::None;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_seq_len = 8192;
  int64_t sliding_window = 0;
  int64_t sliding_window_pattern = 0;
  int64_t attn_scale_dim = 0;
  double attn_softcap = 0.0;
  double logit_softcap = 0.0;
  bool sandwich_norm = false;
  bool tie_embeddings = true;
  bool scale_embeddings = false;
  double init_std = 0.02;
  int64_t type_vocab_size = 2;
  int64_t num_labels = 2;
  int64_t pad_token_id = -1;
  bool pooler = true;
  /// Where the parameters are created (meta: shapes only). Not an option of the model itself.
  c10::Device device = c10::kCPU;

  /// BERT-base's values (dropout 0.1, exact GELU, eps 1e-12, 512 positions, 30522 tokens).
  static ModelOptions bert_defaults();

  /// Derived values.
  int64_t ff_width() const { return d_ff > 0 ? d_ff : 4 * d_model; }
  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_dim() const { return d_head > 0 ? d_head : d_model / n_head; }
  /// The window of layer `layer` (0: it attends to every earlier position).
  int64_t layer_window(int64_t layer) const {
    return sliding_window_pattern > 0 && (layer + 1) % sliding_window_pattern == 0 ? 0 : sliding_window;
  }
  /// The rotary frequencies' options (position rope).
  nn::RotaryOptions rotary() const {
    return {rope_theta, rope_scaling, rope_factor, rope_low_freq_factor, rope_high_freq_factor,
            rope_original_max_seq_len};
  }

  /// The same model with derived values filled in (d_ff, n_kv_head) and the options `arch`
  /// does not use at their defaults: two canonical options with equal shape keys build the
  /// same parameters and compute the same function.
  ModelOptions canonical(Arch arch) const;

  /// Every problem, checked in this one place: ranges from the declarations, then the rules
  /// that span keys. `complete`: derived values must be filled in (vocab_size > 0), as when a
  /// model is built; a recipe may leave vocab_size at 0 for the tokenizer's size.
  std::vector<OptionProblem> problems(Arch arch, bool complete) const;
  /// Throws std::invalid_argument("gpt: <problems>") when there is any.
  void validate(Arch arch) const;
};

/// The options of how attention is windowed, scaled and capped (Mistral's window, Gemma 2's
/// blocks), declared in visit's order: visit calls this in their place.
template <class V>
constexpr void visit_attention_shape(V& v, ModelOptions& c) {
  using A = Applies;
  v.field("sliding_window", c.sliding_window, "Each position attends to the last sliding_window positions only, "
                                              "itself included (Mistral). 0: all earlier positions.",
          at_least(0), shape_key(A::Gpt));
  v.field("sliding_window_pattern", c.sliding_window_pattern,
          "With sliding_window: every sliding_window_pattern-th layer (the 2nd, 4th, ... for 2) attends to every "
          "earlier position, the others to the window (Gemma 2: 2). 0: every layer has the window.",
          at_least(0), shape_key(A::Gpt));
  v.field("attn_scale_dim", c.attn_scale_dim, "Attention scores are divided by sqrt(attn_scale_dim) (Gemma 2's "
                                              "query_pre_attn_scalar). 0: head_dim.",
          at_least(0), shape_key(A::Gpt));
  v.field("attn_softcap", c.attn_softcap, "Attention scores s become attn_softcap * tanh(s / attn_softcap) before "
                                          "the mask and softmax (Gemma 2: 50). 0: none.",
          at_least(0.0), shape_key(A::Gpt));
  v.field("logit_softcap", c.logit_softcap, "Output logits z become logit_softcap * tanh(z / logit_softcap), in "
                                            "the loss too (Gemma 2: 30). 0: none.",
          at_least(0.0), shape_key(A::Gpt));
  v.field("sandwich_norm", c.sandwich_norm, "Norms on the outputs of attention and the MLP too, before each "
                                            "residual add (Gemma 2's four norms per block).",
          any_value(), shape_key(A::Gpt));
}

template <class V>
constexpr void visit(V& v, ModelOptions& c) {
  using A = Applies;
  v.field("n_layer", c.n_layer, "Transformer blocks.", at_least(1), shape_key());
  v.field("n_head", c.n_head, "Attention heads; must divide d_model unless head_dim is set.", at_least(1),
          shape_key());
  v.field("n_kv_head", c.n_kv_head, "Key/value heads for grouped-query attention; must divide n_head. "
                                    "0: n_head (plain multi-head attention).",
          at_least(0), shape_key(A::Gpt));
  v.field("d_model", c.d_model, "Width of the residual stream.", at_least(1), shape_key());
  v.field("head_dim", c.d_head, "Width of one attention head. 0: d_model / n_head. A model whose heads were "
                                "pruned keeps its head width with fewer heads.",
          at_least(0), shape_key());
  v.field("d_ff", c.d_ff, "Hidden width of the MLP. 0: 4 * d_model.", at_least(0), shape_key());
  v.field("max_seq_len", c.max_seq_len, "Longest sequence the model accepts (learned position table "
                                        "size).", at_least(1), shape_key());
  v.field("vocab_size", c.vocab_size, "Embedding rows. 0: the tokenizer's vocabulary size; larger values pad "
                                      "it (e.g. to a multiple of 64).",
          at_least(0), shape_key());
  v.field("dropout", c.dropout, "Dropout on embeddings, residual branches and the MLP.", in_closed_open(0.0, 1.0),
          setting());
  v.field("attn_dropout", c.attn_dropout, "Dropout on attention probabilities.", in_closed_open(0.0, 1.0),
          setting());
  v.field("bias", c.bias, "Biases in linear layers and norms.", any_value(), shape_key(A::Gpt));
  v.field("qkv_bias", c.qkv_bias, "Biases in the query/key/value projection even with bias off (Qwen2).",
          any_value(), shape_key(A::Gpt));
  v.field("norm", c.norm, "Normalisation layer: layernorm, rmsnorm, or rmsnorm_offset (Gemma's: the weight "
                          "is the scale minus one).",
          any_value(), shape_key(A::Gpt));
  v.field("norm_eps", c.norm_eps, "Epsilon of the norms.", greater_than(0.0), shape_key());
  v.field("activation", c.activation, "MLP activation: gelu_tanh (GPT-2), gelu (exact, BERT), or gated: swiglu "
                                            "(Llama), geglu / geglu_tanh (Gemma).",
          any_value(), shape_key());
  v.field("position", c.position, "Position encoding: learned table or rotary (rope).", any_value(),
          shape_key(A::Gpt));
  v.field("rope_theta", c.rope_theta, "Base of the rotary frequencies.", greater_than(0.0), shape_key(A::Gpt));
  v.field("rope_scaling", c.rope_scaling, "Stretching of the rotary frequencies for longer contexts: none, "
                                          "linear (all divided by rope_factor) or llama3 (Llama 3.1's rule).",
          any_value(), shape_key(A::Gpt));
  v.field("rope_factor", c.rope_factor, "rope_scaling linear / llama3: the factor.", greater_than(0.0),
          shape_key(A::Gpt));
  v.field("rope_low_freq_factor", c.rope_low_freq_factor, "rope_scaling llama3: wavelengths above "
                                                          "rope_original_max_seq_len / this are divided by rope_factor.",
          greater_than(0.0), shape_key(A::Gpt));
  v.field("rope_high_freq_factor", c.rope_high_freq_factor, "rope_scaling llama3: wavelengths below "
                                                            "rope_original_max_seq_len / this are kept.",
          greater_than(0.0), shape_key(A::Gpt));
  v.field("rope_original_max_seq_len", c.rope_original_max_seq_len, "rope_scaling llama3: the pretraining "
                                                                    "context length.",
          at_least(1), shape_key(A::Gpt));
  visit_attention_shape(v, c);
  v.field("tie_embeddings", c.tie_embeddings, "Share the input embedding with the output projection.", any_value(),
          shape_key(A::Gpt));
  v.field("scale_embeddings", c.scale_embeddings, "Multiply the token embeddings by sqrt(d_model) on the way in "
                                                  "(Gemma); the output projection uses the table as it is.",
          any_value(), shape_key(A::Gpt));
  v.field("init_std", c.init_std, "Standard deviation of the normal initialisation (residual projections "
                                  "are scaled by 1/sqrt(2 * n_layer)).",
          greater_than(0.0), setting());
  v.field("type_vocab_size", c.type_vocab_size, "bert: segment (token type) embeddings.", at_least(1),
          shape_key(A::Bert));
  // The classifier's width; a masked-LM model ignores it, so callers compare it themselves.
  v.field("num_labels", c.num_labels, "bert, classification: number of classes.", at_least(1), setting(A::Bert));
  v.field("pad_token_id", c.pad_token_id, "The [PAD] row of the word embedding, which gets no gradient; -1: none. "
                                          "Taken from the tokenizer.",
          at_least(-1), Traits{.recipe_key = false, .shape = false, .applies = A::Bert});
  v.field("pooler", c.pooler, "bert_encoder: the encoder has its pooler (tanh(dense(first token))), as the "
                              "checkpoint it was read from has one; masked-LM models never do, classifiers always.",
          any_value(), Traits{.recipe_key = false, .shape = true, .applies = A::Bert});
}

namespace detail {
/// Collects the keys `visit` declares, at compile time.
struct OptionKeys {
  std::array<std::string_view, 64> keys{};
  std::size_t count = 0;
  template <class T>
  constexpr void field(std::string_view key, T&, std::string_view, Range, Traits) {
    keys[count++] = key;
  }
};
/// What `visit` walks at compile time: only its fields' names are taken, never their values.
inline ModelOptions named_options;
consteval OptionKeys collect_option_keys() {
  OptionKeys k;
  visit(k, named_options);
  return k;
}
}  // namespace detail

/// How many options `visit` declares.
inline constexpr std::size_t kModelOptionCount = detail::collect_option_keys().count;

/// The keys of every option, in `visit`'s order.
consteval std::array<std::string_view, kModelOptionCount> model_option_keys() {
  std::array<std::string_view, kModelOptionCount> out{};
  for (std::size_t i = 0; i < kModelOptionCount; ++i) out[i] = detail::collect_option_keys().keys[i];
  return out;
}

/// True when `rows` (each with a `key`) names exactly the options, in `visit`'s order: the
/// compile-time check of a consumer's per-option table.
template <class Row, std::size_t N>
consteval bool covers_every_option(const std::array<Row, N>& rows) {
  if (N != kModelOptionCount) return false;
  const auto keys = model_option_keys();
  for (std::size_t i = 0; i < N; ++i)
    if (rows[i].key != keys[i]) return false;
  return true;
}

/// Whether a field declared with `traits` belongs to a model of `arch`.
constexpr bool applies_to(const Traits& traits, Arch arch) {
  return traits.applies == Applies::All || (traits.applies == Applies::Gpt) == (arch == Arch::Gpt);
}

/// The value of the option `key` as the recipe spells it ("rmsnorm", "4", "true"); "" for an
/// unknown key.
std::string option_value(const ModelOptions& options, std::string_view key);

/// The shape keys on which `have` (a checkpoint's, an imported model's) and `want` (the
/// recipe's) disagree after both are made canonical, each as "model.n_layer: 1 in the
/// checkpoint, 2 in the recipe".
std::vector<std::string> architecture_differences(Arch arch, const ModelOptions& have, const ModelOptions& want);

}  // namespace lathe::models

LATHE_ENUM_TABLE(lathe::models::Arch, {lathe::models::Arch::Gpt, "gpt"}, {lathe::models::Arch::Bert, "bert"});
