// The tokenizer.ggml.* metadata of a byte-level BPE tokenizer.json (private to export).
#pragma once

#include <cstdint>

#include "lathe/export/gguf.hpp"
#include "lathe/export/gguf_model.hpp"

namespace lathe::export_ {

/// Adds tokenizer.ggml.{model, pre, tokens, token_type, merges, bos/eos ids, add_bos_token,
/// add_eos_token} and tokenizer.chat_template from options.tokenizer_json and the
/// tokens options names, the token list padded to `rows` entries. Throws lathe::Error naming the
/// file for a tokenizer llama.cpp would read differently.
void add_vocab(GgufFile& f, const GgufOptions& options, int64_t rows);

}  // namespace lathe::export_
