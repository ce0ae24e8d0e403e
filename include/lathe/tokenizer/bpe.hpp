// BPE as Hugging Face `tokenizers` and tiktoken run it. Byte-level (GPT-2, Llama 3, tiktoken
// files): each pre-tokenized piece's UTF-8 bytes are merged by rank; decode(encode(x)) == x for
// any bytes, invalid UTF-8 included. Character-level (SentencePiece-style tokenizer.json): the
// piece's characters are merged, with <0xXX> byte tokens or the unknown token for characters
// outside the vocabulary. Special (added) tokens are matched first and never split; the text
// between them goes through the tokenizer.json pipeline (normalizer, pre-tokenizer) and the
// model; the post-processor adds special tokens on request, the decoder turns ids back to text.
#pragma once

#include <array>
#include <memory>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lathe/tokenizer/pipeline.hpp"
#include "lathe/tokenizer/special.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

namespace detail {
class ShortKeyMap;
}

/// GPT-2's reversible map from bytes to printable code points, used to spell byte-level tokens.
const std::array<char32_t, 256>& byte_to_unicode();
/// A vocabulary spelling (byte-level unicode) back to raw bytes; false if a character is not
/// one of the 256 byte characters.
bool unicode_to_bytes(std::string_view spelled, std::string& bytes);
std::string bytes_to_spelling(std::string_view bytes);

/// Splits text by the GPT-2 rule ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
/// \s+(?!\S)|\s+), calling `piece(begin, end)` for each piece in order.
template <class F>
void pretokenize_gpt2(std::string_view text, F&& piece);

/// The settings of a tokenizer.json "model" of type BPE (dropout is always off).
struct BpeOptions {
  bool ignore_merges = false;  // a piece that is itself a token is taken whole (Llama 3, tiktoken)
  bool byte_fallback = false;  // character-level: an unknown character becomes its <0xXX> tokens
  std::string unk_token;       // character-level: the token for unknown characters; empty: dropped
  bool fuse_unk = false;       // consecutive unknown characters give one unknown token
  std::string continuing_subword_prefix;  // character-level: spelled before each non-initial symbol
  std::string end_of_word_suffix;         // character-level: spelled after each piece's last symbol
  /// Every adjacent pair whose concatenation is a token may merge, ranked by that token's id
  /// (tiktoken's rule); `merges`, when empty, is derived: all such pairs, for tokenizer.json.
  bool merge_by_rank = false;
  /// The tokenizer.json flags of each special (added) token, in the order of the constructor's
  /// `special`; empty: none set.
  std::vector<AddedTokenFlags> special_flags;
};

/// A tiktoken encoding: the split pattern (tiktoken dialect) and its special tokens.
struct TiktokenOptions {
  /// The split pattern; empty: the pattern of the encoding the file is named after
  /// (r50k_base, p50k_base, cl100k_base, o200k_base).
  std::string pattern;
  /// Special tokens and their ids; ids < 0 take the next free id after the file's ranks. The
  /// well-known encodings' own special tokens are added when the file has a well-known name.
  std::vector<std::pair<std::string, int32_t>> special_tokens;
};

class Bpe final : public Tokenizer {
 public:
  /// `tokens[id]` is the raw bytes of token `id` (byte-level) or its text (character-level),
  /// special tokens their content; `merges` in rank order, as token ids; `special` lists the
  /// ids of special (added) tokens, matched verbatim before splitting; an empty token that is
  /// not special is an unused id. The model is byte-level when `pipeline` has a ByteLevel
  /// pre-tokenizer.
  Bpe(std::vector<std::string> tokens, std::vector<std::pair<int32_t, int32_t>> merges, std::vector<int32_t> special,
      BpeOptions options = {}, Pipeline pipeline = Pipeline::gpt2());

  static Bpe from_vocab_merges(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt);
  static Bpe from_tokenizer_json(const std::filesystem::path& path);
  /// A tiktoken file: one "base64(token bytes) rank" per line, ranks 0..n-1.
  static Bpe from_tiktoken(const std::filesystem::path& path, const TiktokenOptions& options = {});

