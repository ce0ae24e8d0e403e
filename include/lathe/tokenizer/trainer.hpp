// Training tokenizers from text, the way Hugging Face's trainers do. Byte-level BPE: words
// counted after GPT-2 (or cl100k / o200k / a regex's) pre-tokenization, the 256 byte symbols as the alphabet, then the most
// frequent adjacent pair merged until the vocabulary is full (ties: the smaller pair of ids).
// WordPiece: the same merges over BERT-normalised words, continuation symbols spelled "##x".
// Counting runs on several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "lathe/tokenizer/wordpiece.hpp"

namespace lathe::tokenizer {

using TrainProgress = std::function<void(const std::string&, int64_t, int64_t)>;

struct BpeTrainerOptions {
  int64_t vocab_size = 8192;                              // final size, special tokens included
  int64_t min_frequency = 2;                              // pairs seen fewer times are not merged
  std::vector<std::string> special_tokens = {"<|endoftext|>"};  // ids 0.. in this order
  /// How words are split before counting: "gpt2", "cl100k", "o200k" or a regex (Oniguruma
  /// syntax); the trained tokenizer's pipeline splits the same way (pipeline_for_pre_tokenizer).
  std::string pre_tokenizer = "gpt2";
  int threads = 0;                                        // counting threads; 0: all hardware threads
  io::InputFormat format = io::InputFormat::Auto;         // how the files are read (io::read_documents)
  std::string jsonl_field = "text";                       // field read from JSONL lines
  /// Called now and then with (stage, done, total), e.g. ("merges", 1200, 7900).
  TrainProgress progress;
};

/// Trains on the texts of `files` (io::read_texts with `format` and `jsonl_field`: the lines
/// of text files, newline kept, as Hugging Face's trainers read them; the records of JSONL
/// files). Throws lathe::Error for an unreadable file or an empty
/// corpus, naming the files.
Bpe train_byte_bpe(const std::vector<std::filesystem::path>& files, const BpeTrainerOptions& options);

/// Same, on texts already in memory.
Bpe train_byte_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options);

struct WordPieceTrainerOptions {
  int64_t vocab_size = 30522;
  int64_t min_frequency = 2;
  std::vector<std::string> special_tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};  // ids 0..
  WordPieceOptions wordpiece;  // normaliser settings, unknown token and prefix of the result
  int threads = 0;
  io::InputFormat format = io::InputFormat::Auto;
  std::string jsonl_field = "text";
  TrainProgress progress;
};

/// Trains a WordPiece vocabulary (inputs as for train_byte_bpe). The unknown token must be
/// among the special tokens.
WordPiece train_wordpiece(const std::vector<std::filesystem::path>& files, const WordPieceTrainerOptions& options);
WordPiece train_wordpiece(const std::vector<std::string>& texts, const WordPieceTrainerOptions& options);


struct MergeOptions {
  int64_t vocab_size = 0;     // stop when the vocabulary has this many tokens
  int64_t min_frequency = 0;  // or when the best pair is rarer than this
  std::string prefix;         // continuation prefix removed from the right part ("##")
  TrainProgress progress;
};

/// The merge loop both trainers share: appends merged tokens to `tokens` and returns the merges
/// (pairs of ids) in order. `words` are symbol ids with their frequencies `freq`.
std::vector<std::pair<int32_t, int32_t>> learn_merges(std::vector<std::string>& tokens,
                                                      std::vector<std::vector<int32_t>> words,
                                                      const std::vector<int64_t>& freq, const MergeOptions& options);

}  // namespace lathe::tokenizer
