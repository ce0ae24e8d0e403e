// The interface every lathe tokenizer implements, and loading one from disk.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lathe/core/hash.hpp"

namespace lathe::tokenizer {

/// Byte offsets [first, second) of a token in the encoded text.
using Offset = std::pair<std::size_t, std::size_t>;

/// Ids with the tokenizer's special tokens added ([CLS] A [SEP] (B [SEP]), <|begin_of_text|> A,
/// ...) and their token type ids.
struct PairEncoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text` (no special tokens added). `offsets`, when given, receives each
  /// token's byte span in `text`.
  virtual std::vector<int32_t> encode(std::string_view text, std::vector<Offset>* offsets = nullptr) const = 0;
  /// encode() with the special tokens the tokenizer's post-processor adds, for one text or
  /// (`pair`) two; as Hugging Face's encode(..., add_special_tokens=True).
  virtual PairEncoding encode_with_specials(std::string_view first, std::string_view second = {},
                                            bool pair = false) const = 0;
  /// Text of `ids`; special tokens are written as their content.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  /// Number of ids (the largest id + 1).
  virtual int32_t vocab_size() const = 0;
  /// Id of a token as spelled in the vocabulary, or -1.
  virtual int32_t token_to_id(std::string_view token) const = 0;
  /// Writes a Hugging Face tokenizer.json that `tokenizers.Tokenizer.from_file` loads.
  virtual void save(const std::filesystem::path& tokenizer_json) const = 0;

  /// A 64-bit FNV-1a hash of everything that decides the ids (tokens, merges, special tokens,
  /// normalisation): two tokenizers with equal fingerprints give the same ids. Stored in shards.
  virtual uint64_t fingerprint() const = 0;

  /// Encodes many texts on `threads` threads (0: all hardware threads); same ids as encode().
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, int threads = 0) const;

  /// The end-of-text token, put between documents when data is prepared: the one named with
  /// set_eos_token(), else <|endoftext|>, else [SEP]; -1 if there is none.
  int32_t eos_id() const;
  /// Names the end-of-text token (its content or vocabulary spelling); throws lathe::Error if
  /// the tokenizer has no such token. An empty name restores the default choice.
  void set_eos_token(const std::string& token);
  const std::string& eos_token() const { return eos_token_; }

 protected:
  /// `fingerprint` with the end-of-text token mixed in when one was named and it is not the
  /// default choice, so shards prepared with another separator are told apart while
  /// fingerprints stay what they were for every tokenizer that names none.
  uint64_t with_eos(uint64_t fingerprint) const;

 private:
  int32_t default_eos_id() const;
  std::string eos_token_;
};

/// The hash behind Tokenizer::fingerprint().
using lathe::Fnv1a;

/// How load_tokenizer reads the forms that do not say everything themselves.
struct LoadOptions {
  /// vocab.txt only (tokenizer.json says its own): lower-case or not; unset: uncased when no
  /// token but the bracketed specials holds an upper-case letter (bert-base-uncased), cased
  /// otherwise, so every command that loads it agrees.
  std::optional<bool> lowercase;
  /// *.tiktoken only: the split pattern (tiktoken's regex dialect); empty: the pattern of the
  /// encoding the file is named after (r50k_base, p50k_base, cl100k_base, o200k_base).
  std::string pattern;
  /// *.tiktoken only: special tokens. The well-known encodings' own (<|endoftext|> = 100257 in
  /// cl100k_base, ...) keep their ids; others take the ids after the file's last rank.
  std::vector<std::string> special_tokens;
  /// The end-of-text token (Tokenizer::set_eos_token); empty: the "eos_token" of a
  /// tokenizer_config.json beside the file (not for tiktoken files), else the default choice.
  std::string eos_token;
};

/// Loads tokenizer.json (BPE or WordPiece model, with its normalizer, pre-tokenizer,
/// post-processor and decoder), vocab.json (with merges.txt beside it), vocab.txt (WordPiece)
/// or a tiktoken file (*.tiktoken); the end-of-text token as LoadOptions::eos_token says. Throws lathe::Error naming the file (and line, or JSON path)
/// of any problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, const LoadOptions& options = {});

}  // namespace lathe::tokenizer
