// WordPiece, BERT style: the BERT normaliser (control-character cleanup, CJK spacing, optional
// accent stripping and lower-casing), splitting on whitespace and punctuation, then greedy
// longest-match with "##" continuation pieces and [UNK] for words that cannot be covered or are
// longer than max_input_chars_per_word. Gives the ids Hugging Face `tokenizers` gives.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "lathe/tokenizer/special.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::tokenizer {

struct WordPieceOptions {
  bool lowercase = true;             // lower-case (uncased BERT)
  bool strip_accents = true;         // NFD and drop non-spacing marks; HF's default follows lowercase
  bool clean_text = true;            // drop control characters, map whitespace to ' '
  bool handle_chinese_chars = true;  // put spaces around CJK ideographs
  int max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]";
  std::string prefix = "##";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  /// Decoding, as HF's WordPiece decoder: tokens after the first are joined with a space unless
  /// they start with `decoder_prefix` (which is then dropped); `cleanup` then removes the space
  /// English tokenisation puts before . ? ! , and contractions, token by token.
  bool wordpiece_decoder = true;  // false: the file has no decoder; tokens are joined with spaces
  std::optional<std::string> decoder_prefix;  // unset: `prefix`
  bool cleanup = true;
  /// The tokenizer.json flags of each special (added) token, in the order of the constructor's
  /// `special`; empty: none set. `normalized` is not supported (the BERT normaliser's text is
  /// not matched against).
  std::vector<AddedTokenFlags> special_flags;
};

class WordPiece final : public Tokenizer {
 public:
  /// `tokens[id]` spelled as in vocab.txt; `special` lists ids matched verbatim in raw text.
  WordPiece(std::vector<std::string> tokens, std::vector<int32_t> special, WordPieceOptions options = {});

  static WordPiece from_vocab_txt(const std::filesystem::path& vocab_txt, WordPieceOptions options = {});
  static WordPiece from_tokenizer_json(const std::filesystem::path& path);

  std::vector<int32_t> encode(std::string_view text, std::vector<Offset>* offsets = nullptr) const override;
  /// With [CLS]/[SEP] and token type ids (0 for the first text, 1 for the second).
  PairEncoding encode_with_specials(std::string_view first, std::string_view second = {},
                                    bool pair = false) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t token_to_id(std::string_view token) const override;
  void save(const std::filesystem::path& tokenizer_json) const override;
  uint64_t fingerprint() const override;

  const WordPieceOptions& options() const { return options_; }
  const std::vector<std::string>& tokens() const { return tokens_; }

  /// Normalises `text` and splits it into words on whitespace and punctuation (BERT's
  /// pre-tokenizer); calls word(code points, byte from, byte to) for each, spans in `text`.
  void split_words(std::string_view text,
                   const std::function<void(const std::u32string&, std::size_t, std::size_t)>& word) const;

  /// The BERT normaliser alone, on UTF-8 text (returns the normalised code points with the
  /// byte offset of the original character each came from).
  std::u32string normalize(std::string_view text, std::vector<std::size_t>* origin = nullptr) const;

 private:
  void encode_word(const std::u32string& word, std::size_t from, std::size_t to, std::vector<int32_t>& ids,
                   std::vector<Offset>* offsets) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> special_;
  WordPieceOptions options_;
  std::unordered_map<std::string, int32_t> vocab_;
  detail::SpecialMatcher matcher_;
  int32_t unk_id_ = -1;
};

}  // namespace lathe::tokenizer
