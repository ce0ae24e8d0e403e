// Turning token sequences into training batches: causal-LM windows, masked-LM batches with
// 80/10/10 masking (optionally whole words), and padded batches with attention masks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lathe::data {

/// Causal LM: rows of seq_len + 1 tokens -> input (B, T) and target (B, T), int64.
struct LmBatch {
  at::Tensor input;   // (B, T)
  at::Tensor target;  // (B, T), input shifted by one
};
LmBatch make_lm_batch(const std::vector<int32_t>& rows, int64_t batch_size, int64_t seq_len);

/// Sequences padded to the longest in the batch (dynamic padding).
struct PaddedBatch {
  at::Tensor input_ids;       // (B, T) int64, pad_id past each sequence's end
  at::Tensor attention_mask;  // (B, T) int64, 1 for real tokens
  at::Tensor token_type_ids;  // (B, T) int64, 0 where not given
};
PaddedBatch pad_batch(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id,
                      const std::vector<std::vector<int32_t>>* type_ids = nullptr);

struct MlmOptions {
  double probability = 0.15;        // share of (non-special) tokens selected for prediction
  int32_t mask_id = -1;             // [MASK]
  int32_t vocab_size = 0;           // random replacements are drawn from [0, vocab_size) minus specials
  std::vector<int32_t> special_ids; // never selected ([CLS], [SEP], [PAD], ...)
  std::vector<bool> continuation;   // whole-word masking: continuation[id] is true for "##" pieces; empty: off
  uint64_t seed = 1337;
};

/// Masked LM: padded inputs with selected tokens replaced (80% [MASK], 10% a random token,
/// 10% unchanged) and labels holding the original id at selected positions, -100 elsewhere.
struct MlmBatch {
  PaddedBatch inputs;
  at::Tensor labels;  // (B, T) int64
};

class MlmCollator {
 public:
  explicit MlmCollator(MlmOptions options);
  /// `step` and the global row (`first_row` + the row's index) key the random draws, so the
  /// same row of the same step masks the same way (resume, any number of ranks).
  MlmBatch operator()(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id, uint64_t step,
                      const std::vector<std::vector<int32_t>>* type_ids = nullptr, uint64_t first_row = 0) const;

 private:
  MlmOptions o_;
  std::vector<bool> special_;
  std::vector<int32_t> replaceable_;  // ids a random replacement may take
};

}  // namespace lathe::data
