// Split: the pieces cut at the matches of a pattern, the matches kept as its behavior says.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer {

void SplitPreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  detail::split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
    detail::split_piece(p, detail::regex_matches(*pattern, p.text), behavior, invert, out);
  });
}

nlohmann::ordered_json SplitPreTokenizer::to_json() const {
  using detail::behavior_name;
  // A tiktoken encoding's pattern is written in the form Oniguruma reads the same way.
  std::string onig = pattern->pattern();
  if (pattern->options().dialect == RegexDialect::Tiktoken)
    for (const char* name : {"gpt2", "cl100k", "o200k"})
      if (named_split_pattern(name, RegexDialect::Tiktoken) == onig) {
        onig = *named_split_pattern(name, RegexDialect::Oniguruma);
        break;
      }
  if (onig != pattern->pattern())
    return {
        {"type", "Split"}, {"pattern", {{"Regex", onig}}}, {"behavior", behavior_name(behavior)}, {"invert", invert}};
  return {{"type", "Split"},
          {"pattern", detail::pattern_json(*pattern, pattern_is_string)},
          {"behavior", behavior_name(behavior)},
          {"invert", invert}};
}

namespace detail {

std::shared_ptr<const PreTokenizer> read_split_pre_tokenizer(const Node& n) {
  auto r = std::make_shared<SplitPreTokenizer>();
  r->pattern = read_pattern(n, r->pattern_is_string);
  r->behavior = read_behavior(n, "behavior", SplitBehavior::Isolated);
  r->invert = n.boolean("invert", false);
  return r;
}

}  // namespace detail
}  // namespace lathe::tokenizer
