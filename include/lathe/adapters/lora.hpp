// LoRA and QLoRA on a model's Linear layers, selected by parameter role or path as pruning and
// quantization select; merging; and PEFT's file format.
//
// A model with adapters keeps every parameter of its own frozen (requires_grad false) and
// trains the adapters alone (nn/lora.hpp). QLoRA first quantizes the frozen base's Linear
// layers (compress::quantize_model, round-to-nearest), so the base costs its int4 / int8 bytes;
// the adapters stay float32 and the products compute in the scheme's activations dtype.
//
// PEFT's format, which peft.PeftModel.from_pretrained reads: a directory with
//   adapter_config.json        peft_type LORA, r, lora_alpha, lora_dropout, target_modules,
//                              use_rslora, fan_in_fan_out, base_model_name_or_path, task_type
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in) and
//                              .lora_B.weight (out, r) for each Hugging Face module adapted
// where <module> is the module's name in the Hugging Face family the model is written as
// (models::hf_naming): a lathe Linear that the family splits (q / k / v, gate / up) has one
// adapter per part there and here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lathe/core/enum_table.hpp"
#include "lathe/core/schema.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/lora.hpp"
#include "lathe/nn/quant_scheme.hpp"

namespace lathe::adapters {

using lathe::operator<<;

/// none: the whole model trains; lora: adapters on a frozen float base; qlora: adapters on a
/// frozen base quantized at the start (base_method).
enum class AdapterKind { None, Lora, Qlora };

struct AdapterOptions {
  AdapterKind kind = AdapterKind::None;
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0;
  bool rslora = false;
  std::vector<std::string> targets{"head_block", "neuron_block", "residual_projection"};
  nn::QuantScheme base_method = nn::QuantScheme::Int4WeightOnly;
  int64_t base_group_size = 64;

