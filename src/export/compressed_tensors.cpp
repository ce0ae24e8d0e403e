// compressed-tensors Hugging Face directories (lathe/export/compressed_tensors.hpp).

#include "lathe/export/compressed_tensors.hpp"

#include <algorithm>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/quant_scheme.hpp"

namespace lathe::export_ {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

/// How each scheme is held in compressed-tensors.
struct SchemeLayout {
  nn::QuantScheme scheme;
  const char* format;        // quantization_config.format
  bool grouped;              // 4-bit groups with float zero points (int4), else 8-bit channels
  bool dynamic_activations;  // input_activations: int8 per token, dynamic
};
constexpr SchemeLayout kLayouts[] = {
    {nn::QuantScheme::Int8Dynamic, "int-quantized", false, true},
    {nn::QuantScheme::Int8WeightOnly, "int-quantized", false, false},
    {nn::QuantScheme::Int4WeightOnly, "int-quantized", true, false},
};
static_assert(nn::covers_every_scheme(kLayouts), "every quantization scheme needs its compressed-tensors layout");

const SchemeLayout& layout_of(nn::QuantScheme scheme) {
  for (const auto& l : kLayouts)
    if (l.scheme == scheme) return l;
  throw std::logic_error("no compressed-tensors layout for a scheme");
}

struct Piece {
  std::string prefix;  // the Hugging Face module ("model.layers.0.self_attn.q_proj")
  int64_t row = 0, rows = 0;
};

/// The compressed tensors of one piece of a quantized layer; `worst` gets the largest
/// difference from lathe's values (int4), relative to the layer's largest weight.
std::vector<std::pair<std::string, at::Tensor>> compress(const nn::QuantizedWeight& q, const Piece& p,
                                                         double& worst) {
  const auto codes = q.codes().narrow(0, p.row, p.rows);
  const auto scales = q.scales().narrow(0, p.row, p.rows).to(at::kFloat);
  if (!layout_of(q.grid().scheme).grouped)
    return {{p.prefix + ".weight", codes.to(at::kChar).contiguous()},
            {p.prefix + ".weight_scale", scales.reshape({p.rows, 1}).contiguous()}};
  // int4: lathe's w = (c - 8) * s + zero is compressed-tensors' w = (q - zp) * s with q = c - 8
  // and a float zero point zp = -zero / s (zp_dtype): the same values, the codes one per byte.
  // Scales and zero points in float32 whatever the weights' storage: -zero / scale overflows
  // float16 (and is not finite for a constant group's tiny scale) where float32 holds it.
  const auto zeros = q.zeros().narrow(0, p.row, p.rows).to(at::kFloat);
  const auto stored = scales;
  const auto zp = -zeros / stored;
  if (!at::isfinite(zp).all().item<bool>())
    throw Error("compressed-tensors export: " + p.prefix + " has an int4 group whose zero point -zero / scale is not "
                                                           "finite in float32");
  const int64_t group = q.grid().group(q.in());
  const auto meant = (codes.to(at::kFloat) - 8) * scales.repeat_interleave(group, 1) + zeros.repeat_interleave(group, 1);
  const auto written = (codes.to(at::kFloat) - 8 - zp.to(at::kFloat).repeat_interleave(group, 1)) *
                       stored.to(at::kFloat).repeat_interleave(group, 1);
  const double range = meant.abs().max().item<double>();
  worst = std::max(worst, (written - meant).abs().max().item<double>() / std::max(range, 1e-30));
  return {{p.prefix + ".weight", (codes.to(at::kShort) - 8).to(at::kChar).contiguous()},
          {p.prefix + ".weight_scale", stored.contiguous()},
          {p.prefix + ".weight_zero_point", zp.contiguous()}};
}

ordered_json quantization_config(const SchemeLayout& l, const nn::QuantGrid& grid, const std::vector<std::string>& ignore) {
  const bool grouped = l.grouped;
  ordered_json weights{{"num_bits", grouped ? 4 : 8},
                       {"type", "int"},
                       {"symmetric", !grouped},
                       {"group_size", grouped ? ordered_json(grid.group_size) : ordered_json(nullptr)},
                       {"strategy", grouped ? "group" : "channel"},
                       {"dynamic", false},
                       {"observer", "minmax"}};
  if (grouped) weights["zp_dtype"] = "torch.float32";
  ordered_json activations = nullptr;
  if (l.dynamic_activations)
    activations = {{"num_bits", 8}, {"type", "int"},  {"symmetric", true},
                   {"strategy", "token"}, {"dynamic", true}, {"observer", nullptr}};
  return {{"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"weights", weights},
              {"input_activations", activations},
              {"output_activations", nullptr},
              {"format", l.format}}}}},
          {"format", l.format},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"quant_method", "compressed-tensors"},
          {"quantization_status", "compressed"}};
}

}  // namespace

