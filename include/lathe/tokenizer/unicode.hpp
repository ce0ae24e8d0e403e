// UTF-8 decoding and the Unicode character classes the tokenizers split on. Properties come
// from utf8proc; nothing here is a hand-made table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lathe::tokenizer {

/// Marks a byte that does not start a valid UTF-8 sequence (decoded as one "other" unit).
inline constexpr char32_t kInvalidCodepoint = 0xFFFFFFFF;

/// Decodes the code point at s[pos]; sets `len` to its byte length (1 for an invalid byte).
char32_t decode_utf8(std::string_view s, std::size_t pos, std::size_t& len);

/// Appends the UTF-8 encoding of `cp`.
void append_utf8(std::string& out, char32_t cp);

/// The classes of the GPT-2 pre-tokenization rule: \p{L}, \p{N}, \s (Unicode White_Space), rest.
enum class CharClass : uint8_t { Letter, Number, Space, Other };
CharClass char_class(char32_t cp);

/// Unicode general-category tests used by the BERT normaliser and pre-tokenizer.
bool is_control(char32_t cp);      // Cc/Cf/Cn/Co except \t \n \r (treated as whitespace)
bool is_whitespace(char32_t cp);   // Unicode White_Space
bool is_punctuation(char32_t cp);  // ASCII symbols and Unicode P*
bool is_cjk(char32_t cp);          // CJK Unified Ideographs blocks
bool is_mark_nonspacing(char32_t cp);  // Mn
/// \w as Rust's regex crate reads it, less Join_Control and '_' (added by the caller where
/// wanted): Alphabetic (letters, Nl, the enclosed letters), marks, decimal digits, connectors.
bool is_word_char(char32_t cp);

/// Appends the full Unicode lower-case mapping of `cp` (one code point, or two for U+0130).
void append_lower(std::u32string& out, char32_t cp);
/// Canonical decomposition (NFD) of `text`.
std::u32string nfd(const std::u32string& text);

}  // namespace lathe::tokenizer
