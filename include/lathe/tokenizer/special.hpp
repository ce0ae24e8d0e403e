// Matching special (added) tokens in text before any other processing, as Hugging Face's added
// vocabulary does: leftmost-longest matches, each subject to its token's flags; the text between
// matches goes on to the tokenizer's own splitting.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

/// The flags of a tokenizer.json added token, with Hugging Face's meaning.
struct AddedTokenFlags {
  bool single_word = false;  // matched only where no word character touches it on either side
  bool lstrip = false;       // takes the white space before it
  bool rstrip = false;       // takes the white space after it
  bool normalized = false;   // matched in the normalized text (its content normalized too), not the raw text
  bool operator==(const AddedTokenFlags&) const = default;
};

}  // namespace lathe::tokenizer

namespace lathe::tokenizer::detail {

class SpecialMatcher {
 public:
  struct Entry {
    std::string content;
    int32_t id = -1;
    AddedTokenFlags flags;
  };

  SpecialMatcher() = default;
  explicit SpecialMatcher(std::vector<std::pair<std::string, int32_t>> specials) {
    for (auto& [content, id] : specials) entries_.push_back({std::move(content), id, {}});
    index();
  }
  explicit SpecialMatcher(std::vector<Entry> entries) : entries_(std::move(entries)) { index(); }

  bool empty() const { return entries_.empty(); }

  /// Calls on_text(from, to) for each stretch of ordinary text and on_special(id, from, to)
  /// for each special token (its span including the white space lstrip / rstrip took), in order.
  template <class T, class S>
  void split(std::string_view text, T&& on_text, S&& on_special) const {
    std::size_t segment = 0;  // where the text not yet given out starts
    for (std::size_t i = 0; i < text.size();) {
      const Entry* m = first_byte_[static_cast<unsigned char>(text[i])] ? longest_at(text, i) : nullptr;
      if (!m) {
        ++i;
        continue;
      }
      std::size_t start = i, stop = i + m->content.size();
      i = stop;  // a match that its flags discard is still passed over, as HF's find_iter does
      if (m->flags.single_word && ((start > 0 && ends_with_word(text.substr(0, start))) ||
                                   (stop < text.size() && starts_with_word(text.substr(stop)))))
        continue;
      if (m->flags.lstrip) start = std::max(space_start_at_end(text.substr(0, start)), segment);
      if (m->flags.rstrip) stop += space_end_at_start(text.substr(stop));
      start = std::max(start, segment);
      if (segment < start) on_text(segment, start);
      on_special(m->id, start, stop);
      segment = stop;
    }
    if (segment < text.size()) on_text(segment, text.size());
  }

 private:
  void index() {
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
    for (const auto& e : entries_)
      if (!e.content.empty()) first_byte_[static_cast<unsigned char>(e.content[0])] = true;
  }
  const Entry* longest_at(std::string_view text, std::size_t i) const {
    for (const auto& e : entries_)
      if (!e.content.empty() && text.compare(i, e.content.size(), e.content) == 0) return &e;
    return nullptr;
  }
  // HF's \w (Rust regex): alphabetic, marks, decimal digits, connectors, join controls.
  static bool is_word(char32_t cp) {
    if (cp == kInvalidCodepoint) return false;
    return cp == U'_' || cp == 0x200C || cp == 0x200D || is_word_char(cp);
  }
  static char32_t last_char(std::string_view s) {
    std::size_t at = s.size() - 1;
    while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
    std::size_t len = 0;
    return decode_utf8(s, at, len);
  }
  static bool ends_with_word(std::string_view s) { return !s.empty() && is_word(last_char(s)); }
  static bool starts_with_word(std::string_view s) {
    std::size_t len = 0;
    return !s.empty() && is_word(decode_utf8(s, 0, len));
  }
  /// Where the white space that ends `s` starts (s.size() if none).
  static std::size_t space_start_at_end(std::string_view s) {
    std::size_t end = s.size();
    while (end > 0) {
      std::size_t at = end - 1;
      while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
      std::size_t len = 0;
      if (!is_whitespace(decode_utf8(s, at, len)) || at + len != end) break;
      end = at;
    }
    return end;
  }
  /// The length of the white space that starts `s`.
  static std::size_t space_end_at_start(std::string_view s) {
    std::size_t at = 0;
    while (at < s.size()) {
      std::size_t len = 0;
      if (!is_whitespace(decode_utf8(s, at, len))) break;
      at += len;
    }
    return at;
  }

  std::vector<Entry> entries_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace lathe::tokenizer::detail
