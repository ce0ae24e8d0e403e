// What the Hugging Face families share: tensor tables, safetensors through them, config.json.

#include "family.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/init.hpp"

namespace lathe::models::hf {

void add_wb(Table& t, const std::string& ours, const std::string& theirs, bool bias, Xf xf) {
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

namespace {

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

/// The keys of `table` that visit() names, from config.json or into it.
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

}  // namespace

namespace {

/// Whether `pieces` (floating, of the parameter's rank) make a tensor of `shape` under `xf`.
bool fits(Xf xf, const std::vector<const io::SafetensorsReader::Info*>& pieces, at::IntArrayRef shape) {
  if (xf == Xf::Transpose && pieces[0]->shape.size() != 2) return false;
  for (const auto* p : pieces)
    if (!at::isFloatingType(p->dtype) || p->shape.size() != shape.size()) return false;
  auto made = pieces[0]->shape;
  if (xf == Xf::Transpose) std::reverse(made.begin(), made.end());
  if (xf == Xf::Stack)
    for (std::size_t i = 1; i < pieces.size(); ++i) {
      if (at::IntArrayRef(pieces[i]->shape).slice(1) != at::IntArrayRef(pieces[0]->shape).slice(1)) return false;
      made[0] += pieces[i]->shape[0];
    }
  return at::IntArrayRef(made) == shape;
}

std::string shape_of(const std::vector<int64_t>& s) { return shape_str(at::IntArrayRef(s)); }

[[noreturn]] void refuse(const std::vector<fs::path>& files, const std::vector<std::string>& missing,
                         const std::vector<std::string>& unexpected, const std::vector<std::string>& wrong) {
  const auto source = files.size() == 1 ? files.front().string()
                                        : "the shards of " + files.front().parent_path().string();
  std::string msg = source + " does not match the model that config.json describes:";
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

/// A stored tensor: its file and its name there.
struct Piece {
  std::shared_ptr<const io::SafetensorsReader> file;
  std::string name;
  const io::SafetensorsReader::Info* info;
};

/// One parameter's value: the stored tensors it is made of, and how.
struct Value {
  std::string name;  // ours
  Xf xf;
  std::vector<Piece> pieces;
};

/// The values of `model`'s parameters that `files` hold through `table`, every name and shape
/// checked from the files' headers alone: no tensor data is read here.
std::vector<Value> plan_values(const torch::nn::Module& model, const Table& table, const std::vector<fs::path>& files,
                               const Layout& layout, const std::vector<std::string>& optional,
                               std::vector<std::string>* initialized, io::Read read) {
  std::map<std::string, Piece> theirs;
  for (const auto& file : files) {
    auto reader = std::make_shared<const io::SafetensorsReader>(file, read);
    for (const auto& info : reader->tensors())
      if (!theirs.emplace(normalize(info.name, layout), Piece{reader, info.name, &info}).second)
        throw Error(file.string() + ": " + info.name + " is also in another shard of " + file.parent_path().string());
  }
  auto params = model.named_parameters();
  std::vector<std::string> missing, wrong, unexpected;
  std::set<std::string> used;
  std::vector<Value> values;
  for (const auto& rule : table) {
    auto* param = params.find(rule.ours);
    if (!param) throw std::logic_error("hf table names '" + rule.ours + "', which the model does not have");
    Value value{rule.ours, rule.xf, {}};
    std::vector<const io::SafetensorsReader::Info*> infos;
    std::vector<std::string> absent;
    for (const auto& name : rule.theirs) {
      auto it = theirs.find(name);
      if (it == theirs.end()) {
        absent.push_back(name);
        continue;
      }
      value.pieces.push_back(it->second);
      infos.push_back(it->second.info);
      used.insert(name);
    }
    if (!absent.empty()) {
      const bool opt = std::any_of(optional.begin(), optional.end(), [&](const std::string& p) {
        return rule.ours.starts_with(p);
      });
      if (opt && value.pieces.empty()) {
        if (initialized) initialized->push_back(rule.ours);
      } else {
        missing.insert(missing.end(), absent.begin(), absent.end());
      }
      continue;
    }
    if (!fits(rule.xf, infos, param->sizes())) {
      std::string got;
      for (std::size_t i = 0; i < infos.size(); ++i) got += (i ? " + " : "") + rule.theirs[i] + " " + shape_of(infos[i]->shape);
      wrong.push_back(got + (rule.xf == Xf::Transpose ? " (stored transposed)" : "") + " for " + rule.ours + " " +
                      shape_str(param->sizes()));
      continue;
    }
    values.push_back(std::move(value));
  }
  for (const auto& [name, piece] : theirs) {
    if (used.count(name)) continue;
    const bool ignored = std::any_of(layout.ignore.begin(), layout.ignore.end(), [&](const std::string& frag) {
      return name.find(frag) != std::string::npos;
    });
    if (!ignored) unexpected.push_back(name);
  }
  if (!missing.empty() || !wrong.empty() || !unexpected.empty()) refuse(files, missing, unexpected, wrong);
  return values;
}

/// The value made whole: a view of a mapped file, or its pieces read (and stacked or transposed).
at::Tensor make_value(const Value& v) {
  std::vector<at::Tensor> pieces;
  for (const auto& p : v.pieces) pieces.push_back(p.file->get(p.name));
  return v.xf == Xf::Transpose ? pieces[0].t() : v.xf == Xf::Stack ? at::cat(pieces, 0) : pieces[0];
}

/// Reads `v` straight into `param` where its pieces are stored in the parameter's dtype as rows of
/// it: no other copy of the data is made. False where it cannot (another dtype, a transpose, a
/// parameter off the CPU) or where the file is mapped (assign_parameter then takes the view).
bool read_in_place(const Value& v, at::Tensor& param, io::Read read) {
  if (read == io::Read::Map || v.xf == Xf::Transpose || !param.device().is_cpu() || !param.is_contiguous()) return false;
  for (const auto& p : v.pieces)
    if (p.info->dtype != param.scalar_type()) return false;
  int64_t row = 0;
  for (const auto& p : v.pieces) {
    const int64_t rows = p.info->shape.empty() ? 1 : p.info->shape[0];
    p.file->read_into(p.name, p.info->shape.empty() ? param : param.narrow(0, row, rows));
    row += rows;
  }
  return true;
}

}  // namespace

nn::ValueSource tensor_values(const torch::nn::Module& model, const Table& table, const std::vector<fs::path>& files,
                              const Layout& layout, const std::vector<std::string>& optional,
                              std::vector<std::string>* initialized, io::Read read) {
  auto values = plan_values(model, table, files, layout, optional, initialized, read);
  // Each value made when its turn comes, one at a time: a view of a mapped file, or read then.
  return [values = std::move(values)](const nn::ValueSink& sink) {
    torch::NoGradGuard no_grad;
    for (const auto& v : values) sink(v.name, make_value(v));
  };
}

void load_tensors(torch::nn::Module& model, const Table& table, const std::vector<fs::path>& files,
                  const Layout& layout, const std::vector<std::string>& optional, std::vector<std::string>* initialized,
                  io::Read read) {
  const auto values = plan_values(model, table, files, layout, optional, initialized, read);
  auto params = model.named_parameters();
  torch::NoGradGuard no_grad;
  for (const auto& v : values) {
    auto& param = params[v.name];
    if (!read_in_place(v, param, read)) assign_parameter(param, make_value(v));
  }
}

namespace {

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: throw std::invalid_argument(fmt::format("save_hf: storage dtype {} (float32, bfloat16 or float16)",
                                                     c10::toString(t)));
  }
}

/// Tensors in order, a new shard when the next one would pass the limit; a tensor larger than the
/// limit has a shard of its own.
std::vector<std::vector<std::size_t>> shards_of(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                                int64_t max_bytes) {
  std::vector<std::vector<std::size_t>> shards(1);
  int64_t size = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto bytes = static_cast<int64_t>(tensors[i].second.nbytes());
    if (max_bytes > 0 && !shards.back().empty() && size + bytes > max_bytes) {
      shards.emplace_back();
      size = 0;
    }
    shards.back().push_back(i);
    size += bytes;
  }
  return shards;
}

}  // namespace

