// Attaching, counting and merging adapters.

#include "lathe/adapters/lora.hpp"

#include <map>

#include <fmt/format.h>
#include <torch/nn/module.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/core/error.hpp"
#include "lathe/nn/linear.hpp"

namespace lathe::adapters {

namespace {

/// The weight of a Linear as selection sees it (a quantized weight keeps its role).
nn::RoledParameter weight_of(const std::string& path, const nn::LinearImpl& lin) {
  return {path + ".weight", lin.weight, lin.options.role};
}

}  // namespace

std::map<std::string, std::vector<nn::LoraPart>> hf_parts(const models::AnyModel& model) {
  const auto naming_of = model.traits().hf_naming;
  if (!naming_of)
    throw Error("adapters: a " + model.kind_name() + " model takes no adapters here (LoRA trains GPT models: "
                "train.task causal_lm, sft or dpo)");
  std::map<std::string, std::vector<nn::LoraPart>> parts;
  models::HfNaming naming;
  try {
    naming = naming_of(*model.module());
  } catch (const Error& e) {
    throw Error(std::string("adapters are saved in PEFT's format, under the names of the model's Hugging Face family, "
                            "and this model has none: ") + e.what());
  }
  for (const auto& t : naming.tensors) {
    if (!t.ours.ends_with(".weight")) continue;
    auto& p = parts[t.ours.substr(0, t.ours.size() - 7)];
    if (t.theirs.size() <= 1) continue;  // one module: the whole layer
    int64_t begin = 0;
    for (const auto rows : t.rows) {
      p.push_back({begin, rows});
      begin += rows;
    }
  }
  return parts;
}

std::string AdapterSummary::describe() const {
  const double total = static_cast<double>(adapter_parameters + base_parameters);
  return fmt::format("{} adapters on {} layers: {:.3f}M trainable parameters ({:.2f}% of {:.2f}M), frozen base {:.1f} "
                     "MB ({:.2f} bytes per base parameter)",
                     kind_name, layers.size(), static_cast<double>(adapter_parameters) / 1e6,
                     total > 0 ? 100.0 * static_cast<double>(adapter_parameters) / total : 0.0, total / 1e6,
                     static_cast<double>(base_bytes) / 1e6,
                     base_parameters > 0 ? static_cast<double>(base_bytes) / static_cast<double>(base_parameters) : 0.0);
}

AdapterSummary summarise(const models::AnyModel& model, std::string kind) {
  AdapterSummary s;
  s.kind_name = std::move(kind);
  s.layers = adapted_layers(model);
  for (const auto& p : nn::roles_of(*model.module())) {
    const auto n = p.tensor.numel();
    if (p.role == nn::Role::Adapter) {
      s.adapter_parameters += n;
    } else {
      s.base_parameters += n;
      s.base_bytes += n * static_cast<int64_t>(p.tensor.element_size());
    }
  }
  for (const auto& [path, q] : models::quantized_layers(model)) {
    s.base_parameters += q->out() * q->in();
    s.base_bytes += q->bytes();
  }
  return s;
}

void quantize_base(models::AnyModel& model, const AdapterOptions& o) {
  if (!models::quantized_layers(model).empty()) return;
  compress::QuantizeOptions q;
  q.method = o.base_method;
  q.group_size = o.base_group_size;
  q.skip_modules = {"output_head"};
  try {
    compress::quantize_model(model, q);
  } catch (const Error& e) {
    throw Error(fmt::format("adapters.kind qlora: quantizing the base as adapters.base_method {} with "
                            "adapters.base_group_size {}: {}",
                            enum_name(o.base_method), o.base_group_size, e.what()));
  }
}

AdapterSummary attach(models::AnyModel& model, const AdapterOptions& o) {
  if (!o.on()) throw std::logic_error("adapters::attach: adapters.kind is none");
  const auto parts = hf_parts(model);  // refuses a kind without adapters before anything changes
  if (o.kind == AdapterKind::Qlora) quantize_base(model, o);
  int64_t adapted = 0;
  for (auto& [path, lin] : nn::linear_layers(*model.module())) {
    if (!nn::selected(weight_of(path, *lin), o.targets)) continue;
    if (lin->lora) throw Error("adapters: " + path + " has an adapter already");
    nn::LoraOptions lo;
    lo.rank = o.rank;
    lo.alpha = o.alpha;
    lo.dropout = o.dropout;
    lo.rslora = o.rslora;
    if (auto it = parts.find(path); it != parts.end()) lo.parts = it->second;
    if (lin->weight.defined()) lo.device = lin->weight.device();
    lin->add_adapter(std::move(lo));
    ++adapted;
  }
  if (adapted == 0)
    throw Error(fmt::format("adapters.targets [{}] selects no Linear layer of the model (roles: head_block, "
                            "neuron_block, residual_projection, matrix, output_head; or module paths such as "
                            "blocks.*.attn.qkv)",
                            fmt::join(o.targets, ", ")));
  freeze_base(model);
  return summarise(model, std::string(enum_name(o.kind)));
}

void freeze_base(models::AnyModel& model) {
  for (const auto& p : nn::roles_of(*model.module())) {
    auto t = p.tensor;
    t.set_requires_grad(p.role == nn::Role::Adapter);
  }
}

std::vector<std::string> target_layers(const models::AnyModel& model, const std::vector<std::string>& targets) {
  std::vector<std::string> out;
  for (auto& [path, lin] : nn::linear_layers(*model.module()))
    if (nn::selected(weight_of(path, *lin), targets)) out.push_back(path);
  return out;
}

std::vector<std::string> adapted_layers(const models::AnyModel& model) {
  std::vector<std::string> out;
  for (const auto& [path, lin] : nn::linear_layers(*model.module()))
    if (lin->lora) out.push_back(path);
  return out;
}

void merge(models::AnyModel& model) {
  for (auto& [path, lin] : nn::linear_layers(*model.module())) lin->merge_adapter();
  for (auto& p : model.module()->parameters()) p.set_requires_grad(true);
}

}  // namespace lathe::adapters
