// Whitespace (words and runs of other non-space characters) and WhitespaceSplit (split at
// whitespace).

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct WhitespacePreTokenizer final : PreTokenizer {
  // HF's `\w+|[^\w\s]+` on Rust's regex crate, whose \w is Alphabetic, marks, Nd, Pc, Join_Control.
  Regex words{
      R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}\s]+)",
      {RegexDialect::Tiktoken, false}};
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, regex_matches(words, p.text), SplitBehavior::Removed, true, out);
    });
  }
  ojson to_json() const override { return {{"type", "Whitespace"}}; }
};

struct WhitespaceSplitPreTokenizer final : PreTokenizer {
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, [](char32_t c) { return c != kInvalidCodepoint && is_whitespace(c); }),
                  SplitBehavior::Removed, false, out);
    });
  }
  ojson to_json() const override { return {{"type", "WhitespaceSplit"}}; }
};

}  // namespace

std::shared_ptr<const PreTokenizer> read_whitespace_pre_tokenizer(const Node&) {
  return std::make_shared<WhitespacePreTokenizer>();
}

std::shared_ptr<const PreTokenizer> read_whitespace_split_pre_tokenizer(const Node&) {
  return std::make_shared<WhitespaceSplitPreTokenizer>();
}

}  // namespace lathe::tokenizer::detail
