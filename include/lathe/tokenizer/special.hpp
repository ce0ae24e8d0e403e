// Matching special (added) tokens in raw text before any other processing, longest first,
// leftmost first: the text between matches goes on to the tokenizer's own splitting.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lathe::tokenizer::detail {

class SpecialMatcher {
 public:
  SpecialMatcher() = default;
  explicit SpecialMatcher(std::vector<std::pair<std::string, int32_t>> specials) : specials_(std::move(specials)) {
    std::stable_sort(specials_.begin(), specials_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (const auto& [content, id] : specials_)
      if (!content.empty()) first_byte_[static_cast<unsigned char>(content[0])] = true;
  }

  /// Calls on_text(from, to) for each stretch of ordinary text and on_special(id, from, to)
  /// for each special token, in order.
  template <class T, class S>
  void split(std::string_view text, T&& on_text, S&& on_special) const {
    std::size_t segment = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
      for (const auto& [content, id] : specials_) {
        if (content.empty() || text.compare(i, content.size(), content) != 0) continue;
        if (segment < i) on_text(segment, i);
        on_special(id, i, i + content.size());
        i += content.size() - 1;
        segment = i + 1;
        break;
      }
    }
    if (segment < text.size()) on_text(segment, text.size());
  }

 private:
  std::vector<std::pair<std::string, int32_t>> specials_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace lathe::tokenizer::detail
