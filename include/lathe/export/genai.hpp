// ONNX Runtime GenAI's genai_config.json for a GPT exported as ONNX (export/onnx.hpp): the
// decoder-with-past graph runs the prompt (an empty cache) and every decode step, its inputs and
// outputs under the Optimum names, the cache growing by concatenation (past_present_share_buffer
// false). With the tokenizer files beside it, onnxruntime_genai.Model(<dir>) loads the folder.
#pragma once

#include <cstdint>
#include <string>

#include "lathe/models/store.hpp"

namespace lathe::export_ {

struct GenAiOptions {
  int64_t bos_id = -1;  // the token a prompt may start with; -1: eos_id
  int64_t eos_id = -1;  // end of text: generation stops there
  int64_t pad_id = -1;  // -1: eos_id
  std::string decoder_file = "decoder_with_past_model.onnx";
};

/// genai_config.json's text for `model` (a GPT; lathe::Error otherwise). Greedy search by default,
/// max_length the model's context.
std::string genai_config(const models::AnyModel& model, const GenAiOptions& options);

}  // namespace lathe::export_
