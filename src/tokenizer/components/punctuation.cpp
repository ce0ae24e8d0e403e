// Punctuation: each punctuation character split off as its behavior says.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct PunctuationPreTokenizer final : PreTokenizer {
  SplitBehavior behavior = SplitBehavior::Isolated;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, [](char32_t c) { return c != kInvalidCodepoint && is_punctuation(c); }),
                  behavior, false, out);
    });
  }
  ojson to_json() const override { return {{"type", "Punctuation"}, {"behavior", behavior_name(behavior)}}; }
};

}  // namespace

std::shared_ptr<const PreTokenizer> read_punctuation_pre_tokenizer(const Node& n) {
  auto r = std::make_shared<PunctuationPreTokenizer>();
  r->behavior = read_behavior(n, "behavior", SplitBehavior::Isolated);
  return r;
}

}  // namespace lathe::tokenizer::detail
