// How a model is written in Hugging Face layout (models::save_hf).
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

namespace lathe::models {

struct HfWriteOptions {
  /// The model_type a GPT is written as where that family holds its options (a fine-tuned Phi-3
  /// stays Phi-3). Empty: the family the model was read as (Gpt::hf_family), else the first
  /// family that holds it. BERT models ignore it.
  std::string family;
  /// Storage dtype of the tensors: float32, bfloat16 or float16 (config.json's dtype says it).
  at::ScalarType dtype = at::kFloat;
  /// A model whose tensors take more bytes is written as model-0000k-of-0000n.safetensors shards
  /// of at most this many bytes each (tensors in order; a larger tensor alone in its shard) and
  /// model.safetensors.index.json, the layout of transformers' save_pretrained(max_shard_size=...)
  /// (which may pack the tensors into fewer shards); 0: one model.safetensors whatever its size.
  int64_t max_shard_bytes = 0;
};

}  // namespace lathe::models