std::string compressed_tensors_problem(const models::AnyModel& model) {
  if (model.arch() != models::Arch::Gpt || !model.traits().hf_naming)
    return "compressed-tensors holds decoder families' nn.Linear layers; this model is a " + model.kind_name();
  const auto naming = model.traits().hf_naming(*model.module());
  if (naming.transposed_linears)
    return "transformers holds " + naming.model_type + "'s layers as Conv1D, which compressed-tensors does not quantize";
  std::set<nn::QuantScheme> schemes;
  for (const auto& [path, q] : models::quantized_layers(model)) schemes.insert(q->grid().scheme);
  if (schemes.size() > 1) return "the layers mix quantization schemes; compressed-tensors' config holds one here";
  return {};
}

std::map<std::string, nn::QuantizedWeight> quantized_weights(const models::AnyModel& model) {
  std::map<std::string, nn::QuantizedWeight> out;
  for (const auto& [path, q] : models::quantized_layers(model)) out.emplace(path, *q);
  return out;
}

namespace {

/// The weights files of the Hugging Face directory `dir` (one, or the index's shards), rewritten
/// with each weight named in `replaced` replaced by its tensors.
void replace_in_files(const fs::path& dir,
                      const std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>>& replaced) {
  const auto index_path = dir / "model.safetensors.index.json";
  nlohmann::json index = fs::exists(index_path) ? io::read_json(index_path) : nlohmann::json();
  std::vector<fs::path> files;
  if (index.is_null()) files.push_back(dir / "model.safetensors");
  else
    for (const auto& f : std::set<std::string>{[&] {
           std::set<std::string> names;
           for (const auto& [k, v] : index["weight_map"].items()) names.insert(v.get<std::string>());
           return names;
         }()})
      files.push_back(dir / f);
  std::set<std::string> unwritten;
  for (const auto& [name, tensors] : replaced) unwritten.insert(name);
  for (const auto& file : files) {
    auto st = io::load_safetensors(file);
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (auto& [name, t] : st.tensors) {
      const auto r = replaced.find(name);
      if (r == replaced.end()) {
        out.emplace_back(name, t);
        continue;
      }
      unwritten.erase(name);
      for (const auto& [n, v] : r->second) {
        out.emplace_back(n, v);
        if (!index.is_null()) index["weight_map"][n] = file.filename().string();
      }
      if (!index.is_null()) index["weight_map"].erase(name);
    }
    io::save_safetensors(file, out, {{"format", "pt"}});
  }
  // A quantized weight under another name than the files' would load as an uninitialised layer.
  if (!unwritten.empty())
    throw Error(fmt::format("compressed-tensors export: the Hugging Face files in {} hold no {}", dir.string(),
                            *unwritten.begin()));
  if (!index.is_null()) io::write_file_atomic(index_path, index.dump(2));
}

}  // namespace

std::vector<std::string> write_compressed_tensors(const models::AnyModel& model,
                                                  const std::map<std::string, nn::QuantizedWeight>& layers,
                                                  const fs::path& dir) {
  if (layers.empty()) return {};
  if (const auto problem = compressed_tensors_problem(model); !problem.empty()) throw Error(problem);
  const auto naming = model.traits().hf_naming(*model.module());
  std::map<std::string, std::vector<std::pair<std::string, at::Tensor>>> replaced;  // HF weight -> tensors
  std::vector<std::string> ignore;
  std::set<std::string> linear_paths;
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) linear_paths.insert(path);
  double worst = 0;
  for (const auto& rule : naming.tensors) {
    if (!rule.ours.ends_with(".weight")) continue;
    const auto path = rule.ours.substr(0, rule.ours.size() - 7);
    if (!linear_paths.count(path)) continue;
    const auto it = layers.find(path);
    int64_t row = 0;
    for (std::size_t i = 0; i < rule.theirs.size(); ++i) {
      const auto& hf = rule.theirs[i];
      const auto prefix = hf.substr(0, hf.size() - 7);
      if (it == layers.end()) {
        ignore.push_back(prefix);
        continue;
      }
      const int64_t rows = rule.theirs.size() == 1 ? it->second.out() : rule.rows[i];
      replaced[hf] = compress(it->second, {prefix, row, rows}, worst);
      row += rows;
    }
  }
  if (std::find(ignore.begin(), ignore.end(), "lm_head") == ignore.end() && !layers.count("lm_head"))
    ignore.push_back("lm_head");  // a tied head is a Linear of transformers' model too
  replace_in_files(dir, replaced);
  auto config = io::read_json(dir / "config.json");
  const auto& first = layers.begin()->second;
  config["quantization_config"] =
      nlohmann::json::parse(quantization_config(layout_of(first.grid().scheme), first.grid(), ignore).dump());
  io::write_file_atomic(dir / "config.json", config.dump(2));
  std::vector<std::string> notes{fmt::format("{} layers in compressed-tensors' {} layout", layers.size(),
                                             layout_of(first.grid().scheme).format)};
  if (layout_of(first.grid().scheme).grouped)
    notes.push_back(fmt::format("int4 scales and zero points in float32 (zp_dtype): weights within {:.3g}% of a "
                                "layer's largest",
                                100 * worst));
  return notes;
}

}  // namespace lathe::export_
