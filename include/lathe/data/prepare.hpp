// `lathe data prepare`: corpus files -> tokenized train/val shards + shards/index.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::data {

using io::InputFormat;

struct PrepareOptions {
  std::vector<std::filesystem::path> train_files;
  std::vector<std::filesystem::path> val_files;  // empty: val_fraction of the training documents
  double val_fraction = 0.05;
  InputFormat format = InputFormat::Auto;
  std::string jsonl_field = "text";
  std::filesystem::path shard_dir;
  uint64_t shard_tokens = 100'000'000;  // tokens per shard file
  uint64_t seed = 1337;                 // decides which documents go to validation
  int threads = 0;                      // tokenization threads; 0: all hardware threads
  std::function<void(const std::string&, int64_t, int64_t)> progress;
  /// Written into index.json as "made_from": what the shards were made from (the data stage's
  /// record of its inputs), compared before the stage is skipped.
  nlohmann::json made_from;
};

struct PrepareReport {
  std::vector<std::filesystem::path> train_shards, val_shards;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint64_t train_documents = 0, val_documents = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  std::vector<std::filesystem::path> removed;  // an earlier prepare's shards and index, removed first
};

/// True for the names prepare_shards writes: train_NNNNNN.bin, val_NNNNNN.bin (and .partial).
bool is_shard_name(const std::string& name);

/// Tokenizes the documents (end-of-text token after each), writes train_NNNNNN.bin and
/// val_NNNNNN.bin shards and, last, index.json (what the shards hold and which tokenizer wrote
/// them). The end-of-text token is the tokenizer's eos_id(). Files of shard_dir that lathe did
/// not write are never touched: one with a shard's name (or index.json) stops it with an error
/// naming the file before anything is written; an earlier prepare's shards are replaced.
PrepareReport prepare_shards(const tokenizer::Tokenizer& tok, const PrepareOptions& options);

/// The shards listed by <shard_dir>/index.json for a split ("train" or "val"), checked against
/// the tokenizer. Throws lathe::Error naming the file when the index or a shard is unusable.
std::vector<std::filesystem::path> indexed_shards(const std::filesystem::path& shard_dir, const std::string& split,
                                                  const tokenizer::Tokenizer& tok);

}  // namespace lathe::data
