// Options of the tiny models the tests build (2 layers, 4 heads, width 32).
#pragma once

#include <string>

#include "lathe/models/options.hpp"

namespace lathe::test {

/// family gpt: GPT-2-style; llama: rotary positions, RMSNorm, SwiGLU (d_ff 48), no biases,
/// 2 key/value heads, untied head; bert: BERT's defaults. All without dropout, 16 positions,
/// 64 tokens.
inline models::ModelOptions tiny(const std::string& family) {
  models::ModelOptions o = family == "bert" ? models::ModelOptions::bert_defaults() : models::ModelOptions{};
  o.n_layer = 2;
  o.n_head = 4;
  o.d_model = 32;
  o.max_seq_len = 16;
  o.vocab_size = 64;
  o.dropout = o.attn_dropout = 0.0;
  if (family == "llama") {
    o.position = nn::Position::Rope;
    o.norm = nn::NormKind::RmsNorm;
    o.activation = nn::Activation::SwiGlu;
    o.bias = false;
    o.n_kv_head = 2;
    o.d_ff = 48;
    o.tie_embeddings = false;
  }
  return o;
}

}  // namespace lathe::test
