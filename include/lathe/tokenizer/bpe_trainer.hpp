// Training a byte-level BPE vocabulary from text, the way Hugging Face's BpeTrainer does:
// words counted after GPT-2 pre-tokenization, the 256 byte symbols as the alphabet, then the
// most frequent adjacent pair merged until the vocabulary is full (ties: the smaller pair of
// ids). Counting runs on several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "lathe/tokenizer/byte_bpe.hpp"

namespace lathe::tokenizer {

struct BpeTrainerOptions {
  int64_t vocab_size = 8192;                              // final size, special tokens included
  int64_t min_frequency = 2;                              // pairs seen fewer times are not merged
  std::vector<std::string> special_tokens = {"<|endoftext|>"};  // ids 0.. in this order
  int threads = 0;                                        // counting threads; 0: all hardware threads
  std::string jsonl_field = "text";                       // field read from .jsonl / .json lines
  /// Called now and then with (stage, done, total), e.g. ("merges", 1200, 7900).
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

/// Trains on text files (one sequence per line, newline included) and JSONL files (one
/// document per line, `jsonl_field`). Throws lathe::Error for an unreadable file or an empty
/// corpus, naming the files.
ByteBpe train_byte_bpe(const std::vector<std::filesystem::path>& files, const BpeTrainerOptions& options);

/// Same, on texts already in memory.
ByteBpe train_byte_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options);

}  // namespace lathe::tokenizer
