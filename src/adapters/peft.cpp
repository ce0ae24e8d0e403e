// PEFT's adapter directory: adapter_config.json and adapter_model.safetensors.

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/adapters/lora.hpp"
#include "lathe/compress/quantize.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/nn/linear.hpp"

namespace lathe::adapters {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kConfig = "adapter_config.json";
constexpr const char* kWeights = "adapter_model.safetensors";
// Where PEFT's LoraModel keeps the wrapped model: every saved name starts with it.
constexpr const char* kPrefix = "base_model.model.";
// lathe's own key: the quantization of a QLoRA adapter's frozen base (PEFT ignores it).
constexpr const char* kBaseQuantization = "lathe_base_quantization";

/// A Hugging Face module of the model and where its rows sit in lathe's Linear.
struct Module {
  std::string lathe_path;  // the Linear
  nn::LoraPart rows;
  int64_t in = 0;
};

/// Every Hugging Face module name of the model's Linear layers (their weight's name without
/// ".weight"), with its rows.
std::map<std::string, Module> hf_modules(const models::AnyModel& model) {
  std::map<std::string, nn::LinearImpl*> linears;
  for (auto& [path, lin] : nn::linear_layers(*model.module())) linears[path] = lin;
  std::map<std::string, Module> out;
  for (const auto& t : model.traits().hf_naming(*model.module()).tensors) {
    if (!t.ours.ends_with(".weight")) continue;
    const auto path = t.ours.substr(0, t.ours.size() - 7);
    auto it = linears.find(path);
    if (it == linears.end()) continue;  // an embedding
    int64_t begin = 0;
    for (std::size_t k = 0; k < t.theirs.size(); ++k) {
      const auto& name = t.theirs[k];
      const int64_t rows = t.theirs.size() == 1 ? it->second->options.out : t.rows[k];
      out[name.substr(0, name.size() - 7)] = {path, {begin, rows}, it->second->options.in};
      begin += rows;
    }
  }
  return out;
}

[[noreturn]] void refuse(const fs::path& file, const std::string& key, const json& value, const std::string& why) {
  throw Error(fmt::format("{}: {}: {} is not read by lathe: {}", file.string(), key, value.dump(), why));
}

}  // namespace

bool is_adapter_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::exists(dir / kConfig, ec);
}

