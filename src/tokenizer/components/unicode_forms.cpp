// NFC, NFD, NFKC and NFKD: the Unicode normalization forms, through utf8proc.

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct UnicodeNormalizer final : Normalizer {
  std::string name;  // NFC NFD NFKC NFKD
  int options = 0;
  explicit UnicodeNormalizer(std::string n) : name(std::move(n)) {
    options = UTF8PROC_STABLE | (name == "NFC" || name == "NFKC" ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
              (name.size() == 4 ? UTF8PROC_COMPAT : 0);  // NFKC, NFKD
  }
  std::string map(std::string_view s) const {
    utf8proc_uint8_t* dst = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                static_cast<utf8proc_ssize_t>(s.size()), &dst, static_cast<utf8proc_option_t>(options));
    if (n < 0) return std::string(s);  // not valid UTF-8: left as it is
    std::string out(reinterpret_cast<const char*>(dst), static_cast<std::size_t>(n));
    std::free(dst);
    return out;
  }
  void normalize(TextPiece& p) const override {
    if (std::all_of(p.text.begin(), p.text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return;
    // Normalised run by run (a run starts at a character that combines with nothing before
    // it), each run's output taking the run's span; if the runs do not add up to the whole
    // text's normal form, the whole text is normalised and spans are per piece.
    PieceBuilder b;
    std::size_t run = 0;
    auto flush = [&](std::size_t end) {
      if (end > run) b.add(map(std::string_view(p.text).substr(run, end - run)), p.span(run, end));
      run = end;
    };
    for_each_char(p.text, [&](char32_t cp, std::size_t i, std::size_t) {
      const bool jamo = (cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2);
      const bool starter = cp == kInvalidCodepoint ||
                           (utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class == 0 && !jamo);
      if (starter) flush(i);
    });
    flush(p.text.size());
    const std::string whole = map(p.text);
    if (whole != b.out.text) {
      const Offset all = p.span(0, p.text.size());
      b.out = {};
      b.add(whole, all);
    }
    p = std::move(b.out);
  }
  ojson to_json() const override { return {{"type", name}}; }
};

}  // namespace

std::shared_ptr<const Normalizer> read_unicode_normalizer(const Node& n) {
  return std::make_shared<UnicodeNormalizer>(n.type());
}

}  // namespace lathe::tokenizer::detail
