// Sequence-classification data (text or text pair + label) from CSV, TSV or JSONL, and the
// sentence pairs BERT pre-training reads.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lathe/data/collate.hpp"
#include "lathe/tokenizer/wordpiece.hpp"

namespace lathe::data {

struct Example {
  std::string text;
  std::string text_pair;  // empty for single-text tasks
  std::string label;
  int line = 0;           // where it came from, for messages
};

/// Reads examples. CSV (RFC 4180: quotes, doubled quotes, newlines inside quotes) and TSV take
/// field names from their header row; JSONL from each object. Throws lathe::Error naming the
/// file and line of a missing field or malformed row.
std::vector<Example> read_examples(const std::filesystem::path& path, const std::string& text_field,
                                   const std::string& text_pair_field, const std::string& label_field);

/// Labels <-> class ids: sorted label names, so the map does not depend on file order.
class LabelMap {
 public:
  LabelMap() = default;
  explicit LabelMap(const std::vector<Example>& examples);
  int32_t id(const Example& e, const std::filesystem::path& file) const;  // throws for an unknown label
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<std::string> names_;
  std::map<std::string, int32_t> ids_;
};

struct ClassificationBatch {
  PaddedBatch inputs;
  at::Tensor labels;  // (B) int64
};

/// [CLS] text [SEP] (pair [SEP]) truncated to max_len (longest text first), padded to the
/// longest in the batch. `pair`: the task has a second text (data.text_pair_field is set), so
/// every row carries its second segment, even an empty one ([CLS] a [SEP] [SEP], type ids 0 then 1).
ClassificationBatch collate_examples(const std::vector<Example>& batch, const tokenizer::WordPiece& tok,
                                     const LabelMap& labels, int64_t max_len, const std::filesystem::path& file,
                                     int32_t pad_id, bool pair);

}  // namespace lathe::data