std::vector<std::string> save_peft(const models::AnyModel& model, const fs::path& dir, const AdapterOptions& options,
                                   const std::string& base_model) {
  const auto modules = hf_modules(model);
  std::map<std::string, nn::LinearImpl*> linears;
  for (auto& [path, lin] : nn::linear_layers(*model.module())) linears[path] = lin;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> targets;
  const nn::LoraOptions* first = nullptr;  // the adapters' own rank, alpha, dropout: every adapter has them
  for (const auto& [name, m] : modules) {
    const auto* lin = linears.at(m.lathe_path);
    if (!lin->lora) continue;
    const auto& lo = lin->lora->options;
    if (!first) first = &lo;
    if (lo.rank != first->rank || lo.alpha != first->alpha || lo.rslora != first->rslora)
      throw std::logic_error("save_peft: adapters of different ranks or scales in one model");
    int64_t brow = 0;
    for (std::size_t p = 0; p < lo.parts.size(); ++p) {
      if (lo.parts[p].begin == m.rows.begin) {
        const auto r = lo.rank;
        auto a = lin->lora->A.detach().narrow(0, static_cast<int64_t>(p) * r, r).to(at::kCPU, at::kFloat).contiguous();
        auto b = lin->lora->B.detach().narrow(0, brow, lo.parts[p].rows).to(at::kCPU, at::kFloat).contiguous();
        tensors.emplace_back(kPrefix + name + ".lora_A.weight", a);
        tensors.emplace_back(kPrefix + name + ".lora_B.weight", b);
        targets.insert(name);  // full names: PEFT adapts exactly these modules
      }
      brow += lo.parts[p].rows;
    }
  }
  if (tensors.empty()) throw std::logic_error("save_peft: the model has no adapters");
  const auto naming = model.traits().hf_naming(*model.module());
  json config = {{"peft_type", "LORA"},
                 {"task_type", "CAUSAL_LM"},
                 {"base_model_name_or_path", base_model},
                 {"r", first->rank},
                 {"lora_alpha", first->alpha},
                 {"lora_dropout", first->dropout},
                 {"use_rslora", first->rslora},
                 {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
                 {"fan_in_fan_out", naming.transposed_linears},
                 {"bias", "none"},
                 {"use_dora", false},
                 {"init_lora_weights", true},
                 {"inference_mode", true},
                 {"modules_to_save", nullptr},
                 {"rank_pattern", json::object()},
                 {"alpha_pattern", json::object()},
                 {"layers_to_transform", nullptr},
                 {"layers_pattern", nullptr},
                 {"revision", nullptr}};
  if (options.kind == AdapterKind::Qlora)
    config[kBaseQuantization] = {{"method", enum_name(options.base_method)}, {"group_size", options.base_group_size}};
  fs::create_directories(dir);
  io::save_safetensors(dir / kWeights, tensors, {{"format", "pt"}});
  io::write_file_atomic(dir / kConfig, config.dump(2) + "\n");
  return {kConfig, kWeights};
}

PeftConfig read_peft_config(const fs::path& dir) {
  const auto file = dir / kConfig;
  const json c = io::read_json(file);
  if (!c.is_object()) throw Error(file.string() + ": not a JSON object");
  auto get = [&]<class T>(const char* key, T fallback) {
    if (!c.contains(key) || c[key].is_null()) return fallback;
    try {
      return c[key].get<T>();
    } catch (const json::exception&) {
      throw Error(fmt::format("{}: {}: unexpected value {}", file.string(), key, c[key].dump()));
    }
  };
  if (get("peft_type", std::string()) != "LORA")
    refuse(file, "peft_type", c.value("peft_type", json()), "lathe reads LoRA adapters (peft_type LORA)");
  for (const char* key : {"use_dora", "lora_bias", "use_qalora"})
    if (get(key, false)) refuse(file, key, true, "lathe's adapters are plain LoRA");
  // Initialisations that rewrite the base weights when PEFT loads the adapter (PiSSA, OLoRA,
  // CorDA, LoftQ, ...) give W_res + s B A there; lathe's base is the model's own W.
  if (c.contains("init_lora_weights") && c["init_lora_weights"].is_string() && c["init_lora_weights"] != "gaussian")
    refuse(file, "init_lora_weights", c["init_lora_weights"],
           "this initialisation changes the base weights when PEFT loads the adapter; convert it to a plain LoRA "
           "adapter first (PEFT's path_initial_model_for_weight_conversion)");
  if (const auto bias = get("bias", std::string("none")); bias != "none")
    refuse(file, "bias", bias, "lathe trains no biases beside the adapters");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (c.contains(key) && !c[key].is_null() && !c[key].empty())
      refuse(file, key, c[key], "every adapter has the same rank and alpha in lathe");
  for (const char* key : {"modules_to_save", "layer_replication", "trainable_token_indices", "target_parameters",
                          "alora_invocation_tokens", "use_bdlora"})
    if (c.contains(key) && !c[key].is_null() && c[key] != false && !(c[key].is_array() && c[key].empty()))
      refuse(file, key, c[key], "lathe's adapters are LoRA on Linear layers alone");
  PeftConfig out;
  out.options.kind = AdapterKind::Lora;
  out.options.rank = get("r", int64_t{8});
  out.options.alpha = get("lora_alpha", 8.0);
  out.options.dropout = get("lora_dropout", 0.0);
  out.options.rslora = get("use_rslora", false);
  out.base_model = get("base_model_name_or_path", std::string());
  if (c.contains("target_modules") && c["target_modules"].is_array())
    out.target_modules = c["target_modules"].get<std::vector<std::string>>();
  if (c.contains(kBaseQuantization)) {
    const auto& q = c[kBaseQuantization];
    const auto method = q.is_object() ? parse_enum<nn::QuantScheme>(q.value("method", "")) : std::nullopt;
    if (!method) refuse(file, kBaseQuantization, q, "expected {\"method\": <a quantize.method>, \"group_size\": n}");
    out.options.kind = AdapterKind::Qlora;
    out.options.base_method = *method;
    out.options.base_group_size = q.value("group_size", int64_t{64});
  }
  if (out.options.rank < 1) refuse(file, "r", out.options.rank, "the rank must be at least 1");
  return out;
}

void load_peft(models::AnyModel& model, const fs::path& dir) {
  const auto config = read_peft_config(dir);
  const auto file = dir / kWeights;
  if (!fs::exists(file)) throw Error(file.string() + ": missing (adapter_config.json has no weights beside it)");
  const auto st = io::load_safetensors(file);
  std::map<std::string, at::Tensor> tensors(st.tensors.begin(), st.tensors.end());
  const auto modules = hf_modules(model);
  const auto r = config.options.rank;
  // The adapted parts of each lathe Linear, in row order, with their A and B.
  struct Part {
    nn::LoraPart rows;
    at::Tensor a, b;
  };
  std::map<std::string, std::vector<Part>> found;
  std::vector<std::string> problems;
  for (const auto& [name, m] : modules) {
    const auto ka = kPrefix + name + ".lora_A.weight", kb = kPrefix + name + ".lora_B.weight";
    const auto a = tensors.find(ka), b = tensors.find(kb);
    if (a == tensors.end() && b == tensors.end()) continue;
    if (a == tensors.end() || b == tensors.end()) {
      problems.push_back("missing " + (a == tensors.end() ? ka : kb));
    } else if (a->second.sizes() != at::IntArrayRef{r, m.in} || b->second.sizes() != at::IntArrayRef{m.rows.rows, r}) {
      problems.push_back(fmt::format("{} {} and {} {} do not fit the module's ({}, {}) and ({}, {}) at r = {}", ka,
                                     c10::str(a->second.sizes()), kb, c10::str(b->second.sizes()), r, m.in,
                                     m.rows.rows, r, r));
    } else {
      found[m.lathe_path].push_back({m.rows, a->second, b->second});
    }
    tensors.erase(ka);
    tensors.erase(kb);
  }
  for (const auto& [name, t] : tensors) problems.push_back("unexpected " + name + " (no Linear of the model has it)");
  if (found.empty() && problems.empty()) problems.push_back("no lora_A / lora_B tensor of the model's modules");
  if (!problems.empty())
    throw Error(fmt::format("{}: does not fit this {} model: {}", file.string(),
                            model.traits().hf_naming(*model.module()).model_type, fmt::join(problems, "; ")));
  std::map<std::string, nn::LinearImpl*> linears;
  for (auto& [path, lin] : nn::linear_layers(*model.module())) linears[path] = lin;
  torch::NoGradGuard no_grad;
  for (auto& [path, parts] : found) {
    std::sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) { return x.rows.begin < y.rows.begin; });
    nn::LoraOptions lo;
    lo.rank = r;
    lo.alpha = config.options.alpha;
    lo.dropout = config.options.dropout;
    lo.rslora = config.options.rslora;
    std::vector<at::Tensor> as, bs;
    for (const auto& p : parts) {
      lo.parts.push_back(p.rows);
      as.push_back(p.a);
      bs.push_back(p.b);
    }
    auto* lin = linears.at(path);
    if (lin->lora) throw Error(file.string() + ": " + path + " has an adapter already");
    if (lin->weight.defined()) lo.device = lin->weight.device();
    lin->add_adapter(std::move(lo));
    lin->lora->A.copy_(at::cat(as, 0));
    lin->lora->B.copy_(at::cat(bs, 0));
  }
  freeze_base(model);
}

