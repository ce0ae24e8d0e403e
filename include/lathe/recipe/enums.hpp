// Enumerations used by recipes, each with the one table that maps it to and from its YAML
// spelling. `enum_name(x)` gives the spelling, `parse_enum<E>(s)` reads it back.
#pragma once

#include <array>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace lathe::recipe {

/// A stage of `lathe run`, in the order a recipe's `pipeline:` lists them.
enum class Stage { Tokenizer, Data, Train, Eval, Generate, Prune, Quantize, Export };
enum class Device { Auto, Cpu, Cuda };
enum class TokenizerType { ByteBpe, WordPiece };
enum class DataFormat { Auto, Text, Jsonl };
enum class Sampler { Random, Sequential };
enum class Arch { Gpt, Bert };
enum class Norm { LayerNorm, RmsNorm };
enum class Activation { GeluTanh, Gelu, SwiGlu };
enum class Position { Learned, Rope };
enum class Optimizer { AdamW, Sgd };
enum class Schedule { Constant, Cosine, Linear, Wsd };
enum class Task { CausalLm, MaskedLm, Classification };
enum class Precision { Fp32, Bf16, Fp16 };
enum class NanPolicy { Error, Skip };
enum class Backend { Auto, Nccl, Mpi, None };
enum class PruneMethod { Magnitude, Heads, Neurons, NM };
enum class QuantMethod { Int8Dynamic, Int8WeightOnly, Int4WeightOnly };
enum class ExportFormat { Onnx, Hf, Both };
enum class ExportSource { Checkpoint, Pruned, Quantized };
enum class Split { Val, Train };

/// Spelling table of an enum; one specialisation per enum below.
template <class E>
struct EnumTable;

#define LATHE_ENUM_TABLE(E, ...)                                     \
  template <>                                                        \
  struct EnumTable<E> {                                              \
    static constexpr auto values = std::to_array<std::pair<E, std::string_view>>({__VA_ARGS__}); \
  }

LATHE_ENUM_TABLE(Stage, {Stage::Tokenizer, "tokenizer"}, {Stage::Data, "data"}, {Stage::Train, "train"},
                 {Stage::Eval, "eval"}, {Stage::Generate, "generate"}, {Stage::Prune, "prune"},
                 {Stage::Quantize, "quantize"}, {Stage::Export, "export"});
LATHE_ENUM_TABLE(Device, {Device::Auto, "auto"}, {Device::Cpu, "cpu"}, {Device::Cuda, "cuda"});
LATHE_ENUM_TABLE(TokenizerType, {TokenizerType::ByteBpe, "byte_bpe"}, {TokenizerType::WordPiece, "wordpiece"});
LATHE_ENUM_TABLE(DataFormat, {DataFormat::Auto, "auto"}, {DataFormat::Text, "text"}, {DataFormat::Jsonl, "jsonl"});
LATHE_ENUM_TABLE(Sampler, {Sampler::Random, "random"}, {Sampler::Sequential, "sequential"});
LATHE_ENUM_TABLE(Arch, {Arch::Gpt, "gpt"}, {Arch::Bert, "bert"});
LATHE_ENUM_TABLE(Norm, {Norm::LayerNorm, "layernorm"}, {Norm::RmsNorm, "rmsnorm"});
LATHE_ENUM_TABLE(Activation, {Activation::GeluTanh, "gelu_tanh"}, {Activation::Gelu, "gelu"},
                 {Activation::SwiGlu, "swiglu"});
LATHE_ENUM_TABLE(Position, {Position::Learned, "learned"}, {Position::Rope, "rope"});
LATHE_ENUM_TABLE(Optimizer, {Optimizer::AdamW, "adamw"}, {Optimizer::Sgd, "sgd"});
LATHE_ENUM_TABLE(Schedule, {Schedule::Constant, "constant"}, {Schedule::Cosine, "cosine"},
                 {Schedule::Linear, "linear"}, {Schedule::Wsd, "wsd"});
LATHE_ENUM_TABLE(Task, {Task::CausalLm, "causal_lm"}, {Task::MaskedLm, "masked_lm"},
                 {Task::Classification, "classification"});
LATHE_ENUM_TABLE(Precision, {Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"}, {Precision::Fp16, "fp16"});
LATHE_ENUM_TABLE(NanPolicy, {NanPolicy::Error, "error"}, {NanPolicy::Skip, "skip"});
LATHE_ENUM_TABLE(Backend, {Backend::Auto, "auto"}, {Backend::Nccl, "nccl"}, {Backend::Mpi, "mpi"},
                 {Backend::None, "none"});
LATHE_ENUM_TABLE(PruneMethod, {PruneMethod::Magnitude, "magnitude"}, {PruneMethod::Heads, "heads"},
                 {PruneMethod::Neurons, "neurons"}, {PruneMethod::NM, "n_m"});
LATHE_ENUM_TABLE(QuantMethod, {QuantMethod::Int8Dynamic, "int8_dynamic"},
                 {QuantMethod::Int8WeightOnly, "int8_weight_only"}, {QuantMethod::Int4WeightOnly, "int4_weight_only"});
LATHE_ENUM_TABLE(ExportFormat, {ExportFormat::Onnx, "onnx"}, {ExportFormat::Hf, "hf"}, {ExportFormat::Both, "both"});
LATHE_ENUM_TABLE(ExportSource, {ExportSource::Checkpoint, "checkpoint"}, {ExportSource::Pruned, "pruned"},
                 {ExportSource::Quantized, "quantized"});
LATHE_ENUM_TABLE(Split, {Split::Val, "val"}, {Split::Train, "train"});

#undef LATHE_ENUM_TABLE

template <class E>
concept RecipeEnum = requires { EnumTable<E>::values; };

template <RecipeEnum E>
constexpr std::string_view enum_name(E value) {
  for (const auto& [v, name] : EnumTable<E>::values)
    if (v == value) return name;
  return "?";
}

template <RecipeEnum E>
constexpr std::optional<E> parse_enum(std::string_view text) {
  for (const auto& [v, name] : EnumTable<E>::values)
    if (name == text) return v;
  return std::nullopt;
}

/// "a|b|c": the spellings of E, for messages and the key reference.
template <RecipeEnum E>
std::string enum_choices(std::string_view sep = "|") {
  std::string out;
  for (const auto& [v, name] : EnumTable<E>::values) {
    if (!out.empty()) out += sep;
    out += name;
  }
  return out;
}

template <RecipeEnum E>
std::ostream& operator<<(std::ostream& os, E value) {
  return os << enum_name(value);
}

}  // namespace lathe::recipe
