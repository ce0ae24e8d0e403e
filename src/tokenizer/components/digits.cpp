// Digits: runs of digits (or each digit alone) split from the rest.

#include <utf8proc.h>

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

bool is_numeric(char32_t cp) {  // Rust's char::is_numeric: Nd, Nl, No
  if (cp == kInvalidCodepoint) return false;
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

struct DigitsPreTokenizer final : PreTokenizer {
  bool individual = false;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, is_numeric), individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous,
                  false, out);
    });
  }
  ojson to_json() const override { return {{"type", "Digits"}, {"individual_digits", individual}}; }
};

}  // namespace

std::shared_ptr<const PreTokenizer> read_digits_pre_tokenizer(const Node& n) {
  auto r = std::make_shared<DigitsPreTokenizer>();
  r->individual = n.boolean("individual_digits", false);
  return r;
}

}  // namespace lathe::tokenizer::detail
