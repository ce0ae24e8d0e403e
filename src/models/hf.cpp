// Hugging Face config.json + model.safetensors for GPT-2, Llama-style GPTs and BERT.

#include "lathe/io/json_file.hpp"
#include "lathe/models/hf.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/init.hpp"

namespace lathe::models {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------- name tables

/// How a lathe tensor is made from Hugging Face tensors.
enum class Xf {
  Copy,       // same tensor
  Transpose,  // GPT-2's Conv1D stores (in, out)
  Stack,      // rows of several tensors, in order (fused QKV, SwiGLU gate + up)
};

struct Rule {
  Rule(std::string o, std::vector<std::string> t, Xf x = Xf::Copy, std::vector<int64_t> s = {})
      : ours(std::move(o)), theirs(std::move(t)), xf(x), sizes(std::move(s)) {}
  std::string ours;
  std::vector<std::string> theirs;
  Xf xf = Xf::Copy;
  std::vector<int64_t> sizes;  // Stack: rows of each piece
};
using Table = std::vector<Rule>;

/// Adds "<prefix>weight" and (when `bias`) "<prefix>bias" rules.
void add_wb(Table& t, const std::string& ours, const std::string& theirs, bool bias, Xf xf = Xf::Copy) {
  t.push_back({ours + "weight", {theirs + "weight"}, xf});
  if (bias) t.push_back({ours + "bias", {theirs + "bias"}});
}

void add_stacked(Table& t, const std::string& ours, const std::string& theirs, const std::vector<std::string>& parts,
                 const std::vector<int64_t>& sizes, bool bias) {
  for (std::string leaf : {"weight", "bias"}) {
    if (leaf == "bias" && !bias) break;
    Rule r{ours + leaf, {}, Xf::Stack, sizes};
    for (const auto& p : parts) r.theirs.push_back(theirs + p + "." + leaf);
    t.push_back(std::move(r));
  }
}

Table gpt2_table(const ModelOptions& o) {
  Table t{{"wte.weight", {"transformer.wte.weight"}}, {"wpe.weight", {"transformer.wpe.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "transformer.h." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "ln_1.", true);
    add_wb(t, p + "attn.qkv.", h + "attn.c_attn.", true, Xf::Transpose);
    add_wb(t, p + "attn.proj.", h + "attn.c_proj.", true, Xf::Transpose);
    add_wb(t, p + "ln_2.", h + "ln_2.", true);
    add_wb(t, p + "mlp.fc.", h + "mlp.c_fc.", true, Xf::Transpose);
    add_wb(t, p + "mlp.proj.", h + "mlp.c_proj.", true, Xf::Transpose);
  }
  add_wb(t, "ln_f.", "transformer.ln_f.", true);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

Table llama_table(const ModelOptions& o) {
  const int64_t q = o.n_head * o.head_dim(), kv = o.kv_heads() * o.head_dim(), ff = o.ff_width();
  Table t{{"wte.weight", {"model.embed_tokens.weight"}}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add_wb(t, p + "ln_1.", h + "input_layernorm.", false);
    add_stacked(t, p + "attn.qkv.", h + "self_attn.", {"q_proj", "k_proj", "v_proj"}, {q, kv, kv}, o.bias);
    add_wb(t, p + "attn.proj.", h + "self_attn.o_proj.", o.bias);
    add_wb(t, p + "ln_2.", h + "post_attention_layernorm.", false);
    add_stacked(t, p + "mlp.fc.", h + "mlp.", {"gate_proj", "up_proj"}, {ff, ff}, o.bias);
    add_wb(t, p + "mlp.proj.", h + "mlp.down_proj.", o.bias);
  }
  add_wb(t, "ln_f.", "model.norm.", false);
  if (!o.tie_embeddings) t.push_back({"lm_head.weight", {"lm_head.weight"}});
  return t;
}

Table bert_encoder_table(const ModelOptions& o, bool pooler) {
  Table t;
  add_wb(t, "bert.word_embeddings.", "bert.embeddings.word_embeddings.", false);
  add_wb(t, "bert.position_embeddings.", "bert.embeddings.position_embeddings.", false);
  add_wb(t, "bert.token_type_embeddings.", "bert.embeddings.token_type_embeddings.", false);
  add_wb(t, "bert.embeddings_norm.", "bert.embeddings.LayerNorm.", true);
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "bert.layers." + std::to_string(i) + ".", h = "bert.encoder.layer." + std::to_string(i) + ".";
    add_stacked(t, p + "attn.qkv.", h + "attention.self.", {"query", "key", "value"}, {o.d_model, o.d_model, o.d_model}, true);
    add_wb(t, p + "attn.proj.", h + "attention.output.dense.", true);
    add_wb(t, p + "ln_1.", h + "attention.output.LayerNorm.", true);
    add_wb(t, p + "mlp.fc.", h + "intermediate.dense.", true);
    add_wb(t, p + "mlp.proj.", h + "output.dense.", true);
    add_wb(t, p + "ln_2.", h + "output.LayerNorm.", true);
  }
  if (pooler) add_wb(t, "bert.pooler.", "bert.pooler.dense.", true);
  return t;
}

Table bert_mlm_table(const ModelOptions& o) {
  Table t = bert_encoder_table(o, false);
  add_wb(t, "mlm_dense.", "cls.predictions.transform.dense.", true);
  add_wb(t, "mlm_norm.", "cls.predictions.transform.LayerNorm.", true);
  t.push_back({"mlm_bias", {"cls.predictions.bias"}});
  return t;
}

Table bert_classifier_table(const ModelOptions& o) {
  Table t = bert_encoder_table(o, true);
  add_wb(t, "classifier.", "classifier.", true);
  return t;
}

// ---------------------------------------------------------------- loading

struct Layout {
  std::string base;                 // prefix of the backbone ("transformer.", "model.", "bert.")
  std::vector<std::string> heads;   // prefixes that belong to heads, never to the backbone
  std::vector<std::string> ignore;  // name fragments that are buffers or tied copies
};

/// Files written without the backbone prefix (a bare GPT2Model / BertModel) and old BERT files
/// with LayerNorm.gamma / .beta read like current ones.
std::string normalize(std::string key, const Layout& layout) {
  if (key.find("LayerNorm.") != std::string::npos) {
    if (key.ends_with(".gamma")) key.replace(key.size() - 5, 5, "weight");
    else if (key.ends_with(".beta")) key.replace(key.size() - 4, 4, "bias");
  }
  if (key.starts_with(layout.base)) return key;
  for (const auto& h : layout.heads)
    if (key.starts_with(h)) return key;
  return layout.base + key;
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

/// Loads `file` into `model` through `table`. Rules whose lathe name starts with one of
/// `optional` may be absent from the file: those tensors keep their initialisation and are
/// listed in `initialized`.
void load_tensors(torch::nn::Module& model, const Table& table, const fs::path& file, const Layout& layout,
                  const std::vector<std::string>& optional = {}, std::vector<std::string>* initialized = nullptr,
                  io::Read read = io::Read::Copy) {
  auto st = io::load_safetensors(file, read);
  std::map<std::string, at::Tensor> theirs;
  for (auto& [name, t] : st.tensors) theirs[normalize(name, layout)] = t;
  auto params = model.named_parameters();

  std::vector<std::string> missing, wrong, unexpected;
  std::set<std::string> used;
  std::vector<std::pair<at::Tensor, at::Tensor>> assign;  // (parameter, value)
  for (const auto& rule : table) {
    auto* param = params.find(rule.ours);
    if (!param) throw std::logic_error("hf table names '" + rule.ours + "', which the model does not have");
    std::vector<at::Tensor> pieces;
    std::vector<std::string> absent;
    for (const auto& name : rule.theirs) {
      auto it = theirs.find(name);
      if (it == theirs.end()) absent.push_back(name);
      else {
        pieces.push_back(it->second);
        used.insert(name);
      }
    }
    if (!absent.empty()) {
      const bool opt = std::any_of(optional.begin(), optional.end(), [&](const std::string& p) {
        return rule.ours.starts_with(p);
      });
      if (opt && pieces.empty()) {
        if (initialized) initialized->push_back(rule.ours);
      } else {
        missing.insert(missing.end(), absent.begin(), absent.end());
      }
      continue;
    }
    bool ok = true;
    if (rule.xf == Xf::Transpose && pieces[0].dim() != 2) ok = false;
    for (const auto& p : pieces) ok = ok && p.is_floating_point() && p.dim() == param->dim();
    at::Tensor value;
    if (ok) {
      value = rule.xf == Xf::Transpose ? pieces[0].t() : rule.xf == Xf::Stack ? at::cat(pieces, 0) : pieces[0];
      ok = value.sizes() == param->sizes();
    }
    if (!ok) {
      std::string got;
      for (std::size_t i = 0; i < pieces.size(); ++i)
        got += (i ? " + " : "") + rule.theirs[i] + " " + shape_str(pieces[i].sizes());
      wrong.push_back(got + (rule.xf == Xf::Transpose ? " (stored transposed)" : "") + " for " + rule.ours +
                      " " + shape_str(param->sizes()));
      continue;
    }
    assign.emplace_back(*param, value);
  }
  for (const auto& [name, t] : theirs) {
    if (used.count(name)) continue;
    const bool ignored = std::any_of(layout.ignore.begin(), layout.ignore.end(), [&](const std::string& frag) {
      return name.find(frag) != std::string::npos;
    });
    if (!ignored) unexpected.push_back(name);
  }
  if (!missing.empty() || !wrong.empty() || !unexpected.empty()) {
    std::string msg = file.string() + " does not match the model that config.json describes:";
    auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      msg += std::string("\n  ") + what + " (" + std::to_string(names.size()) + "):";
      for (const auto& n : names) msg += "\n    " + n;
    };
    list("missing tensors", missing);
    list("unexpected tensors", unexpected);
    list("wrong shape", wrong);
    throw Error(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [param, value] : assign) assign_parameter(param, value);
}

// ---------------------------------------------------------------- saving

void save_tensors(torch::nn::Module& model, const Table& table, const fs::path& dir, const json& config) {
  auto params = model.named_parameters();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& rule : table) {
    auto t = params[rule.ours].detach().to(at::kCPU, at::kFloat).contiguous();
    switch (rule.xf) {
      case Xf::Copy: out.emplace_back(rule.theirs[0], t); break;
      case Xf::Transpose: out.emplace_back(rule.theirs[0], t.t().contiguous()); break;
      case Xf::Stack: {
        auto parts = t.split_with_sizes(rule.sizes, 0);
        for (std::size_t i = 0; i < parts.size(); ++i) out.emplace_back(rule.theirs[i], parts[i].contiguous());
        break;
      }
    }
  }
  fs::create_directories(dir);
  io::save_safetensors(dir / "model.safetensors", out, {{"format", "pt"}});
  io::write_file_atomic(dir / "config.json", config.dump(2) + "\n");
}

// ---------------------------------------------------------------- config.json

json read_config(const fs::path& dir) {
  const auto path = dir / "config.json";
  if (!fs::exists(path)) throw Error(path.string() + ": cannot open (a Hugging Face model directory has config.json)");
  return io::read_json(path);
}

/// config[key] as T, `fallback` when absent or null; a wrong type names the file and key.
template <class T>
T get(const json& config, const fs::path& dir, const std::string& key, T fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error((dir / "config.json").string() + ": " + key + ": unexpected value " + it->dump());
  }
}

template <class T>
T need(const json& config, const fs::path& dir, const std::string& key) {
  if (!config.contains(key) || config[key].is_null())
    throw Error((dir / "config.json").string() + ": missing key '" + key + "'");
  return get<T>(config, dir, key, T{});
}

[[noreturn]] void unsupported(const fs::path& dir, const std::string& key, const json& value, const std::string& what) {
  throw Error((dir / "config.json").string() + ": " + key + " = " + value.dump() + " is not supported (" + what + ")");
}

nn::Activation read_activation(const json& c, const fs::path& dir, const std::string& key, const std::string& dflt) {
  const auto act = get<std::string>(c, dir, key, dflt);
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") return nn::Activation::GeluTanh;
  if (act == "gelu") return nn::Activation::Gelu;
  unsupported(dir, key, act, "lathe has gelu and gelu_new");
}

std::string model_type(const json& c, const fs::path& dir) { return need<std::string>(c, dir, "model_type"); }

/// Which config.json key holds which option (lathe/models/options.hpp names). The options of
/// a family not in its table are fixed by the family (Llama's rmsnorm, rope, swiglu) or read
/// by hand below (activation names, rope parameters).
struct KeyMap {
  std::string_view ours;
  std::string_view theirs;
  bool required = false;
};
using KeyTable = std::vector<KeyMap>;

const KeyTable kGpt2Keys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "n_positions"}, {"d_model", "n_embd"},
                         {"n_layer", "n_layer"}, {"n_head", "n_head"}, {"d_ff", "n_inner"},
                         {"norm_eps", "layer_norm_epsilon"}, {"dropout", "resid_pdrop"}, {"attn_dropout", "attn_pdrop"},
                         {"init_std", "initializer_range"}, {"tie_embeddings", "tie_word_embeddings"}};