  bool on() const { return kind != AdapterKind::None; }
};

template <class V>
void visit(V& v, AdapterOptions& c) {
  v.field("kind", c.kind, "none (every parameter trains), lora (low-rank adapters on the frozen model; checkpoints "
                          "hold the adapters alone) or qlora (the same on a base quantized at the start with "
                          "base_method).");
  v.field("rank", c.rank, "r: inner width of each adapter.", at_least(1));
  v.field("alpha", c.alpha, "The update B A x is scaled by alpha / rank (alpha / sqrt(rank) with rslora).",
          greater_than(0.0));
  v.field("dropout", c.dropout, "Dropout on the adapters' input while training.", in_closed_open(0.0, 1.0));
  v.field("rslora", c.rslora, "Rank-stabilised LoRA: scale by alpha / sqrt(rank).");
  v.field("targets", c.targets, "The Linear layers that get adapters: parameter roles (head_block: attention's q / "
                                "k / v, neuron_block: the MLP's input, residual_projection: attention's output and the "
                                "MLP's down projection, matrix, output_head) or module path patterns (blocks.*.attn.*). "
                                "A layer Hugging Face splits (q / k / v, gate / up) gets one adapter per part.");
  v.field("base_method", c.base_method, "qlora: the quantization of the frozen base (int4_weight_only or "
                                        "int8_weight_only; computing in bfloat16 for int4).");
  v.field("base_group_size", c.base_group_size, "qlora, int4: inputs per quantization group (32, 64, 128 or 256).",
          between(32, 256));
}

/// What attach() did: the adapted layers and the parameter counts.
struct AdapterSummary {
  std::string kind_name;            // lora, qlora
  std::vector<std::string> layers;  // lathe module paths
  int64_t adapter_parameters = 0;
  int64_t base_parameters = 0;      // the frozen model's (quantized weights counted by element)
  int64_t base_bytes = 0;           // what the frozen base holds (quantized weights in their stored bytes)
  std::string describe() const;
};

/// Freezes every parameter of `model` and gives each Linear that `options.targets` select an
/// adapter (one per Hugging Face part), drawn from LibTorch's generator (seed it first). qlora:
/// quantizes the base first, unless it is quantized already (a quantize stage's output).
/// Throws lathe::Error for a kind without adapters, targets that select no layer, or a layer
/// that has an adapter already.
AdapterSummary attach(models::AnyModel& model, const AdapterOptions& options);

/// What `model`'s adapters and base hold (`kind`: the name describe() gives them).
AdapterSummary summarise(const models::AnyModel& model, std::string kind);

/// Each Linear's parts as the model's Hugging Face family splits it (lathe module path -> rows
/// of each part; empty: one module holds the whole layer). Throws lathe::Error for a kind that
/// takes no adapters.
std::map<std::string, std::vector<nn::LoraPart>> hf_parts(const models::AnyModel& model);

/// qlora: quantizes `model`'s Linear layers but the output head as base_method says
/// (round-to-nearest), unless it is quantized already.
void quantize_base(models::AnyModel& model, const AdapterOptions& options);

/// Makes the adapters the only trainable parameters.
void freeze_base(models::AnyModel& model);

/// The Linear layers `targets` select in `model` (what attach() adapts), by module path.
std::vector<std::string> target_layers(const models::AnyModel& model, const std::vector<std::string>& targets);

/// The layers of `model` that carry adapters, by module path.
std::vector<std::string> adapted_layers(const models::AnyModel& model);

/// Adds every adapter's update into its layer's weight and removes the adapters; quantized
/// layers with adapters become float. Parameters become trainable again.
void merge(models::AnyModel& model);

// ---------------------------------------------------------------- PEFT's format

/// The adapter options a saved adapter was trained with, and its base.
struct PeftConfig {
  AdapterOptions options;
  std::string base_model;                  // base_model_name_or_path
  std::vector<std::string> target_modules; // Hugging Face module names (q_proj, c_attn, ...)
};

/// True when `dir` holds adapter_config.json.
bool is_adapter_dir(const std::filesystem::path& dir);

/// Writes `model`'s adapters in PEFT's format into `dir` (created; files replaced atomically):
/// their rank, alpha, dropout and rsLoRA as the layers hold them; from `options` only what the
/// layers do not know (a qlora base's quantization). `base_model`: what adapter_config.json
/// names as the base (the directory the base came from). Returns the names of the files written.
std::vector<std::string> save_peft(const models::AnyModel& model, const std::filesystem::path& dir,
                                   const AdapterOptions& options, const std::string& base_model);

/// adapter_config.json of `dir`; lathe::Error naming the file and key for anything PEFT writes
/// that lathe does not compute the same way (DoRA, bias training, per-module ranks, ...).
PeftConfig read_peft_config(const std::filesystem::path& dir);

/// Gives `model` (the base, not yet adapted) the adapters saved in `dir` and their values, and
/// freezes the base. Throws lathe::Error naming the file for missing, unexpected or mis-shaped
/// tensors, or a module the model does not have.
void load_peft(models::AnyModel& model, const std::filesystem::path& dir);

/// Why the adapter saved in `dir` (a checkpoint of a run with adapters) cannot be continued with
/// `options` on the base `base` (an absolute path): every setting that differs, named by its
/// recipe key with both values (rank, alpha, rslora, kind and qlora's base quantization,
/// train.init_from); empty when it can.
std::string resume_problem(const std::filesystem::path& dir, const AdapterOptions& options, const std::string& base);

/// The base a saved adapter names (`base`: its directory or model file, read by
/// models::load_model; empty: adapter_config.json's base_model_name_or_path, relative to `dir`)
/// with the adapter loaded, then merged when `merged`.
models::AnyModel load_adapted(const std::filesystem::path& dir, bool merged, const std::filesystem::path& base = {});

/// models::load_model, or for an adapter directory (a LoRA run's checkpoint, a PEFT adapter)
/// its base with the adapter merged: what the stages after training read.
models::AnyModel load_model(const std::filesystem::path& path, std::optional<models::ModelKind> want = std::nullopt,
                            int64_t num_labels = 0, io::Read read = io::Read::Copy);

}  // namespace lathe::adapters

LATHE_ENUM_TABLE(lathe::adapters::AdapterKind, {lathe::adapters::AdapterKind::None, "none"},
                 {lathe::adapters::AdapterKind::Lora, "lora"}, {lathe::adapters::AdapterKind::Qlora, "qlora"});
