// What every Hugging Face model family shares (src/models/hf/): tensor-name tables, the
// reading and writing of model.safetensors through them, config.json helpers, and what a GPT
// family declares. Each family lives in a file of its own (gpt2.cpp, llama.cpp, qwen2.cpp,
// mistral.cpp, gemma.cpp, gemma2.cpp, phi3.cpp, bert.cpp);
// src/models/hf.cpp lists the GPT families.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/hf_options.hpp"
#include "lathe/models/options.hpp"
#include "lathe/nn/init.hpp"

namespace torch::nn {
class Module;
}

namespace lathe::models::hf {
namespace fs = std::filesystem;
using nlohmann::json;

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
void add_wb(Table& t, const std::string& ours, const std::string& theirs, bool bias, Xf xf = Xf::Copy);
/// Adds rules that stack `parts` (each "<theirs><part>.weight", and .bias when `bias`) into one
/// lathe tensor of rows `sizes`.
void add_stacked(Table& t, const std::string& ours, const std::string& theirs, const std::vector<std::string>& parts,
                 const std::vector<int64_t>& sizes, bool bias);

// ---------------------------------------------------------------- model.safetensors

struct Layout {
  std::string base;                 // prefix of the backbone ("transformer.", "model.", "bert.")
  std::vector<std::string> heads;   // prefixes that belong to heads, never to the backbone
  std::vector<std::string> ignore;  // name fragments that are buffers or tied copies
};

/// The values of `model`'s parameters that `files` (one file, or a sharded checkpoint's shards)
/// hold through `table`, each made when the source reaches it (views of the files where `read`
/// maps them; a stacked tensor built then). Everything is checked before this returns, as
/// load_tensors says; `model` only gives the names and shapes (its parameters may be on the meta
/// device).
nn::ValueSource tensor_values(const torch::nn::Module& model, const Table& table, const std::vector<fs::path>& files,
                              const Layout& layout, const std::vector<std::string>& optional = {},
                              std::vector<std::string>* initialized = nullptr, io::Read read = io::Read::Copy);
/// Loads `files` (one file, or a sharded checkpoint's shards) into `model` through `table`.
/// Rules whose lathe name starts with one of `optional` may be absent: those tensors keep their
/// initialisation and are listed in `initialized`. Missing, unexpected and mis-shaped tensors
/// are reported together.
void load_tensors(torch::nn::Module& model, const Table& table, const std::vector<fs::path>& files, const Layout& layout,
                  const std::vector<std::string>& optional = {}, std::vector<std::string>* initialized = nullptr,
                  io::Read read = io::Read::Copy);
/// Writes config.json and the tensors through `table` into `dir`, in `options`' dtype, one
/// model.safetensors or shards and their index; returns the names of the files written.
std::vector<std::string> save_tensors(torch::nn::Module& model, const Table& table, const fs::path& dir, json config,
                                      const HfWriteOptions& options);
/// <dir>/model.safetensors, or the shards model.safetensors.index.json lists (transformers'
/// save_pretrained(max_shard_size=...)), or an error saying what the directory holds instead.
std::vector<fs::path> weights_files(const fs::path& dir);

// ---------------------------------------------------------------- config.json

json read_config(const fs::path& dir);

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

[[noreturn]] void unsupported(const fs::path& dir, const std::string& key, const json& value, const std::string& what);
nn::Activation read_activation(const json& c, const fs::path& dir, const std::string& key, const std::string& dflt);
std::string model_type(const json& c, const fs::path& dir);

/// Which config.json key holds which option (lathe/models/options.hpp names). The options of
/// a family not in its table are fixed by the family (Llama's rmsnorm, rope, swiglu) or read
/// and written by the family's own functions (activation names, rope parameters, biases).
struct KeyMap {
  std::string_view ours;
  std::string_view theirs;
  bool required = false;
};
using KeyTable = std::vector<KeyMap>;

/// Reads the keys of `table` from config.json into the options; absent keys keep the
/// family's defaults the options started from.
ModelOptions read_keys(const json& c, const fs::path& dir, const KeyTable& table, ModelOptions defaults);
/// Writes the keys of `table` from the options made canonical for `arch`.
void write_keys(json& c, const KeyTable& table, Arch arch, const ModelOptions& o);
/// The one validation of options read from `dir`'s config.json, its errors naming the file.
void validate_read(const ModelOptions& o, Arch arch, const fs::path& dir);
/// transformers' GPT-2 and BERT derive the head width as hidden size / heads; a model whose
/// heads were pruned (n_head * head_dim < d_model) has no config there.
void check_heads_fill_width(const ModelOptions& o, const char* family);

// ---------------------------------------------------------------- a GPT family

/// A decoder family of transformers (config.json's model_type), declared in its own file.
struct GptFamily {
  std::string_view model_type;  // "gpt2", "llama"
  /// What a GPT needs to be written as this family, for the error when none holds it.
  std::string_view needs;
  /// Whether the family holds a GPT of these options (save_hf writes the first that does).
  bool (*holds)(const ModelOptions&);
  /// config.json -> options: the family's defaults for absent keys, every key lathe does not
  /// implement refused by name.
  ModelOptions (*read)(const json& config, const fs::path& dir);
  /// Options -> config.json.
  json (*write)(const ModelOptions&);
  /// lathe's tensor names -> the family's.
  Table (*tensors)(const ModelOptions&);
  Layout layout;
};

// ---------------------------------------------------------------- Llama and its kin

/// Llama's tensor names, which Qwen2 and Mistral share (q / k / v biases where the options have
/// them, the other biases with `bias`).
Table llama_tensors(const ModelOptions& o);
const Layout& llama_layout();
/// The config.json keys Llama, Qwen2, Mistral and Gemma share, and how they map to the options.
const KeyTable& llama_keys();
/// What a Llama-style config starts from: rmsnorm (eps 1e-6), rope, swiglu, no biases, untied.
ModelOptions llama_style_defaults();
/// Rope, rmsnorm and swiglu, embeddings unscaled.
bool llama_style(const ModelOptions& o);
/// Blocks as every family but Gemma 2 has them: scores scaled by 1 / sqrt(head_dim), no
/// soft-capping, one window for every layer, no sandwich norms.
bool plain_blocks(const ModelOptions& o);
/// rope_parameters (transformers 5) or rope_theta + rope_scaling (earlier) into `o`: default,
/// linear and llama3; any other type or parameter refused by name.
void read_rope(const json& config, const fs::path& dir, ModelOptions& o);
/// `o`'s rope_parameters.
json rope_json(const ModelOptions& o);
/// num_key_value_heads null: one per query head (the configs' post-init); equal to the query
/// heads: plain multi-head attention (n_kv_head 0). Absent keeps the family's default.
void read_kv_heads(const json& config, ModelOptions& o);
/// head_dim where it differs from hidden_size / num_attention_heads.
void read_head_dim(const json& config, const fs::path& dir, ModelOptions& o);
/// What Gemma and Gemma 2 read alike (gemma.cpp): Llama's keys over Gemma's defaults (offset
/// norms, the tanh GeGLU, scaled embeddings, a tied head, head_dim 256, `kv_heads` key/value
/// heads, sandwich norms for Gemma 2), rope, and the refusals of attention_bias and
/// use_bidirectional_attention. The activation's key differs between them.
ModelOptions read_gemma_keys(const json& config, const fs::path& dir, int64_t kv_heads, bool sandwich);

}  // namespace lathe::models::hf
