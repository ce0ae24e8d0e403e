// ByteLevel: the pre-tokenizer (optional leading space, optional GPT-2 regex split), the
// post-processor (ids unchanged) and the decoder (characters back to bytes); all three carry the
// same settings in the file.

#include "byte_level.hpp"

#include "lathe/tokenizer/bpe.hpp"
#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer {

void ByteLevelPreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  if (add_prefix_space)
    for (auto& p : pieces)
      if (!p.text.starts_with(' ')) detail::prepend(p, " ");
  if (!use_regex) return;
  detail::split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
    pretokenize_gpt2(p.text, [&](std::size_t b, std::size_t e) { out.push_back(p.slice(b, e)); });
  });
}

nlohmann::ordered_json ByteLevelPreTokenizer::to_json() const {
  return detail::byte_level_json(add_prefix_space, use_regex, trim_offsets);
}

namespace detail {

PairEncoding concatenate(const std::vector<int32_t>& a, const std::vector<int32_t>* b) {
  PairEncoding e{a, std::vector<int32_t>(a.size(), 0)};
  if (b) {
    e.ids.insert(e.ids.end(), b->begin(), b->end());
    e.type_ids.resize(e.ids.size(), 1);
  }
  return e;
}

PairEncoding ByteLevelPostProcessor::process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const {
  return concatenate(a, b);
}

ojson ByteLevelPostProcessor::to_json() const { return byte_level_json(add_prefix_space, use_regex, trim_offsets); }

void ByteLevelDecoder::decode(std::vector<std::string>& tokens) const {
  std::string out, bytes;
  for (const auto& t : tokens) out += unicode_to_bytes(t, bytes) ? bytes : t;
  tokens.assign(1, std::move(out));
}

ojson ByteLevelDecoder::to_json() const { return byte_level_json(true, true, true); }

std::shared_ptr<const PreTokenizer> read_byte_level_pre_tokenizer(const Node& n) {
  auto r = std::make_shared<ByteLevelPreTokenizer>();
  read_byte_level(n, r->add_prefix_space, r->use_regex, r->trim_offsets);
  return r;
}

std::shared_ptr<const PostProcessor> read_byte_level_post_processor(const Node& n) {
  auto r = std::make_shared<ByteLevelPostProcessor>();
  read_byte_level(n, r->add_prefix_space, r->use_regex, r->trim_offsets);
  return r;
}

std::shared_ptr<const Decoder> read_byte_level_decoder(const Node&) { return std::make_shared<ByteLevelDecoder>(); }

}  // namespace detail
}  // namespace lathe::tokenizer
