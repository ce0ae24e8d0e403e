// How a model is written in Hugging Face layout (models::save_hf), and how its tensors are named there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

/// How the Hugging Face family that save_hf writes a model as names its tensors.
struct HfTensorName {
  std::string ours;                 // lathe's name ("blocks.0.attn.qkv.weight")
  std::vector<std::string> theirs;  // the family's tensors it is made of, in row order
  std::vector<int64_t> rows;        // the rows of each (one tensor: all of ours)
};
struct HfNaming {
  std::string model_type;             // config.json's model_type ("llama")
  bool transposed_linears = false;    // the family stores Linear weights (in, out) (GPT-2's Conv1D)
  std::vector<HfTensorName> tensors;  // in the family's table order
};
}  // namespace lathe::models
