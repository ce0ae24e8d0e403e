// A GPT as a GGUF file for llama.cpp (lathe/export/gguf_model.hpp).

#include "lathe/export/gguf_model.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include "lathe/core/error.hpp"
#include "lathe/models/hf_options.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/quant_scheme.hpp"
#include "lathe/nn/quantized.hpp"
#include "gguf_vocab.hpp"

namespace lathe::export_ {
namespace {

/// How llama.cpp holds a Hugging Face family.
struct GgufArch {
  std::string_view model_type;  // config.json's
  std::string_view arch;        // general.architecture
  bool rms_norm;                // layer_norm_rms_epsilon (else layer_norm_epsilon)
  bool rope;                    // rope keys and head_count_kv
  bool permute_qk;              // q / k rows from rotate-half order to llama.cpp's pairs
  bool scaled_rope;             // rope scaling (rope_freqs.weight, rope.scaling.*) and a head width of
                                // its own (key_length): llama.cpp's llama reads them, its qwen2 does not
};
constexpr GgufArch kArchs[] = {
    {"gpt2", "gpt2", false, false, false, false},
    {"llama", "llama", true, true, true, true},
    {"mistral", "llama", true, true, true, true},
    {"qwen2", "qwen2", true, true, false, false},
};

/// The ggml type closest to each quantization scheme's grid.
struct SchemeType {
  nn::QuantScheme scheme;
  GgmlType type;
};
constexpr SchemeType kSchemeTypes[] = {
    {nn::QuantScheme::Int8Dynamic, GgmlType::Q8_0},
    {nn::QuantScheme::Int8WeightOnly, GgmlType::Q8_0},
    {nn::QuantScheme::Int4WeightOnly, GgmlType::Q4_1},
};
static_assert(nn::covers_every_scheme(kSchemeTypes), "every quantization scheme needs its GGUF type");

GgmlType closest_type(nn::QuantScheme scheme) {
  for (const auto& row : kSchemeTypes)
    if (row.scheme == scheme) return row.type;
  throw std::logic_error("no GGUF type for a quantization scheme");
}

/// Hugging Face tensor name -> llama.cpp's (convert_hf_to_gguf.py's tensor map for these families).
std::string gguf_name(const std::string& hf) {
  static const std::map<std::string, std::string> whole{
      {"transformer.wte.weight", "token_embd.weight"}, {"transformer.wpe.weight", "position_embd.weight"},
      {"transformer.ln_f.weight", "output_norm.weight"}, {"transformer.ln_f.bias", "output_norm.bias"},
      {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  if (auto it = whole.find(hf); it != whole.end()) return it->second;
  static const std::map<std::string, std::string> in_block{
      {"ln_1", "attn_norm"}, {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"}, {"ln_2", "ffn_norm"},
      {"mlp.c_fc", "ffn_up"}, {"mlp.c_proj", "ffn_down"}, {"input_layernorm", "attn_norm"},
      {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
  for (const std::string prefix : {"transformer.h.", "model.layers."}) {
    if (!hf.starts_with(prefix)) continue;
    const auto dot = hf.find('.', prefix.size());
    const auto last = hf.rfind('.');
    if (dot == std::string::npos || last <= dot) break;
    const auto module = hf.substr(dot + 1, last - dot - 1);
    if (auto it = in_block.find(module); it != in_block.end())
      return "blk." + hf.substr(prefix.size(), dot - prefix.size()) + "." + it->second + hf.substr(last);
  }
  throw Error("GGUF export: no llama.cpp name for the tensor " + hf);
}

/// Rows of a q or k projection (heads * head_dim, ...) from rotate-half order (the first half of
/// each head's dims pairs with the second) to interleaved pairs: convert_hf_to_gguf.py's permute.
at::Tensor permute_rope_rows(const at::Tensor& w, int64_t heads) {
  auto shape = w.sizes().vec();
  std::vector<int64_t> split{heads, 2, w.size(0) / heads / 2};
  split.insert(split.end(), shape.begin() + 1, shape.end());
  return w.reshape(split).transpose(1, 2).reshape(shape).contiguous();
}

/// Llama 3's rope_freqs.weight: the factor each frequency's angle is divided by.
at::Tensor llama3_rope_factors(const models::ModelOptions& o) {
  const int64_t dim = o.head_dim();
  auto factors = at::empty({dim / 2}, at::kFloat);
  const double low_wavelen = o.rope_original_max_seq_len / o.rope_low_freq_factor;
  const double high_wavelen = o.rope_original_max_seq_len / o.rope_high_freq_factor;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double freq = 1.0 / std::pow(o.rope_theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    const double wavelen = 2 * std::numbers::pi / freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = o.rope_factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (o.rope_original_max_seq_len / wavelen - o.rope_low_freq_factor) /
                            (o.rope_high_freq_factor - o.rope_low_freq_factor);
      f = 1.0 / ((1 - smooth) / o.rope_factor + smooth);
    }
    factors[i] = f;
  }
  return factors;
}

const GgufArch& arch_of(const std::string& model_type) {
  for (const auto& a : kArchs)
    if (a.model_type == model_type) return a;
  std::vector<std::string_view> known;
  for (const auto& a : kArchs) known.push_back(a.model_type);
  throw Error(fmt::format("GGUF export: a model written as the Hugging Face family {} has no llama.cpp architecture "
                          "lathe writes (it writes {})",
                          model_type, fmt::join(known, ", ")));
}

void add_architecture(GgufFile& f, const GgufArch& a, const models::ModelOptions& o, std::vector<std::string>& notes) {
  const std::string p(a.arch);
  if (!a.scaled_rope && o.rope_scaling != nn::RopeScaling::None)
    throw Error(fmt::format("GGUF export: llama.cpp's {} architecture has no rope scaling; this model's is {}", p,
                            enum_name(o.rope_scaling)));
  if (!a.scaled_rope && a.rope && o.head_dim() * o.n_head != o.d_model)
    throw Error(fmt::format("GGUF export: llama.cpp's {} architecture takes heads that fill the width ({} x {} != {})",
                            p, o.n_head, o.head_dim(), o.d_model));
  f.set("general.architecture", p);
  f.set(p + ".context_length", static_cast<uint32_t>(o.max_seq_len));
  f.set(p + ".embedding_length", static_cast<uint32_t>(o.d_model));
  f.set(p + ".feed_forward_length", static_cast<uint32_t>(o.ff_width()));
  f.set(p + ".block_count", static_cast<uint32_t>(o.n_layer));
  f.set(p + ".attention.head_count", static_cast<uint32_t>(o.n_head));
  f.set(p + (a.rms_norm ? ".attention.layer_norm_rms_epsilon" : ".attention.layer_norm_epsilon"),
        static_cast<float>(o.norm_eps));
  if (o.head_dim() * o.n_head != o.d_model) {
    f.set(p + ".attention.key_length", static_cast<uint32_t>(o.head_dim()));
    f.set(p + ".attention.value_length", static_cast<uint32_t>(o.head_dim()));
  }
  if (!a.rope) {
    if (o.activation == nn::Activation::Gelu)
      notes.push_back("the model's exact GELU runs as llama.cpp's tanh approximation (gpt2 architecture)");
    return;
  }
  f.set(p + ".attention.head_count_kv", static_cast<uint32_t>(o.kv_heads()));
  f.set(p + ".rope.dimension_count", static_cast<uint32_t>(o.head_dim()));
  f.set(p + ".rope.freq_base", static_cast<float>(o.rope_theta));
  f.set(p + ".vocab_size", static_cast<uint32_t>(o.vocab_size));
  if (o.rope_scaling == nn::RopeScaling::Linear) {
    f.set(p + ".rope.scaling.type", std::string("linear"));
    f.set(p + ".rope.scaling.factor", static_cast<float>(o.rope_factor));
  }
  if (o.sliding_window > 0 && o.sliding_window < o.max_seq_len)
    notes.push_back(fmt::format("llama.cpp's {} architecture attends to every position: outputs differ from lathe's "
                                "past the sliding window of {} tokens",
                                p, o.sliding_window));
}

/// One tensor's type (and the fallback note it needs).
GgmlType pick_type(const GgufOptions& options, const at::Tensor& t, const nn::QuantScheme* scheme,
                   const std::string& name, std::vector<std::string>& fallbacks) {
  // Norms, biases and the learned positions stay F32, as convert_hf_to_gguf.py keeps them.
  if (t.dim() < 2 || name == "position_embd.weight") return GgmlType::F32;
  const auto type = options.type ? *options.type : scheme ? closest_type(*scheme) : options.float_type;
  if (t.size(-1) % ggml_type(type).block_size == 0) return type;
  fallbacks.push_back(name);
  return GgmlType::F16;
}

/// Relative error of a quantized tensor: rms(written - meant) / rms(meant).
double relative_error(GgmlType type, const std::vector<uint8_t>& data, const at::Tensor& meant) {
  const auto back = ggml_dequantize(type, data, meant.sizes());
  const double norm = meant.to(at::kDouble).pow(2).mean().sqrt().item<double>();
  const double err = (back.to(at::kDouble) - meant.to(at::kDouble)).pow(2).mean().sqrt().item<double>();
  return norm > 0 ? err / norm : err;
}

/// Rows of a lathe quantized weight: codes (rows, in), scales and zeros (rows) or (rows, groups).
struct Grid {
  const nn::QuantizedWeight* weight = nullptr;
  at::Tensor codes, scales, zeros;
};

Grid rows_of(const nn::QuantizedWeight& q, int64_t row, int64_t rows, int64_t permute_heads) {
  const auto take = [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    auto part = t.narrow(0, row, rows).contiguous();
    return permute_heads > 0 ? permute_rope_rows(part, permute_heads) : part;
  };
  return {&q, take(q.codes()), take(q.scales()), take(q.zeros())};
}

/// A grid's own codes in `type` (its scales and minimums rounded to F16), where `type` holds the
/// scheme's grid: int8 rows in Q8_0 blocks, int4 groups (a multiple of 32 inputs) in Q4_1 blocks
/// with d = scale and m = zero - 8 scale. Empty where it does not.
std::vector<uint8_t> carried_codes(GgmlType type, const Grid& g) {
  const auto& grid = g.weight->grid();
  const int64_t block = ggml_type(type).block_size, in = g.codes.size(1);
  const auto per_block = [&](const at::Tensor& t) {  // (rows) or (rows, groups) -> (rows, in / block)
    const int64_t group = grid.group(in);
    return (t.dim() == 1 ? t.unsqueeze(1) : t).to(at::kFloat).repeat_interleave(group / block, 1).contiguous();
  };
  if (in % block != 0 || grid.group(in) % block != 0) return {};
  if (type == GgmlType::Q8_0 && grid.bits() == 8 && grid.traits().symmetric)
    return ggml_encode(type, g.codes, per_block(g.scales), {});
  if (type == GgmlType::Q4_1 && grid.scheme == nn::QuantScheme::Int4WeightOnly)
    return ggml_encode(type, g.codes, per_block(g.scales), per_block(g.zeros - 8 * g.scales.to(at::kFloat)));
  return {};
}

struct Written {
  std::map<GgmlType, std::pair<double, std::string>> worst;  // largest relative error per quantized type
  std::vector<std::string> fallbacks;
  std::map<GgmlType, int64_t> matrices;  // weight matrices per type
  int64_t carried = 0;                   // of them, lathe's own codes
};

/// One weight matrix (or piece of one) in `type`: a quantized layer's codes as they are where the
/// type holds its grid and that is no further from its values than quantizing them again.
void add_matrix(GgufFile& f, const std::string& name, const at::Tensor& t, GgmlType type, const Grid* grid,
                Written& w) {
  if (!at::isfinite(t).all().item<bool>()) throw Error("GGUF export: " + name + " holds values that are not finite");
  ++w.matrices[type];
  if (ggml_type(type).block_size == 1) {
    f.add_tensor(name, t, type);
    return;
  }
  auto data = ggml_quantize(type, t);
  double err = relative_error(type, data, t);
  if (grid) {
    auto codes = carried_codes(type, *grid);
    const double codes_err = codes.empty() ? err : relative_error(type, codes, t);
    if (!codes.empty() && codes_err <= err) {
      data = std::move(codes);
      err = codes_err;
      ++w.carried;
    }
  }
  f.add_tensor(name, t.sizes().vec(), type, std::move(data));
  if (err > w.worst[type].first || w.worst[type].second.empty()) w.worst[type] = {err, name};
}

void add_tensors(GgufFile& f, const models::AnyModel& model, const GgufArch& a, const GgufOptions& options,
                 Written& w) {
  const auto& o = model.options();
  std::map<std::string, const nn::QuantizedWeight*> quantized;
  std::map<std::string, at::Tensor> values;
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) {
    if (!lin->quantized()) continue;
    quantized[path + ".weight"] = lin->quantized();
    values[path + ".weight"] = lin->quantized()->dequantize();
  }
  for (const auto& item : model.module()->named_parameters())
    if (!values.count(item.key())) values[item.key()] = item.value().detach().to(at::kFloat);
  const auto naming = model.traits().hf_naming(*model.module());
  for (const auto& rule : naming.tensors) {
    const auto it = values.find(rule.ours);
    if (it == values.end()) throw Error("GGUF export: the model has no tensor " + rule.ours);
    const auto q = quantized.find(rule.ours);
    int64_t row = 0;
    for (std::size_t i = 0; i < rule.theirs.size(); ++i) {
      const auto& hf = rule.theirs[i];
      const int64_t rows = rule.theirs.size() == 1 ? it->second.size(0) : rule.rows[i];
      const bool is_q = hf.find("q_proj.") != std::string::npos, is_k = hf.find("k_proj.") != std::string::npos;
      const int64_t heads = a.permute_qk && (is_q || is_k) ? (is_q ? o.n_head : o.kv_heads()) : 0;
      auto t = it->second.narrow(0, row, rows).contiguous();
      if (heads > 0) t = permute_rope_rows(t, heads);
      const auto name = gguf_name(hf);
      const auto type = pick_type(options, t, q == quantized.end() ? nullptr : &q->second->grid().scheme, name,
                                  w.fallbacks);
      if (t.dim() < 2 || name == "position_embd.weight") {
        f.add_tensor(name, t, type);
      } else if (q != quantized.end()) {
        const auto grid = rows_of(*q->second, row, rows, heads);
        add_matrix(f, name, t, type, &grid, w);
      } else {
        add_matrix(f, name, t, type, nullptr, w);
      }
      row += rows;
    }
  }
  if (o.rope_scaling == nn::RopeScaling::Llama3) f.add_tensor("rope_freqs.weight", llama3_rope_factors(o), GgmlType::F32);
}

}  // namespace

void check_gguf(const models::AnyModel& model, const GgufOptions& options) {
  if (model.arch() != models::Arch::Gpt || !model.traits().hf_naming)
    throw Error("GGUF export writes GPT models (llama.cpp's decoders); this model is a " + model.kind_name());
  const auto& a = arch_of(model.traits().hf_naming(*model.module()).model_type);
  GgufFile scratch;
  std::vector<std::string> notes;
  add_architecture(scratch, a, model.options(), notes);
  add_vocab(scratch, options, model.options().vocab_size);
}

std::string gguf_file_name(GgmlType type) { return fmt::format("model-{}.gguf", ggml_type(type).name); }

GgufExport export_gguf(const models::AnyModel& model, const GgufOptions& options) {
  if (model.arch() != models::Arch::Gpt || !model.traits().hf_naming)
    throw Error("GGUF export writes GPT models (llama.cpp's decoders); this model is a " + model.kind_name());
  const auto& o = model.options();
  const auto naming = model.traits().hf_naming(*model.module());  // throws for a mix no family holds
  const auto& a = arch_of(naming.model_type);
  GgufExport out;
  out.arch = a.arch;
  add_architecture(out.file, a, o, out.notes);
  out.file.set("general.name", options.name);
  // The tokenizer is read and checked before any tensor is converted.
  add_vocab(out.file, options, o.vocab_size);
  Written w;
  add_tensors(out.file, model, a, options, w);
  // general.file_type: the type most weight matrices have.
  int64_t most = -1;
  for (const auto& [type, n] : w.matrices)
    if (n > most) {
      most = n;
      out.type = type;
    }
  out.file.set("general.file_type", ggml_type(out.type).file_type);
  if (!w.worst.empty()) out.file.set("general.quantization_version", uint32_t{2});
  if (w.carried > 0)
    out.notes.push_back(fmt::format("{} quantized matrices carry lathe's own codes (scales rounded to F16)", w.carried));
  for (const auto& [type, worst] : w.worst)
    out.notes.push_back(fmt::format("{} tensors differ from the weights they stand for by at most {:.3g}% (rms, {})",
                                    ggml_type(type).name, 100 * worst.first, worst.second));
  if (!w.fallbacks.empty())
    out.notes.push_back(fmt::format("{} written as F16: their rows are not a multiple of the quantized types' "
                                    "block of 32", fmt::join(w.fallbacks, ", ")));
  return out;
}

}  // namespace lathe::export_
