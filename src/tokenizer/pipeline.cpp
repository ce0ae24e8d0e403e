// The pipeline as a whole: the text pieces it passes along, its parts read from and written to a
// tokenizer.json, the pipelines lathe builds itself. The parts are in components/ (registry.cpp
// lists them).

#include "lathe/tokenizer/pipeline.hpp"

#include "components/byte_level.hpp"
#include "components/registry.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

using ojson = nlohmann::ordered_json;

// ------------------------------------------------------------------------------ TextPiece

TextPiece TextPiece::of(std::string_view text, std::size_t base) {
  TextPiece p;
  p.text.assign(text);
  p.origin.resize(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    decode_utf8(text, i, len);
    for (std::size_t k = 0; k < len; ++k) p.origin[i + k] = {base + i, base + i + len};
    i += len;
  }
  return p;
}

TextPiece TextPiece::slice(std::size_t begin, std::size_t end) const {
  TextPiece p;
  p.text = text.substr(begin, end - begin);
  p.origin.assign(origin.begin() + static_cast<std::ptrdiff_t>(begin), origin.begin() + static_cast<std::ptrdiff_t>(end));
  return p;
}

Pipeline Pipeline::gpt2(bool add_prefix_space) {
  Pipeline p;
  auto pre = std::make_shared<ByteLevelPreTokenizer>();
  pre->add_prefix_space = add_prefix_space;
  p.pre_tokenizer = pre;
  auto post = std::make_shared<detail::ByteLevelPostProcessor>();
  post->add_prefix_space = add_prefix_space;
  p.post_processor = post;
  p.decoder = std::make_shared<detail::ByteLevelDecoder>();
  return p;
}

Pipeline Pipeline::byte_level_split(const std::string& pattern, RegexDialect dialect) {
  Pipeline p;
  auto split = std::make_shared<SplitPreTokenizer>();
  split->pattern = std::make_shared<Regex>(pattern, RegexOptions{dialect, false});
  split->behavior = SplitBehavior::Isolated;
  auto byte_level = std::make_shared<ByteLevelPreTokenizer>();
  byte_level->add_prefix_space = false;
  byte_level->use_regex = false;
  auto seq = std::make_shared<SequencePreTokenizer>();
  seq->steps = {split, byte_level};
  p.pre_tokenizer = seq;
  auto post = std::make_shared<detail::ByteLevelPostProcessor>();
  post->add_prefix_space = false;
  post->use_regex = false;
  p.post_processor = post;
  p.decoder = std::make_shared<detail::ByteLevelDecoder>();
  return p;
}

const ByteLevelPreTokenizer* Pipeline::byte_level() const {
  const PreTokenizer* last = pre_tokenizer.get();
  if (const auto* seq = dynamic_cast<const SequencePreTokenizer*>(last))
    last = seq->steps.empty() ? nullptr : seq->steps.back().get();
  return dynamic_cast<const ByteLevelPreTokenizer*>(last);
}

const Regex* Pipeline::split_pattern() const {
  const auto* seq = dynamic_cast<const SequencePreTokenizer*>(pre_tokenizer.get());
  if (!seq || seq->steps.size() != 2) return nullptr;
  const auto* split = dynamic_cast<const SplitPreTokenizer*>(seq->steps[0].get());
  const auto* byte_level = dynamic_cast<const ByteLevelPreTokenizer*>(seq->steps[1].get());
  if (!split || !byte_level || split->invert || split->behavior != SplitBehavior::Isolated || byte_level->use_regex ||
      byte_level->add_prefix_space)
    return nullptr;
  return split->pattern.get();
}

void Pipeline::to_json(ojson& j) const {
  j["normalizer"] = normalizer ? normalizer->to_json() : ojson(nullptr);
  j["pre_tokenizer"] = pre_tokenizer ? pre_tokenizer->to_json() : ojson(nullptr);
  j["post_processor"] = post_processor ? post_processor->to_json() : ojson(nullptr);
  j["decoder"] = decoder ? decoder->to_json() : ojson(nullptr);
}

Pipeline parse_pipeline(const nlohmann::json& j, const std::string& file,
                        const std::function<int32_t(std::string_view)>& token_id) {
  Pipeline p;
  const detail::Node root{j, "", file, token_id};
  auto node = [&](const char* key) { return root.child(j[key], key); };
  if (root.has("normalizer")) p.normalizer = detail::read_normalizer(node("normalizer"));
  if (root.has("pre_tokenizer")) p.pre_tokenizer = detail::read_pre_tokenizer(node("pre_tokenizer"));
  if (root.has("post_processor")) p.post_processor = detail::read_post_processor(node("post_processor"));
  if (root.has("decoder")) p.decoder = detail::read_decoder(node("decoder"));
  return p;
}

Pipeline pipeline_for_pre_tokenizer(const std::string& name) {
  if (name == "gpt2") return Pipeline::gpt2();
  if (auto pattern = named_split_pattern(name, RegexDialect::Oniguruma)) return Pipeline::byte_level_split(*pattern);
  return Pipeline::byte_level_split(name);
}

}  // namespace lathe::tokenizer
