// Enumerations used by recipes, each with the one table that maps it to and from its YAML
// spelling (lathe/core/enum_table.hpp). The choices of layers and models are declared where
// they belong (nn, models) and named here too, so recipe code spells them recipe::Norm etc.
#pragma once

#include <c10/core/ScalarType.h>

#include "lathe/core/enum_table.hpp"
#include "lathe/dist/options.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/models/options.hpp"
#include "lathe/nn/enums.hpp"

namespace lathe::recipe {

using lathe::operator<<;

using lathe::enum_choices;
using lathe::enum_name;
using lathe::EnumTable;
using lathe::parse_enum;
using lathe::SpelledEnum;
using models::Arch;
using nn::Activation;
using Norm = nn::NormKind;
using nn::Position;

/// A stage of `lathe run`, in the order a recipe's `pipeline:` lists them.
enum class Stage { Tokenizer, Data, Train, Eval, Generate, Prune, Quantize, Export };
enum class Device { Auto, Cpu, Cuda };
enum class TokenizerType { Bpe, WordPiece };
using DataFormat = io::InputFormat;
enum class Sampler { Random, Sequential };
enum class Optimizer { AdamW, Sgd };
enum class Schedule { Constant, Cosine, Linear, Wsd };
enum class Task { CausalLm, MaskedLm, Classification, Sft, Dpo };
/// Tasks that read their examples from data.train_files themselves (no token shards).
constexpr bool reads_example_files(Task t) { return t == Task::Classification || t == Task::Sft || t == Task::Dpo; }
/// The tasks whose examples are rendered with a chat template where they are conversations.
constexpr bool renders_chats(Task t) { return t == Task::Sft || t == Task::Dpo; }
/// sft: which tokens the loss is taken on (the others are context only).
enum class LossOn { Assistant, All, Completion };
enum class Precision { Fp32, Bf16, Fp16 };
/// The tensor dtype of a precision (training: autocast's; generation: the weights').
constexpr at::ScalarType scalar_type(Precision p) {
  return p == Precision::Bf16 ? at::kBFloat16 : p == Precision::Fp16 ? at::kHalf : at::kFloat;
}
enum class NanPolicy { Error, Skip };
using dist::Backend;
/// What the export stage writes; both: onnx and hf (a list names any set of them).
enum class ExportFormat { Onnx, Hf, Gguf, Both };
/// The ggml type of a GGUF export's weight matrices; auto: the closest type of each quantized
/// layer's scheme, and the float matrices as hf_dtype says.
enum class GgufType { Auto, F32, F16, BF16, Q8_0, Q4_0, Q4_1 };
/// A BERT encoder's sentence embedding in the export; auto: the sentence-transformers pooling of
/// the Hugging Face directory the model came from (1_Pooling/config.json), else none.
enum class Pooling { Auto, None, Mean, Cls };
/// The attention of a GPT's decoder_with_past_model.onnx: standard ONNX ops, or ONNX Runtime's
/// fused com.microsoft GroupQueryAttention.
enum class OnnxAttention { Standard, GroupQuery };
/// The storage dtype of an exported Hugging Face directory; auto: that of the Hugging Face
/// directory the model came from (export.checkpoint, else train.init_from), float32 otherwise.
enum class HfDtype { Auto, Float32, BFloat16, Float16 };
/// Which model a stage reads. auto: what the nearest earlier model stage of the pipeline makes
/// (quantize: the quantized model, prune: the pruned one), else the trained checkpoint.
enum class ModelSource { Auto, Checkpoint, Pruned, Quantized };
enum class Split { Val, Train };

}  // namespace lathe::recipe

LATHE_ENUM_TABLE(lathe::recipe::Stage, {lathe::recipe::Stage::Tokenizer, "tokenizer"}, {lathe::recipe::Stage::Data, "data"}, {lathe::recipe::Stage::Train, "train"},
                 {lathe::recipe::Stage::Eval, "eval"}, {lathe::recipe::Stage::Generate, "generate"}, {lathe::recipe::Stage::Prune, "prune"},
                 {lathe::recipe::Stage::Quantize, "quantize"}, {lathe::recipe::Stage::Export, "export"});
