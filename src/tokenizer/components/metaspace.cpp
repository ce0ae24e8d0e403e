// Metaspace: the pre-tokenizer (spaces to the replacement character, which is prepended and split
// before) and the decoder (back to spaces); both carry the same settings in the file.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

enum class PrependScheme : uint8_t { Always, First, Never };

struct MetaspaceSettings {
  char32_t replacement = U'\u2581';
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;

  void read(const Node& n) {
    replacement = read_char(n, "replacement", U'\u2581');
    if (n.has("prepend_scheme")) {
      const auto s = n.string("prepend_scheme", "always");
      if (s == "always") scheme = PrependScheme::Always;
      else if (s == "first") scheme = PrependScheme::First;
      else if (s == "never") scheme = PrependScheme::Never;
      else n.at("prepend_scheme").fail("'" + s + "' is not always, first or never");
    } else if (n.has("add_prefix_space")) {  // files written before prepend_scheme existed
      scheme = n.boolean("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    split = n.boolean("split", true);
  }
  ojson json() const {
    return {{"type", "Metaspace"},
            {"replacement", utf8(replacement)},
            {"prepend_scheme", scheme == PrependScheme::Always  ? "always"
                               : scheme == PrependScheme::First ? "first"
                                                                : "never"},
            {"split", split}};
  }
};

struct MetaspacePreTokenizer final : PreTokenizer, MetaspaceSettings {
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    const std::string rep = utf8(replacement);
    split_all(pieces, [&](const TextPiece& in, std::vector<TextPiece>& out) {
      PieceBuilder b;
      for_each_char(in.text, [&](char32_t cp, std::size_t i, std::size_t len) {
        if (cp == U' ') b.add(rep, in.span(i, i + len));
        else b.add(std::string_view(in.text).substr(i, len), in.span(i, i + len));
      });
      TextPiece p = std::move(b.out);
      const bool starts = p.text.starts_with(rep);
      // "first": only the piece that starts the original text (not one after a special token).
      if (!starts && (scheme == PrependScheme::Always ||
                      (scheme == PrependScheme::First && !in.origin.empty() && in.origin.front().first == 0)))
        prepend(p, rep);
      if (!split) {
        if (!p.text.empty()) out.push_back(std::move(p));
        return;
      }
      split_piece(p, char_matches(p.text, [&](char32_t c) { return c == replacement; }), SplitBehavior::MergedWithNext,
                  false, out);
    });
  }
  ojson to_json() const override { return json(); }
};

struct MetaspaceDecoder final : Decoder, MetaspaceSettings {
  void decode(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for_each_char(tokens[i], [&](char32_t cp, std::size_t at, std::size_t len) {
        if (cp != replacement) return out.append(tokens[i], at, len), void();
        if (!(i == 0 && scheme != PrependScheme::Never)) out += ' ';
      });
      tokens[i] = std::move(out);
    }
  }
  ojson to_json() const override { return json(); }
};

}  // namespace

std::shared_ptr<const PreTokenizer> read_metaspace_pre_tokenizer(const Node& n) {
  return read_settings<MetaspacePreTokenizer>(n);
}

std::shared_ptr<const Decoder> read_metaspace_decoder(const Node& n) { return read_settings<MetaspaceDecoder>(n); }

}  // namespace lathe::tokenizer::detail