const KeyTable kLlamaKeys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                          {"d_model", "hidden_size", true}, {"n_layer", "num_hidden_layers", true},
                          {"n_head", "num_attention_heads", true}, {"n_kv_head", "num_key_value_heads"},
                          {"d_ff", "intermediate_size", true}, {"norm_eps", "rms_norm_eps"},
                          {"rope_theta", "rope_theta"}, {"attn_dropout", "attention_dropout"},
                          {"init_std", "initializer_range"}, {"tie_embeddings", "tie_word_embeddings"}};
const KeyTable kBertKeys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                         {"type_vocab_size", "type_vocab_size"}, {"d_model", "hidden_size"},
                         {"n_layer", "num_hidden_layers"}, {"n_head", "num_attention_heads"},
                         {"d_ff", "intermediate_size"}, {"norm_eps", "layer_norm_eps"},
                         {"dropout", "hidden_dropout_prob"}, {"attn_dropout", "attention_probs_dropout_prob"},
                         {"pad_token_id", "pad_token_id"}, {"init_std", "initializer_range"},
                         {"num_labels", "num_labels"}};

/// Where config.json holds each model option, a row per option in models::visit's order: a new
/// option does not build until it has its row here, and with it its key in the families' tables
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
    HfOption{"bias", "llama: attention_bias and mlp_bias; gpt2 always, bert always"},
    HfOption{"norm", "the family: gpt2 and bert layernorm, llama rmsnorm"},
    HfOption{"norm_eps", "key tables"},
    HfOption{"activation", "gpt2: activation_function; bert: hidden_act; llama: silu (swiglu)"},
    HfOption{"position", "the family: gpt2 and bert learned, llama rope"},
    HfOption{"rope_theta", "llama: rope_theta / rope_parameters"},
    HfOption{"tie_embeddings", "key tables (tie_word_embeddings)"},
    HfOption{"init_std", "key tables (initializer_range)"},
    HfOption{"type_vocab_size", "bert: type_vocab_size"},
    HfOption{"num_labels", "bert: num_labels, id2label"},
    HfOption{"pad_token_id", "bert: pad_token_id"},
};
static_assert(covers_every_option(kHfOptions),
              "src/models/hf.cpp: kHfOptions needs a row for every model option, in models::visit's order: a model "
              "option was added, removed or renamed; carry it in config.json for each family, or refuse it");

