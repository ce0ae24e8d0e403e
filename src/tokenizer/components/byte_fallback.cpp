// ByteFallback: runs of <0xNN> tokens back to the bytes they spell.

#include <cctype>

#include "lathe/tokenizer/unicode.hpp"
#include "registry.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct ByteFallbackDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      // A run of byte tokens that is not valid UTF-8 decodes to one U+FFFD per byte, as HF.
      bool valid = true;
      for (std::size_t i = 0; i < run.size();) {
        std::size_t len = 0;
        if (decode_utf8(run, i, len) == kInvalidCodepoint) valid = false;
        i += len;
      }
      if (valid) out.push_back(run);
      else out.insert(out.end(), run.size(), "\xEF\xBF\xBD");
      run.clear();
    };
    for (auto& t : tokens) {
      const bool byte = t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
                        std::isxdigit(static_cast<unsigned char>(t[3])) &&
                        std::isxdigit(static_cast<unsigned char>(t[4]));
      if (byte) {
        run.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
  ojson to_json() const override { return {{"type", "ByteFallback"}}; }
};

}  // namespace

std::shared_ptr<const Decoder> read_byte_fallback_decoder(const Node&) {
  return std::make_shared<ByteFallbackDecoder>();
}

}  // namespace lathe::tokenizer::detail
