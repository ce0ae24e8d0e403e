// Text operations the components share: building a piece character by character, finding
// matches (of a regex, or characters of a class) and splitting a piece at them as HF's
// NormalizedString::split does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lathe/tokenizer/pipeline.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer::detail {

/// Builds a new piece character by character.
struct PieceBuilder {
  TextPiece out;
  void add(std::string_view bytes, Offset from) {
    out.text.append(bytes);
    out.origin.insert(out.origin.end(), bytes.size(), from);
  }
  void add(char32_t cp, Offset from) {
    const std::size_t before = out.text.size();
    append_utf8(out.text, cp);
    out.origin.insert(out.origin.end(), out.text.size() - before, from);
  }
};

/// Calls f(code point, byte position, byte length) for each character of `s` (an invalid byte
/// is one character, kInvalidCodepoint).
template <class F>
void for_each_char(std::string_view s, F&& f) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    const char32_t cp = decode_utf8(s, i, len);
    f(cp, i, len);
    i += len;
  }
}

/// HF's Pattern::find_matches: ordered spans covering the whole text, each marked as a match.
using Matches = std::vector<std::pair<Offset, bool>>;

Matches regex_matches(const Regex& re, std::string_view text);

/// The characters for which pred(code point) holds, as matches.
template <class Pred>
Matches char_matches(std::string_view text, Pred&& pred) {
  Matches m;
  if (text.empty()) return {{{0, 0}, false}};
  std::size_t last = 0;
  for_each_char(text, [&](char32_t cp, std::size_t i, std::size_t len) {
    if (!pred(cp)) return;
    if (last < i) m.push_back({{last, i}, false});
    m.push_back({{i, i + len}, true});
    last = i + len;
  });
  if (last < text.size()) m.push_back({{last, text.size()}, false});
  return m;
}

/// HF's NormalizedString::split: applies `behavior` to the matches and appends the non-empty
/// resulting pieces to `out`.
void split_piece(const TextPiece& piece, Matches matches, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out);

/// Replaces `pieces` by what split(piece, out) appends for each.
template <class Split>
void split_all(std::vector<TextPiece>& pieces, Split&& split) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size() * 2);
  for (const auto& p : pieces) split(p, out);
  pieces = std::move(out);
}

/// `s` before a non-empty piece, taking the span of its first byte.
void prepend(TextPiece& p, std::string_view s);

/// Every match of `pattern` in the piece replaced by `content` (which takes the match's span).
void replace_all(TextPiece& p, const Regex& pattern, const std::string& content);

}  // namespace lathe::tokenizer::detail