std::vector<std::string> save_tensors(torch::nn::Module& model, const Table& table, const fs::path& dir, json config,
                                      const HfWriteOptions& options) {
  config["dtype"] = dtype_name(options.dtype);
  auto params = model.named_parameters();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& rule : table) {
    auto t = params[rule.ours].detach().to(at::kCPU, options.dtype).contiguous();
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
  std::vector<std::string> files{"config.json"};
  const auto shards = shards_of(out, options.max_shard_bytes);
  if (shards.size() == 1) {
    io::save_safetensors(dir / "model.safetensors", out, {{"format", "pt"}});
    files.push_back("model.safetensors");
  } else {
    json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
    int64_t total = 0;
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const auto name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      std::vector<std::pair<std::string, at::Tensor>> part;
      for (auto i : shards[s]) {
        part.push_back(out[i]);
        index["weight_map"][out[i].first] = name;
        total += static_cast<int64_t>(out[i].second.nbytes());
      }
      io::save_safetensors(dir / name, part, {{"format", "pt"}});
      files.push_back(name);
    }
    index["metadata"]["total_size"] = total;
    io::write_file_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
    files.push_back("model.safetensors.index.json");
  }
  io::write_file_atomic(dir / "config.json", config.dump(2) + "\n");
  return files;
}

