// ONNX export of lathe's models, built per module (export/modules.hpp) and checked before it
// is written.
//
// GPT (Hugging Face Optimum / ONNX Runtime GenAI naming):
//   model.onnx                     input_ids (batch_size, sequence_length) int64,
//                                  attention_mask (batch_size, sequence_length) int64 (1 = real token),
//                                  position_ids (batch_size, sequence_length) int64
//                                  -> logits (batch_size, sequence_length, vocab) float32
//   decoder_with_past_model.onnx   the same, plus past_key_values.<i>.key / .value
//                                  (batch_size, kv_heads, past_sequence_length, head_dim) float32 for
//                                  every layer i, attention_mask covering past and new positions
//                                  (batch_size, total_sequence_length); -> logits and
//                                  present.<i>.key / .value (batch_size, kv_heads, total_sequence_length,
//                                  head_dim). past_sequence_length may be 0 (the prompt's step).
//   position_ids follow transformers: cumsum(attention_mask) - 1, with padding at 1. Learned
//   positions read them; rotary ones depend on their differences only.
// BERT:
//   model.onnx                     input_ids, attention_mask, token_type_ids (batch_size, sequence_length)
//                                  int64 -> logits (masked LM: (batch_size, sequence_length, vocab);
//                                  classifier: (batch_size, num_labels)) and last_hidden_state
//                                  (batch_size, sequence_length, d_model), the encoder's output.
//   bert_encoder (no head):        the same inputs -> last_hidden_state, pooler_output (batch_size,
//                                  d_model) where the checkpoint has a pooler, and with
//                                  OnnxOptions::pooling sentence_embedding (batch_size, d_model).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lathe/core/enum_table.hpp"
#include "lathe/models/store.hpp"

namespace onnx {
class ModelProto;
}

namespace lathe::export_ {

using lathe::operator<<;

/// How the GPT decoder-with-past graph computes attention: standard ONNX ops (MatMul, Softmax,
/// an additive mask; any runtime, left-padded batches), or one com.microsoft
/// GroupQueryAttention node per layer (ONNX Runtime only; rows whose real tokens come first, as
/// ONNX Runtime GenAI feeds them).
enum class OnnxAttention { Standard, GroupQuery };

/// A sentence embedding from an encoder's hidden states: none, the mean of the real tokens'
/// (sentence-transformers' mean pooling), or the first token's.
enum class Pooling { None, Mean, Cls };

struct OnnxOptions {
  /// Version of the default ONNX domain: 17 (LayerNormalization) up to the linked onnx
  /// library's newest (max_opset()).
  int64_t opset = 17;
  /// Batch and sequence dimensions symbolic; false fixes the batch at 1 (sequence dimensions
  /// stay symbolic: a decoder steps through lengths).
  bool dynamic_axes = true;
  /// Written as the model's metadata_props (with "lathe.kind" added, and for a classifier that
  /// knows its label names "id2label": a JSON object {"0": name, ...} as in config.json).
  std::map<std::string, std::string> metadata;
  /// bert_encoder: the sentence_embedding output, and whether it is L2-normalised (as
  /// sentence-transformers' Normalize module does).
  Pooling pooling = Pooling::None;
  bool normalize = false;
  /// GPT: the attention of decoder_with_past_model.onnx (model.onnx keeps standard ops).
  OnnxAttention attention = OnnxAttention::Standard;

  /// Every problem, each naming its field; empty when valid. The recipe's loader reports them
  /// under export.* (so `lathe recipe check` and `lathe run` refuse the same values).
  std::vector<models::OptionProblem> problems() const;
};

/// One checked graph and the file it goes to.
struct OnnxGraph {
  std::string file;  // "model.onnx", "decoder_with_past_model.onnx"
  std::shared_ptr<onnx::ModelProto> model;
};

struct OnnxExport {
  std::vector<OnnxGraph> graphs;
  /// What a user should know about the export (a layer's scheme written differently).
  std::vector<std::string> notes;
};

/// Builds and checks every graph of `model` (ONNX checker, shape inference). Throws
/// lathe::Error naming the unsupported part or the failed check; nothing is written.
OnnxExport export_onnx(const models::AnyModel& model, const OnnxOptions& options);

/// Writes the graphs into `dir`, each file atomically (and its .data first when the weights
/// go to external data; a .data file of an earlier export that is no longer needed is
/// removed). Every file is claimed first (io::claim): a file lathe did not write is never
/// overwritten. Returns the files written.
/// Models whose weights take more than `external_data_bytes` keep them in <file>.data beside
/// the .onnx file (protobuf cannot serialise messages over 2 GiB).
std::vector<std::filesystem::path> write_onnx(const OnnxExport& exported, const std::filesystem::path& dir,
                                              int64_t external_data_bytes = int64_t{2} * 1000 * 1000 * 1000);

}  // namespace lathe::export_

LATHE_ENUM_TABLE(lathe::export_::Pooling, {lathe::export_::Pooling::None, "none"},
                 {lathe::export_::Pooling::Mean, "mean"}, {lathe::export_::Pooling::Cls, "cls"});

LATHE_ENUM_TABLE(lathe::export_::OnnxAttention, {lathe::export_::OnnxAttention::Standard, "standard"},
                 {lathe::export_::OnnxAttention::GroupQuery, "group_query"});
