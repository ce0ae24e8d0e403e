// Replace: every match of a pattern replaced by a string, as a normalizer (offsets kept) and as a
// decoder; both carry the same settings in the file.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct ReplaceSettings {
  std::shared_ptr<const Regex> pattern;
  bool is_string = true;
  std::string content;
  void read(const Node& n) {
    pattern = read_pattern(n, is_string);
    content = n.string("content", "");
  }
  ojson json() const {
    return {{"type", "Replace"}, {"pattern", pattern_json(*pattern, is_string)}, {"content", content}};
  }
};

struct ReplaceNormalizer final : Normalizer, ReplaceSettings {
  void normalize(TextPiece& p) const override { replace_all(p, *pattern, content); }
  ojson to_json() const override { return json(); }
};

struct ReplaceDecoder final : Decoder, ReplaceSettings {
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      TextPiece p = TextPiece::of(t, 0);
      replace_all(p, *pattern, content);
      t = std::move(p.text);
    }
  }
  ojson to_json() const override { return json(); }
};

}  // namespace

std::shared_ptr<const Normalizer> read_replace_normalizer(const Node& n) { return read_settings<ReplaceNormalizer>(n); }

std::shared_ptr<const Decoder> read_replace_decoder(const Node& n) { return read_settings<ReplaceDecoder>(n); }

}  // namespace lathe::tokenizer::detail