const KeyMap* find_key(const KeyTable& table, std::string_view ours) {
  for (const auto& k : table)
    if (k.ours == ours) return &k;
  return nullptr;
}

/// Reads the keys of `table` from config.json into the options; absent keys keep the
/// family's defaults the options started from.
class ConfigReader {
 public:
  ConfigReader(const json& c, const fs::path& dir, const KeyTable& table) : c_(c), dir_(dir), table_(table) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits) {
    if constexpr (!std::is_enum_v<T>) {
      const KeyMap* k = find_key(table_, key);
      if (!k) return;
      const std::string theirs(k->theirs);
      value = k->required ? need<T>(c_, dir_, theirs) : get<T>(c_, dir_, theirs, value);
    }
  }

 private:
  const json& c_;
  const fs::path& dir_;
  const KeyTable& table_;
};

/// Writes the keys of `table` from canonical options (derived values filled in).
class ConfigWriter {
 public:
  ConfigWriter(json& c, const KeyTable& table) : c_(c), table_(table) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits) {
    if constexpr (!std::is_enum_v<T>)
      if (const KeyMap* k = find_key(table_, key)) c_[std::string(k->theirs)] = value;
  }

 private:
  json& c_;
  const KeyTable& table_;
};

ModelOptions read_keys(const json& c, const fs::path& dir, const KeyTable& table, ModelOptions defaults) {
  ConfigReader r(c, dir, table);
  visit(r, defaults);
  return defaults;
}