std::vector<fs::path> weights_files(const fs::path& dir) {
  auto path = dir / "model.safetensors";
  if (fs::exists(path)) return {path};
  const auto index = dir / "model.safetensors.index.json";
  if (!fs::exists(index))
    throw Error(path.string() + ": not found (lathe reads safetensors weights, one file or shards listed in "
                                "model.safetensors.index.json; pytorch_model.bin is not read)");
  // A sharded checkpoint: weight_map names each tensor's file; the files are read in turn.
  const auto j = io::read_json(index);
  if (!j.contains("weight_map") || !j["weight_map"].is_object() || j["weight_map"].empty())
    throw Error(index.string() + ": no weight_map (the tensor -> file map of a sharded checkpoint)");
  std::vector<fs::path> files;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw Error(index.string() + ": weight_map's entry for " + tensor + " is not a file name");
    const auto shard = dir / file.get<std::string>();
    if (std::find(files.begin(), files.end(), shard) != files.end()) continue;
    if (!fs::exists(shard))
      throw Error(index.string() + ": weight_map puts " + tensor + " in " + shard.string() + ", which does not exist");
    files.push_back(shard);
  }
  return files;
}

json read_config(const fs::path& dir) {
  const auto path = dir / "config.json";
  if (!fs::exists(path)) throw Error(path.string() + ": cannot open (a Hugging Face model directory has config.json)");
  return io::read_json(path);
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

bool plain_blocks(const ModelOptions& o) {
  return o.attn_softcap == 0 && o.logit_softcap == 0 && !o.sandwich_norm &&
         (o.attn_scale_dim == 0 || o.attn_scale_dim == o.head_dim()) &&
         (o.sliding_window == 0 || o.sliding_window_pattern == 0);
}

/// transformers' GPT-2 and BERT derive the head width as hidden size / heads; a model whose
/// heads were pruned (n_head * head_dim < d_model) has no config there.
void check_heads_fill_width(const ModelOptions& o, const char* family) {
  if (o.n_head * o.head_dim() == o.d_model) return;
  throw Error(fmt::format("this model has {} heads of width {} in a width of {} (pruned heads); transformers' {} "
                          "derives the head width from the hidden size and cannot hold it: export it to lathe's "
                          "model file, or prune only MLP neurons (prune.heads: 0)",
                          o.n_head, o.head_dim(), o.d_model, family));
}

}  // namespace lathe::models::hf