std::string resume_problem(const fs::path& dir, const AdapterOptions& o, const std::string& base) {
  const auto saved = read_peft_config(dir);
  const auto& s = saved.options;
  std::vector<std::string> diffs;
  auto differ = [&](const char* key, const auto& then, const auto& now) {
    if (then != now) diffs.push_back(fmt::format("{}: {} in the checkpoint, {} in the recipe", key, then, now));
  };
  differ("adapters.kind", enum_name(s.kind), enum_name(o.kind));
  differ("adapters.rank", s.rank, o.rank);
  differ("adapters.alpha", s.alpha, o.alpha);
  differ("adapters.rslora", s.rslora, o.rslora);
  if (s.kind == AdapterKind::Qlora && o.kind == AdapterKind::Qlora) {
    differ("adapters.base_method", enum_name(s.base_method), enum_name(o.base_method));
    differ("adapters.base_group_size", s.base_group_size, o.base_group_size);
  }
  if (!saved.base_model.empty() && fs::path(saved.base_model).lexically_normal() != fs::path(base).lexically_normal())
    diffs.push_back(fmt::format("train.init_from: {} in the checkpoint, {} in the recipe", saved.base_model, base));
  if (diffs.empty()) return {};
  return fmt::format("{} holds adapters trained with other settings: {}", dir.string(), fmt::join(diffs, "; "));
}

models::AnyModel load_adapted(const fs::path& dir, bool merged, const fs::path& base) {
  const auto config = read_peft_config(dir);
  fs::path from = base;
  if (from.empty()) {
    if (config.base_model.empty())
      throw Error((dir / kConfig).string() + ": base_model_name_or_path is empty: say where the base model is");
    from = config.base_model;
    if (from.is_relative() && !fs::exists(from)) from = dir / from;
  }
  std::error_code ec;
  if (fs::equivalent(from, dir, ec))
    throw Error((dir / kConfig).string() + ": base_model_name_or_path names the adapter's own directory");
  if (!fs::exists(from))
    throw Error(fmt::format("{}: the base model {} is not here (lathe reads local model directories and files only)",
                            (dir / kConfig).string(), from.string()));
  // The base may itself be an adapter directory (DPO with LoRA after an SFT with LoRA): its base
  // with its adapter merged.
  auto model = adapters::load_model(from, models::ModelKind::Gpt);
  if (config.options.kind == AdapterKind::Qlora) quantize_base(model, config.options);
  load_peft(model, dir);
  if (merged) merge(model);
  return model;
}

models::AnyModel load_model(const fs::path& path, std::optional<models::ModelKind> want, int64_t num_labels,
                            io::Read read) {
  if (!is_adapter_dir(path)) return models::load_model(path, want, num_labels, read);
  if (want && *want != models::ModelKind::Gpt)
    throw Error(fmt::format("{} holds a LoRA adapter of a gpt model; a {} model was asked for", path.string(),
                            enum_name(*want)));
  return load_adapted(path, /*merged=*/true);
}

}  // namespace lathe::adapters