void write_keys(json& c, const KeyTable& table, Arch arch, const ModelOptions& o) {
  auto canonical = o.canonical(arch);
  ConfigWriter w(c, table);
  visit(w, canonical);
}

void validate_read(const ModelOptions& o, Arch arch, const fs::path& dir) {
  try {
    o.validate(arch);
  } catch (const std::invalid_argument& e) {
    throw Error((dir / "config.json").string() + ": " + e.what());
  }
}

}  // namespace

bool is_hf_model_dir(const fs::path& dir) {
  auto j = io::read_json_if_valid(dir / "config.json");
  return j && j->is_object() && j->contains("model_type");
}

ModelOptions read_hf_gpt_config(const fs::path& dir) {
  const json c = read_config(dir);
  const auto type = model_type(c, dir);
  ModelOptions o;
  if (type == "gpt2") {
    ModelOptions gpt2;  // GPT2Config's defaults
    gpt2.dropout = gpt2.attn_dropout = 0.1;
    o = read_keys(c, dir, kGpt2Keys, gpt2);
    o.activation = read_activation(c, dir, "activation_function", "gelu_new");
    for (const char* key : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"})
      if (get<bool>(c, dir, key, false)) unsupported(dir, key, true, "lathe's GPT-2 attention is the standard one");
    if (!get<bool>(c, dir, "scale_attn_weights", true))
      unsupported(dir, "scale_attn_weights", false, "attention is always scaled by 1/sqrt(head_dim)");
  } else if (type == "llama") {
    ModelOptions llama;  // LlamaConfig's defaults for the keys it may omit
    llama.max_seq_len = 2048;
    llama.norm = nn::NormKind::RmsNorm;
    llama.norm_eps = 1e-6;
    llama.activation = nn::Activation::SwiGlu;
    llama.position = nn::Position::Rope;
    llama.tie_embeddings = false;
    o = read_keys(c, dir, kLlamaKeys, llama);
    if (o.n_kv_head == o.n_head) o.n_kv_head = 0;
    if (c.contains("rope_parameters") && c["rope_parameters"].is_object()) {
      const auto& rp = c["rope_parameters"];
      if (rp.value("rope_type", "default") != "default")
        unsupported(dir, "rope_parameters.rope_type", rp["rope_type"], "only the default rotary embedding");
      o.rope_theta = rp.value("rope_theta", o.rope_theta);
    }
    if (c.contains("rope_scaling") && !c["rope_scaling"].is_null())
      unsupported(dir, "rope_scaling", c["rope_scaling"], "only the default rotary embedding");
    const bool attn_bias = get<bool>(c, dir, "attention_bias", false), mlp_bias = get<bool>(c, dir, "mlp_bias", false);
    if (attn_bias != mlp_bias)
      unsupported(dir, "attention_bias", attn_bias, "lathe has one bias switch; attention_bias must equal mlp_bias");
    o.bias = attn_bias;
    if (auto act = get<std::string>(c, dir, "hidden_act", "silu"); act != "silu")
      unsupported(dir, "hidden_act", act, "Llama's MLP is SwiGLU (silu)");
    // Llama's head_dim may differ from hidden_size / num_attention_heads (a model with pruned heads).
    if (o.n_head > 0)
      if (auto hd = get<int64_t>(c, dir, "head_dim", o.d_model / o.n_head); hd != o.d_model / o.n_head) {
        if (hd < 1) unsupported(dir, "head_dim", hd, "head_dim must be positive");
        o.d_head = hd;
      }
  } else {
    throw Error((dir / "config.json").string() + ": model_type '" + type + "' is not a GPT lathe reads (gpt2, llama)");
  }
  validate_read(o, Arch::Gpt, dir);
  return o;
}

ModelOptions read_hf_bert_config(const fs::path& dir) {
  const json c = read_config(dir);
  if (auto type = model_type(c, dir); type != "bert")
    throw Error((dir / "config.json").string() + ": model_type '" + type + "' is not bert");
  ModelOptions bert = ModelOptions::bert_defaults();  // BertConfig's defaults
  bert.d_ff = 3072;
  if (c.contains("id2label") && c["id2label"].is_object()) bert.num_labels = static_cast<int64_t>(c["id2label"].size());
  ModelOptions o = read_keys(c, dir, kBertKeys, bert);
  o.activation = read_activation(c, dir, "hidden_act", "gelu");
  if (auto pos = get<std::string>(c, dir, "position_embedding_type", "absolute"); pos != "absolute")
    unsupported(dir, "position_embedding_type", pos, "BERT positions are absolute");
  validate_read(o, Arch::Bert, dir);
  return o;
}

namespace {

/// transformers' GPT-2 and BERT derive the head width as hidden size / heads; a model whose
/// heads were pruned (n_head * head_dim < d_model) has no config there.
void check_heads_fill_width(const ModelOptions& o, const char* family) {
  if (o.n_head * o.head_dim() == o.d_model) return;
  throw Error(fmt::format("this model has {} heads of width {} in a width of {} (pruned heads); transformers' {} "
                          "derives the head width from the hidden size and cannot hold it: export it to lathe's "
                          "model file, or prune only MLP neurons (prune.heads: 0)",
                          o.n_head, o.head_dim(), o.d_model, family));
}

bool is_gpt2_shaped(const ModelOptions& o) {
  return o.position == nn::Position::Learned && o.norm == nn::NormKind::LayerNorm && o.bias &&
         o.n_kv_head == 0 && o.activation != nn::Activation::SwiGlu;
}
bool is_llama_shaped(const ModelOptions& o) {
  return o.position == nn::Position::Rope && o.norm == nn::NormKind::RmsNorm &&
         o.activation == nn::Activation::SwiGlu;
}

const Layout kGpt2Layout{"transformer.", {"lm_head."}, {".attn.bias", ".attn.masked_bias", "lm_head.weight"}};
const Layout kLlamaLayout{"model.", {"lm_head."}, {"rotary_emb.inv_freq", "lm_head.weight"}};
const Layout kBertLayout{"bert.", {"cls.", "classifier."},
                         {"position_ids", "token_type_ids", "cls.predictions.decoder.", "cls.seq_relationship."}};

fs::path weights_file(const fs::path& dir) {
  auto path = dir / "model.safetensors";
  if (!fs::exists(path)) {
    if (fs::exists(dir / "model.safetensors.index.json"))
      throw Error(path.string() + ": sharded checkpoints (model.safetensors.index.json) are not read; save the model "
                                  "unsharded (save_pretrained(max_shard_size=\"100GB\"))");
    throw Error(path.string() + ": not found (lathe reads safetensors weights; pytorch_model.bin is not read)");
  }
  return path;
}

}  // namespace

Gpt load_hf_gpt(const fs::path& dir, io::Read read) {
  auto options = read_hf_gpt_config(dir);
  const bool llama = options.position == nn::Position::Rope;
  Gpt model = [&] {
    nn::SkipInitGuard skip_init;  // every parameter is read (or the file is refused)
    return Gpt(options);
  }();
  load_tensors(*model, llama ? llama_table(options) : gpt2_table(options), weights_file(dir),
               llama ? kLlamaLayout : kGpt2Layout, {}, nullptr, read);
  return model;
}

BertForMaskedLM load_hf_bert_mlm(const fs::path& dir) {
  auto options = read_hf_bert_config(dir);
  BertForMaskedLM model(options);
  Layout layout = kBertLayout;
  layout.ignore.push_back("bert.pooler.");
  load_tensors(*model, bert_mlm_table(options), weights_file(dir), layout);
  return model;
}

BertForSequenceClassification load_hf_bert_classifier(const fs::path& dir, int64_t num_labels,
                                                       std::vector<std::string>* initialized) {
  auto options = read_hf_bert_config(dir);
  if (num_labels > 0) options.num_labels = num_labels;
  BertForSequenceClassification model(options);
  Layout layout = kBertLayout;
  layout.ignore.push_back("cls.");
  load_tensors(*model, bert_classifier_table(options), weights_file(dir), layout, {"bert.pooler.", "classifier."},
               initialized);
  return model;
}

void save_hf(Gpt& model, const fs::path& dir) {
  auto o = model->options;
  // A head separated from a tied embedding (to be quantized) holds other values than the
  // table: it is written as an untied lm_head.
  if (model->lm_head) o.tie_embeddings = false;
  json c;
  if (is_gpt2_shaped(o)) {
    check_heads_fill_width(o, "gpt2");
    c = {{"architectures", {"GPT2LMHeadModel"}},
         {"model_type", "gpt2"},
         {"activation_function", o.activation == nn::Activation::Gelu ? "gelu" : "gelu_new"},
         {"embd_pdrop", o.dropout},
         {"bos_token_id", nullptr},
         {"eos_token_id", nullptr}};
    write_keys(c, kGpt2Keys, Arch::Gpt, o);
    save_tensors(*model, gpt2_table(o), dir, c);
  } else if (is_llama_shaped(o)) {
    c = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"head_dim", o.head_dim()},
         {"hidden_act", "silu"},
         {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", o.rope_theta}}},
         {"attention_bias", o.bias},
         {"mlp_bias", o.bias},
         {"bos_token_id", nullptr},
         {"eos_token_id", nullptr}};
    write_keys(c, kLlamaKeys, Arch::Gpt, o);
    save_tensors(*model, llama_table(o), dir, c);
  } else {
    throw Error("this GPT has no Hugging Face counterpart: gpt2 needs learned positions, layernorm, gelu and biases; "
                "llama needs rope, rmsnorm and swiglu (got position " + std::string(enum_name(o.position)) +
                ", norm " + std::string(enum_name(o.norm)) + ", activation " +
                std::string(enum_name(o.activation)) + ")");
  }
}

