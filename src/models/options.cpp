// Model options: defaults of BERT, the canonical form, the one validation, comparison.

#include "lathe/models/options.hpp"

#include <stdexcept>
#include <type_traits>

#include <fmt/format.h>

namespace lathe::models {
namespace {

template <class T>
std::string text(const T& v) {
  if constexpr (std::is_enum_v<T>) return std::string(enum_name(v));
  else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else return fmt::format("{}", v);
}

/// Range checks of every declared field that applies to `arch`.
class RangeChecker {
 public:
  RangeChecker(Arch arch, std::vector<OptionProblem>& out) : arch_(arch), out_(out) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range range, Traits traits) {
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      if (applies_to(traits, arch_) && !range.contains(static_cast<double>(value)))
        out_.push_back({{std::string(key)}, fmt::format("{} must be {}, got {}", key, range.describe(), text(value))});
    }
  }

 private:
  Arch arch_;
  std::vector<OptionProblem>& out_;
};

/// The text of every shape field that applies to `arch`, in declaration order.
class ShapeText {
 public:
  explicit ShapeText(Arch arch) : arch_(arch) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits traits) {
    if (traits.shape && applies_to(traits, arch_)) values.emplace_back(std::string(key), text(value));
  }
  std::vector<std::pair<std::string, std::string>> values;

 private:
  Arch arch_;
};

/// The text of one field's value.
struct ValueText {
  std::string_view key;
  std::string found;
  template <class T>
  void field(std::string_view k, T& value, std::string_view, Range, Traits) {
    if (k == key) found = text(value);
  }
};

/// Sets every field that does not apply to `arch` to its default.
class ResetUnused {
 public:
  explicit ResetUnused(Arch arch) : arch_(arch) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits traits) {
    if (applies_to(traits, arch_)) return;
    ModelOptions d;
    ResetFrom<T> from{key, value};
    visit(from, d);
  }

 private:
  template <class T>
  struct ResetFrom {
    std::string_view key;
    T& target;
    template <class U>
    void field(std::string_view k, U& v, std::string_view, Range, Traits) {
      if constexpr (std::is_same_v<T, U>)
        if (k == key) target = v;
    }
  };
  Arch arch_;
};

}  // namespace

ModelOptions ModelOptions::bert_defaults() {
  ModelOptions o;
  o.vocab_size = 30522;
  o.max_seq_len = 512;
  o.dropout = 0.1;
  o.attn_dropout = 0.1;
  o.norm_eps = 1e-12;
  o.activation = nn::Activation::Gelu;
  return o;
}

ModelOptions ModelOptions::canonical(Arch arch) const {
  ModelOptions o = *this;
  ResetUnused reset(arch);
  visit(reset, o);
  o.d_ff = ff_width();
  if (o.n_head > 0) o.d_head = head_dim();
  if (arch == Arch::Gpt) o.n_kv_head = kv_heads();
  const ModelOptions dflt;
  if (o.position != nn::Position::Rope) {
    o.rope_theta = dflt.rope_theta;
    o.rope_scaling = dflt.rope_scaling;
  }
  if (o.rope_scaling == nn::RopeScaling::None) o.rope_factor = dflt.rope_factor;
  if (o.rope_scaling != nn::RopeScaling::Llama3) {
    o.rope_low_freq_factor = dflt.rope_low_freq_factor;
    o.rope_high_freq_factor = dflt.rope_high_freq_factor;
    o.rope_original_max_seq_len = dflt.rope_original_max_seq_len;
  }
  if (o.bias) o.qkv_bias = false;  // the projection has its bias anyway
  if (o.sliding_window == 0) o.sliding_window_pattern = 0;
  if (arch == Arch::Gpt && o.attn_scale_dim == 0 && o.n_head > 0) o.attn_scale_dim = o.head_dim();
  return o;
}