  std::vector<int32_t> encode(std::string_view text, std::vector<Offset>* offsets = nullptr) const override;
  PairEncoding encode_with_specials(std::string_view first, std::string_view second = {},
                                    bool pair = false) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t token_to_id(std::string_view spelled) const override;
  void save(const std::filesystem::path& tokenizer_json) const override;
  uint64_t fingerprint() const override;

  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  const std::vector<int32_t>& special_ids() const { return special_; }
  const BpeOptions& options() const { return options_; }
  const Pipeline& pipeline() const { return pipeline_; }
  bool byte_level() const { return byte_level_; }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t id;
  };
  struct Symbol {
    int32_t id;
    uint32_t len;  // bytes of the piece it covers
  };
  /// How encode() splits a stretch of text between special tokens.
  enum class Route : uint8_t { Gpt2, Regex, General };

  // Construction, in this order: how encode() splits (and the byte-level check); the special
  // tokens' matchers (returns which ids are special); the spelling -> id maps; the byte tokens;
  // the merge map (tiktoken's ranks, or the merge list).
  void choose_route();
  std::vector<bool> index_special_tokens();
  void index_vocabulary(const std::vector<bool>& is_special);
  void index_bytes();
  void index_merges_by_rank();
  void index_merges();

  /// Text between the raw-matched special tokens: the normalized ones are matched (in the
  /// normalized text when there is a normalizer), the rest goes to encode_segment().
  void encode_unmatched(std::string_view text, std::size_t base, std::vector<int32_t>& ids,
                        std::vector<Offset>* offsets) const;
  void encode_segment(std::string_view text, std::size_t base, std::vector<int32_t>& ids,
                      std::vector<Offset>* offsets) const;
  /// The pre-tokenizer and the model on normalized text.
  void encode_normalized(TextPiece piece, std::vector<int32_t>& ids, std::vector<Offset>* offsets) const;
  /// Appends the ids of one byte-level piece (through the per-thread word cache).
  void encode_bytes(std::string_view piece, std::size_t base, std::vector<int32_t>& ids,
                    std::vector<Offset>* offsets) const;
  /// Appends the ids of one character-level piece; `piece_offsets` gives each byte's origin.
  void encode_chars(const TextPiece& piece, std::vector<int32_t>& ids, std::vector<Offset>* offsets) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& ids) const;
  void merge_symbols(std::vector<Symbol>& symbols) const;
  const MergeInfo* find_merge(int32_t a, int32_t b) const;
  int32_t model_token(std::string_view spelled) const;  // id of a model-vocabulary token, or -1

  std::vector<std::string> tokens_;
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<int32_t> special_;
  BpeOptions options_;
  Pipeline pipeline_;
  bool byte_level_ = true;
  bool plain_decode_ = true;  // byte-level with the ByteLevel decoder: the tokens' bytes
  Route route_ = Route::Gpt2;
  const Regex* split_ = nullptr;  // Route::Regex: the one Split pattern
  bool add_prefix_space_ = false;
  std::array<int32_t, 256> byte_id_{};        // byte-level: the token of each byte
  std::array<int32_t, 256> fallback_id_{};    // character-level: <0xXX> tokens, -1 if absent
  int32_t unk_id_ = -1;
  std::unordered_map<uint64_t, MergeInfo> merge_map_;
  struct StringHash {  // looked up by string_view: no copy of the piece
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> model_vocab_;  // model spelling -> id
  std::shared_ptr<const detail::ShortKeyMap> short_vocab_;  // model_vocab_'s keys of up to 15 bytes
  std::unordered_map<std::string, int32_t> spelled_to_id_;
  detail::SpecialMatcher matcher_;             // special tokens matched in the raw text
  detail::SpecialMatcher normalized_matcher_;  // those with the flag `normalized`, in the normalized text
  std::unordered_map<int32_t, std::string> decoded_as_;  // normalized tokens decode to their normalized content, as in HF
  uint64_t uid_;  // identifies this vocabulary in the per-thread word caches
};

// ------------------------------------------------------------------------------ implementation

template <class F>
void pretokenize_gpt2(std::string_view s, F&& piece) {
  const std::size_t n = s.size();
  std::size_t i = 0;
  auto cls_at = [&](std::size_t pos, std::size_t& len) { return char_class(decode_utf8(s, pos, len)); };
  while (i < n) {
    // Contractions.
    if (s[i] == '\'' && i + 1 < n) {
      const char c = s[i + 1];
      if (c == 's' || c == 't' || c == 'm' || c == 'd') {
        piece(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') || (c == 'l' && s[i + 2] == 'l'))) {
        piece(i, i + 3);
        i += 3;
        continue;
      }
    }
    std::size_t len0 = 0;
    CharClass c0 = cls_at(i, len0);
    std::size_t j = i;
    CharClass run = c0;
    bool run_piece = false;
    if (s[i] == ' ' && i + 1 < n) {
      std::size_t len1 = 0;
      CharClass c1 = cls_at(i + 1, len1);
      if (c1 != CharClass::Space) {  // " ?X+" with the optional space
        run = c1;
        j = i + 1;
        run_piece = true;
      }
    } else if (c0 != CharClass::Space) {
      run_piece = true;
    }
    if (run_piece) {
      std::size_t len = 0;
      while (j < n && cls_at(j, len) == run) j += len;
      piece(i, j);
      i = j;
      continue;
    }
    // Whitespace: \s+(?!\S) leaves the last whitespace character for the next piece when a
    // non-space follows; a single whitespace character before a non-space is \s+ alone.
    std::size_t last = i;
    j = i;
    std::size_t len = 0;
    while (j < n && cls_at(j, len) == CharClass::Space) {
      last = j;
      j += len;
    }
    if (j < n && last > i) j = last;
    piece(i, j);
    i = j;
  }
}

}  // namespace lathe::tokenizer
