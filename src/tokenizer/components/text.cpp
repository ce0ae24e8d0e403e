#include "text.hpp"

#include <algorithm>

namespace lathe::tokenizer::detail {

Matches regex_matches(const Regex& re, std::string_view text) {
  Matches m;
  if (text.empty()) return {{{0, 0}, false}};
  std::size_t prev = 0;
  re.for_each_match(text, [&](std::size_t b, std::size_t e) {
    if (prev != b) m.push_back({{prev, b}, false});
    m.push_back({{b, e}, true});
    prev = e;
  });
  if (prev != text.size()) m.push_back({{prev, text.size()}, false});
  return m;
}

void split_piece(const TextPiece& piece, Matches matches, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out) {
  if (invert)
    for (auto& m : matches) m.second = !m.second;
  std::vector<std::pair<Offset, bool>> splits;  // (span, remove)
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (auto& [span, is_match] : matches) splits.push_back({span, false});
      break;
    case SplitBehavior::Removed: splits = std::move(matches); break;
    case SplitBehavior::Contiguous:
    case SplitBehavior::MergedWithPrevious:
      for (auto& [span, is_match] : matches) {
        // Contiguous joins runs of the same kind; MergedWithPrevious joins a match to what precedes it.
        const bool joins = behavior == SplitBehavior::Contiguous ? is_match == previous : is_match && !previous;
        if (joins && !splits.empty()) splits.back().first.second = span.second;
        else splits.push_back({span, false});
        previous = is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        const auto& [span, is_match] = *it;
        if (is_match && !previous && !splits.empty()) splits.back().first.first = span.first;
        else splits.push_back({span, false});
        previous = is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
  }
  for (const auto& [span, remove] : splits)
    if (!remove && span.second > span.first) out.push_back(piece.slice(span.first, span.second));
}

void prepend(TextPiece& p, std::string_view s) {
  if (p.text.empty()) return;
  p.text.insert(0, s);
  p.origin.insert(p.origin.begin(), s.size(), p.origin.front());
}

void replace_all(TextPiece& p, const Regex& pattern, const std::string& content) {
  PieceBuilder b;
  for (const auto& [span, is_match] : regex_matches(pattern, p.text)) {
    if (span.second == span.first) continue;
    if (!is_match) {
      b.out.text.append(p.text, span.first, span.second - span.first);
      b.out.origin.insert(b.out.origin.end(), p.origin.begin() + static_cast<std::ptrdiff_t>(span.first),
                          p.origin.begin() + static_cast<std::ptrdiff_t>(span.second));
    } else {
      b.add(content, p.span(span.first, span.second));
    }
  }
  p = std::move(b.out);
}

}  // namespace lathe::tokenizer::detail
