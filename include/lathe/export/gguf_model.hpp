// A GPT as llama.cpp reads it: a GGUF file (export/gguf.hpp) with the architecture's metadata,
// the tensors under llama.cpp's names and the tokenizer as tokenizer.ggml.*.
//
// The model is written as the Hugging Face family save_hf would write it (models/hf.hpp), and
// each family as llama.cpp's convert_hf_to_gguf.py converts it:
//   gpt2              -> architecture gpt2   (fused attn_qkv, learned position_embd)
//   llama, mistral    -> architecture llama  (q / k rows permuted to llama.cpp's rope layout;
//                                             llama.cpp applies no sliding window)
//   qwen2             -> architecture qwen2  (NeoX rope: q / k as they are)
// Other families are refused by name. Tensor shapes are torch's (out, in); GGUF lists them
// innermost first.
//
// Tensor types: 1-D tensors (norms, biases) and GPT-2's position table are F32. Weight matrices are `type` when given; a
// quantized type whose block does not tile a row falls back to F16 (as convert_hf_to_gguf.py
// does), with a note. Without `type`, a quantized layer is written in the closest ggml type of
// its scheme (int8 -> Q8_0, int4 -> Q4_1: asymmetric groups) and the other matrices in
// `float_type`; the conversion error of every quantized tensor is measured against the weight
// it stands for and the largest is reported in the notes.
//
// The tokenizer comes from its tokenizer.json: a byte-level BPE (tokenizer.ggml.model "gpt2")
// whose pre-tokenizer llama.cpp knows (gpt-2, llama-bpe, qwen2, gpt-4o); the token list is
// padded to the embedding's rows with [PAD<i>] (unused) tokens.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lathe/export/gguf.hpp"
#include "lathe/models/store.hpp"

namespace lathe::export_ {

struct GgufOptions {
  /// Type of every weight matrix; nullopt: as the model holds them (see above).
  std::optional<GgmlType> type;
  /// Type of the float matrices when `type` is not given: F32, F16 or BF16.
  GgmlType float_type = GgmlType::F32;
  /// general.name.
  std::string name = "lathe";
  /// The model's tokenizer (a BPE tokenizer.json).
  std::filesystem::path tokenizer_json;
  /// Its end-of-text token's id (tokenizer.ggml.eos_token_id), and the token a prompt may start
  /// with (bos_token_id; empty: the one the post-processor puts first, else end-of-text, as
  /// GPT-2 has it).
  int32_t eos_id = -1;
  std::string bos_token;
  /// tokenizer.chat_template; empty: none.
  std::string chat_template;
};

struct GgufExport {
  GgufFile file;
  std::string arch;                // general.architecture
  GgmlType type = GgmlType::F32;   // what general.file_type says
  std::vector<std::string> notes;  // conversion errors, fallbacks, differences llama.cpp has
};

/// Builds the GGUF file of a GPT (quantized layers are read, never changed). Throws lathe::Error
/// naming what llama.cpp cannot hold (a family, a rope scaling, a tokenizer kind) before any
/// tensor is converted.
GgufExport export_gguf(const models::AnyModel& model, const GgufOptions& options);

/// What export_gguf checks before it converts a tensor (the family, the rope, the tokenizer),
/// without converting any: run before other files are written.
void check_gguf(const models::AnyModel& model, const GgufOptions& options);

/// The file's name in an export directory: model-<TYPE>.gguf (model-Q8_0.gguf).
std::string gguf_file_name(GgmlType type);

}  // namespace lathe::export_
