// Byte-level BPE, GPT-2 style: text is split by the GPT-2 pre-tokenization rule, each piece's
// UTF-8 bytes are merged by rank, special tokens are matched first and never split. Gives the
// ids Hugging Face `tokenizers` gives for the same vocabulary and merges; decode(encode(x)) == x
// for any bytes, invalid UTF-8 included.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/tokenizer/special.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

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

struct ByteBpeOptions {
  bool add_prefix_space = false;  // prepend a space when the text does not start with one (HF ByteLevel)
};

class ByteBpe final : public Tokenizer {
 public:
  /// `tokens[id]` is the raw bytes of token `id`; `merges` in rank order, as token ids;
  /// `special` lists the ids of special (added) tokens, matched verbatim before splitting.
  ByteBpe(std::vector<std::string> tokens, std::vector<std::pair<int32_t, int32_t>> merges,
          std::vector<int32_t> special, ByteBpeOptions options = {});

  static ByteBpe from_vocab_merges(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt);
  static ByteBpe from_tokenizer_json(const std::filesystem::path& path);

  std::vector<int32_t> encode(std::string_view text, std::vector<Offset>* offsets = nullptr) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t token_to_id(std::string_view spelled) const override;
  void save(const std::filesystem::path& tokenizer_json) const override;
  uint64_t fingerprint() const override;

  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  const std::vector<int32_t>& special_ids() const { return special_; }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t id;
  };
  /// Appends the BPE ids of one pre-tokenized piece (through the per-thread word cache).
  void encode_piece(std::string_view piece, std::size_t base, std::vector<int32_t>& ids,
                    std::vector<Offset>* offsets) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& ids) const;
  const MergeInfo* find_merge(int32_t a, int32_t b) const;

  std::vector<std::string> tokens_;
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<int32_t> special_;
  ByteBpeOptions options_;
  std::array<int32_t, 256> byte_id_{};
  std::unordered_map<uint64_t, MergeInfo> merge_map_;
  std::unordered_map<std::string, int32_t> spelled_to_id_;
  detail::SpecialMatcher matcher_;
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