namespace {

json bert_config(const ModelOptions& o, const char* architecture) {
  check_heads_fill_width(o, "bert");
  json c = {{"architectures", {architecture}},
            {"model_type", "bert"},
            {"hidden_act", o.activation == nn::Activation::GeluTanh ? "gelu_new" : "gelu"},
            {"position_embedding_type", "absolute"},
            {"tie_word_embeddings", true}};
  write_keys(c, kBertKeys, Arch::Bert, o);
  if (o.pad_token_id < 0) c["pad_token_id"] = nullptr;
  return c;
}

}  // namespace

void save_hf(BertForMaskedLM& model, const fs::path& dir) {
  const auto& o = model->bert->options;
  save_tensors(*model, bert_mlm_table(o), dir, bert_config(o, "BertForMaskedLM"));
}

void save_hf(BertForSequenceClassification& model, const fs::path& dir, const std::vector<std::string>& labels) {
  const auto& o = model->bert->options;
  if (!labels.empty() && static_cast<int64_t>(labels.size()) != o.num_labels)
    throw std::invalid_argument("save_hf: " + std::to_string(labels.size()) + " label names for a classifier of " +
                                std::to_string(o.num_labels) + " labels");
  json c = bert_config(o, "BertForSequenceClassification");
  json id2label = json::object(), label2id = json::object();
  for (int64_t i = 0; i < o.num_labels; ++i) {
    // transformers' names when the model knows none.
    const auto name = labels.empty() ? "LABEL_" + std::to_string(i) : labels[static_cast<std::size_t>(i)];
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  c["id2label"] = id2label;
  c["label2id"] = label2id;
  save_tensors(*model, bert_classifier_table(o), dir, c);
}

}  // namespace lathe::models
