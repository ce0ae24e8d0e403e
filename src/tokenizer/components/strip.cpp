// Strip: the normalizer trims whitespace at either end; the decoder trims up to `start` / `stop`
// copies of a character from each token.

#include <algorithm>

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct StripNormalizer final : Normalizer {
  bool left = true, right = true;
  void normalize(TextPiece& p) const override {
    std::size_t b = 0, e = p.text.size();
    if (left)
      while (b < e) {
        std::size_t len = 0;
        if (!is_whitespace(decode_utf8(p.text, b, len))) break;
        b += len;
      }
    if (right)
      while (e > b) {
        std::size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(p.text[start]) & 0xC0) == 0x80) --start;
        std::size_t len = 0;
        if (!is_whitespace(decode_utf8(p.text, start, len)) || start + len != e) break;
        e = start;
      }
    if (b != 0 || e != p.text.size()) p = p.slice(b, e);
  }
  ojson to_json() const override { return {{"type", "Strip"}, {"strip_left", left}, {"strip_right", right}}; }
};

struct StripDecoder final : Decoder {
  char32_t content = U' ';
  int64_t start = 0, stop = 0;
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::u32string chars;
      for_each_char(t, [&](char32_t cp, std::size_t, std::size_t) { chars.push_back(cp); });
      std::size_t from = 0, to = chars.size();
      for (int64_t i = 0; i < start && static_cast<std::size_t>(i) < chars.size() && chars[i] == content; ++i)
        from = i + 1;
      for (int64_t i = 0; i < stop && static_cast<std::size_t>(i) < chars.size(); ++i) {
        const std::size_t at = chars.size() - 1 - i;
        if (chars[at] != content) break;
        to = at;
      }
      std::string out;
      for (std::size_t i = from; i < std::max(from, to); ++i) append_utf8(out, chars[i]);
      t = std::move(out);
    }
  }
  ojson to_json() const override {
    return {{"type", "Strip"}, {"content", utf8(content)}, {"start", start}, {"stop", stop}};
  }
};

}  // namespace

std::shared_ptr<const Normalizer> read_strip_normalizer(const Node& n) {
  auto r = std::make_shared<StripNormalizer>();
  r->left = n.boolean("strip_left", true);
  r->right = n.boolean("strip_right", true);
  return r;
}

std::shared_ptr<const Decoder> read_strip_decoder(const Node& n) {
  auto r = std::make_shared<StripDecoder>();
  r->content = read_char(n, "content", U' ');
  r->start = n.integer("start", 0);
  r->stop = n.integer("stop", 0);
  return r;
}

}  // namespace lathe::tokenizer::detail