LATHE_ENUM_TABLE(lathe::recipe::Device, {lathe::recipe::Device::Auto, "auto"}, {lathe::recipe::Device::Cpu, "cpu"}, {lathe::recipe::Device::Cuda, "cuda"});
LATHE_ENUM_TABLE(lathe::recipe::TokenizerType, {lathe::recipe::TokenizerType::Bpe, "byte_bpe"}, {lathe::recipe::TokenizerType::WordPiece, "wordpiece"});
LATHE_ENUM_TABLE(lathe::recipe::Sampler, {lathe::recipe::Sampler::Random, "random"}, {lathe::recipe::Sampler::Sequential, "sequential"});
LATHE_ENUM_TABLE(lathe::recipe::Optimizer, {lathe::recipe::Optimizer::AdamW, "adamw"}, {lathe::recipe::Optimizer::Sgd, "sgd"});
LATHE_ENUM_TABLE(lathe::recipe::Schedule, {lathe::recipe::Schedule::Constant, "constant"}, {lathe::recipe::Schedule::Cosine, "cosine"},
                 {lathe::recipe::Schedule::Linear, "linear"}, {lathe::recipe::Schedule::Wsd, "wsd"});
LATHE_ENUM_TABLE(lathe::recipe::Task, {lathe::recipe::Task::CausalLm, "causal_lm"}, {lathe::recipe::Task::MaskedLm, "masked_lm"},
                 {lathe::recipe::Task::Classification, "classification"}, {lathe::recipe::Task::Sft, "sft"},
                 {lathe::recipe::Task::Dpo, "dpo"});
LATHE_ENUM_TABLE(lathe::recipe::LossOn, {lathe::recipe::LossOn::Assistant, "assistant"}, {lathe::recipe::LossOn::All, "all"},
                 {lathe::recipe::LossOn::Completion, "completion"});
LATHE_ENUM_TABLE(lathe::recipe::Precision, {lathe::recipe::Precision::Fp32, "fp32"}, {lathe::recipe::Precision::Bf16, "bf16"}, {lathe::recipe::Precision::Fp16, "fp16"});
LATHE_ENUM_TABLE(lathe::recipe::NanPolicy, {lathe::recipe::NanPolicy::Error, "error"}, {lathe::recipe::NanPolicy::Skip, "skip"});
LATHE_ENUM_TABLE(lathe::recipe::ExportFormat, {lathe::recipe::ExportFormat::Onnx, "onnx"}, {lathe::recipe::ExportFormat::Hf, "hf"}, {lathe::recipe::ExportFormat::Gguf, "gguf"}, {lathe::recipe::ExportFormat::Both, "both"});
LATHE_ENUM_TABLE(lathe::recipe::Pooling, {lathe::recipe::Pooling::Auto, "auto"}, {lathe::recipe::Pooling::None, "none"},
                 {lathe::recipe::Pooling::Mean, "mean"}, {lathe::recipe::Pooling::Cls, "cls"});
LATHE_ENUM_TABLE(lathe::recipe::OnnxAttention, {lathe::recipe::OnnxAttention::Standard, "standard"},
                 {lathe::recipe::OnnxAttention::GroupQuery, "group_query"});
LATHE_ENUM_TABLE(lathe::recipe::GgufType, {lathe::recipe::GgufType::Auto, "auto"}, {lathe::recipe::GgufType::F32, "f32"},
                 {lathe::recipe::GgufType::F16, "f16"}, {lathe::recipe::GgufType::BF16, "bf16"},
                 {lathe::recipe::GgufType::Q8_0, "q8_0"}, {lathe::recipe::GgufType::Q4_0, "q4_0"},
                 {lathe::recipe::GgufType::Q4_1, "q4_1"});
LATHE_ENUM_TABLE(lathe::recipe::HfDtype, {lathe::recipe::HfDtype::Auto, "auto"},
                 {lathe::recipe::HfDtype::Float32, "float32"}, {lathe::recipe::HfDtype::BFloat16, "bfloat16"},
                 {lathe::recipe::HfDtype::Float16, "float16"});
LATHE_ENUM_TABLE(lathe::recipe::ModelSource, {lathe::recipe::ModelSource::Auto, "auto"},
                 {lathe::recipe::ModelSource::Checkpoint, "checkpoint"}, {lathe::recipe::ModelSource::Pruned, "pruned"},
                 {lathe::recipe::ModelSource::Quantized, "quantized"});
LATHE_ENUM_TABLE(lathe::recipe::Split, {lathe::recipe::Split::Val, "val"}, {lathe::recipe::Split::Train, "train"});