std::vector<OptionProblem> ModelOptions::problems(Arch arch, bool complete) const {
  std::vector<OptionProblem> out;
  ModelOptions copy = *this;
  RangeChecker ranges(arch, out);
  visit(ranges, copy);
  auto s = [](int64_t v) { return std::to_string(v); };
  if (complete && vocab_size <= 0)
    out.push_back({{"vocab_size"}, "vocab_size must be positive, got " + s(vocab_size)});
  if (n_head > 0 && d_model > 0) {
    if (d_head == 0 && d_model % n_head != 0)
      out.push_back({{"n_head", "d_model"}, "n_head (" + s(n_head) + ") must divide d_model (" + s(d_model) + ")"});
    else if (arch == Arch::Gpt && position == nn::Position::Rope && head_dim() % 2 != 0)
      out.push_back({{"position", d_head ? "head_dim" : "d_model", "n_head"},
                     d_head ? "rope needs an even head dimension, but head_dim = " + s(d_head)
                            : "rope needs an even head dimension, but d_model / n_head = " + s(head_dim())});
  }
  if (arch == Arch::Gpt && rope_scaling != nn::RopeScaling::None && position != nn::Position::Rope)
    out.push_back({{"rope_scaling", "position"}, "rope_scaling " + std::string(enum_name(rope_scaling)) +
                                                     " scales rotary positions; position is " +
                                                     std::string(enum_name(position))});
  if (arch == Arch::Gpt && rope_scaling == nn::RopeScaling::Llama3 && rope_high_freq_factor <= rope_low_freq_factor)
    out.push_back({{"rope_high_freq_factor", "rope_low_freq_factor"},
                   fmt::format("rope_high_freq_factor ({}) must exceed rope_low_freq_factor ({})", rope_high_freq_factor,
                               rope_low_freq_factor)});
  if (arch == Arch::Gpt && sliding_window_pattern == 1)
    out.push_back({{"sliding_window_pattern"}, "sliding_window_pattern 1 makes every layer attend to all positions; "
                                               "use sliding_window: 0 for that"});
  if (arch == Arch::Gpt && sliding_window_pattern > 0 && sliding_window == 0)
    out.push_back({{"sliding_window_pattern", "sliding_window"},
                   "sliding_window_pattern (" + s(sliding_window_pattern) +
                       ") says which layers have the window, but sliding_window is 0 (no window)"});
  if (arch == Arch::Gpt && n_kv_head > 0 && n_head % n_kv_head != 0)
    out.push_back({{"n_kv_head", "n_head"}, "n_kv_head (" + s(n_kv_head) + ") must divide n_head (" + s(n_head) + ")"});
  if (arch == Arch::Bert) {
    if (n_kv_head > 0) out.push_back({{"n_kv_head"}, "grouped key/value heads are for gpt; bert uses n_kv_head: 0"});
    if (nn::gated(activation))
      out.push_back({{"activation"}, std::string(enum_name(activation)) +
                                         " is not a BERT activation; use gelu or gelu_tanh"});
    if (complete && pad_token_id >= vocab_size)
      out.push_back({{"pad_token_id", "vocab_size"},
                     "pad_token_id (" + s(pad_token_id) + ") is outside the vocabulary (" + s(vocab_size) + ")"});
  }
  return out;
}

void ModelOptions::validate(Arch arch) const {
  auto found = problems(arch, /*complete=*/true);
  if (found.empty()) return;
  std::string msg;
  for (const auto& p : found) msg += (msg.empty() ? "" : "; ") + p.message;
  throw std::invalid_argument(std::string(enum_name(arch)) + ": " + msg);
}

std::string option_value(const ModelOptions& o, std::string_view key) {
  ValueText find{key, {}};
  auto copy = o;
  visit(find, copy);
  return find.found;
}

std::vector<std::string> architecture_differences(Arch arch, const ModelOptions& have, const ModelOptions& want) {
  auto a = have.canonical(arch), b = want.canonical(arch);
  ShapeText ta(arch), tb(arch);
  visit(ta, a);
  visit(tb, b);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < ta.values.size(); ++i)
    if (ta.values[i].second != tb.values[i].second)
      out.push_back(fmt::format("model.{}: {} in the checkpoint, {} in the recipe", ta.values[i].first,
                                ta.values[i].second, tb.values[i].second));
  return out;
}

}  // namespace lathe::models
