// Text continuation with a GPT: greedy or sampled (temperature, top-k, top-p), with a KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lathe/models/gpt.hpp"

namespace lathe::models {

struct SamplingOptions {
  int64_t max_new_tokens = 64;       // tokens generated at most
  double temperature = 0.8;          // softmax temperature; 0: greedy (argmax)
  int64_t top_k = 50;                // keep the k most likely tokens; 0: all
  double top_p = 1.0;                // keep the smallest set with this much probability; 1: all
  uint64_t seed = 1337;              // seed of the sampling stream (the same seed, the same text)
  std::vector<int64_t> stop_tokens;  // ids that end generation (not included in the output)
  bool use_cache = true;             // false: recompute every position each step (for checking the cache)
  /// Only ids below this are sampled: a model whose embedding was padded past the tokenizer's
  /// vocabulary (model.vocab_size) never emits an id the tokenizer cannot decode. 0: all rows.
  int64_t vocab_limit = 0;

  /// Throws std::invalid_argument naming the bad field.
  void validate() const;
};

struct Generation {
  std::vector<int64_t> tokens;  // new tokens only
  /// length (max_new_tokens reached), stop_token, callback (on_token returned false) or
  /// context (the model's max_seq_len is full)
  std::string finish_reason;
};

/// Continues `prompt` (at least one token). `on_token` sees each new token as it is chosen and
/// may end generation by returning false (the token is kept). Runs in eval mode without
/// gradients; the model's training flag is restored afterwards.
Generation generate(Gpt& model, const std::vector<int64_t>& prompt, const SamplingOptions& options,
                    const std::function<bool(int64_t)>& on_token = {});

/// Continues several prompts in one batch: left-padded into one (B, longest) input with a
/// shared KV cache, one forward per step for all of them. Row b samples from its own stream
/// seeded options.seed + b, so it gives the tokens generate() gives its prompt with that seed,
/// "context" included: a row ends when its own prompt and tokens fill max_seq_len, never
/// because a longer row did. `on_token` sees (row, token) as each is chosen and may end that
/// row by returning false.
std::vector<Generation> generate_batch(Gpt& model, const std::vector<std::vector<int64_t>>& prompts,
                                       const SamplingOptions& options,
                                       const std::function<bool(std::size_t, int64_t)>& on_token = {});

}  // namespace lathe::models
