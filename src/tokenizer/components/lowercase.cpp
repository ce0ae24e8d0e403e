// Lowercase: each character to its lower case (which may be longer), with its span.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct LowercaseNormalizer final : Normalizer {
  void normalize(TextPiece& p) const override {
    PieceBuilder b;
    std::u32string lower;
    for_each_char(p.text, [&](char32_t cp, std::size_t i, std::size_t len) {
      if (cp == kInvalidCodepoint) return b.add(std::string_view(p.text).substr(i, len), p.span(i, i + len));
      lower.clear();
      append_lower(lower, cp);
      for (char32_t c : lower) b.add(c, p.span(i, i + len));
    });
    p = std::move(b.out);
  }
  ojson to_json() const override { return {{"type", "Lowercase"}}; }
};

}  // namespace

std::shared_ptr<const Normalizer> read_lowercase_normalizer(const Node&) {
  return std::make_shared<LowercaseNormalizer>();
}

}  // namespace lathe::tokenizer::detail
