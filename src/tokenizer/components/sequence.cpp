// Sequence: the steps of a part, in order, for each of the four parts.

#include "byte_level.hpp"
#include "registry.hpp"

namespace lathe::tokenizer {

void SequencePreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  for (const auto& s : steps) s->pre_tokenize(pieces);
}

nlohmann::ordered_json SequencePreTokenizer::to_json() const { return detail::sequence_json("pretokenizers", steps); }

namespace detail {
namespace {

struct SequenceNormalizer final : Normalizer {
  std::vector<std::shared_ptr<const Normalizer>> steps;
  void normalize(TextPiece& p) const override {
    for (const auto& s : steps) s->normalize(p);
  }
  ojson to_json() const override { return sequence_json("normalizers", steps); }
};

/// HF's processors.Sequence: each step in turn. ByteLevel steps pass ids through and keep the
/// two sequences apart, so the result is that of the one step that adds tokens (Llama 3's
/// ByteLevel + TemplateProcessing), or the plain ids when none does.
struct SequencePostProcessor final : PostProcessor {
  std::vector<std::shared_ptr<const PostProcessor>> steps;
  std::shared_ptr<const PostProcessor> adding;  // the step that adds tokens, if any
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    if (adding) return adding->process(a, b);
    return concatenate(a, b);
  }
  ojson to_json() const override { return sequence_json("processors", steps); }
};

struct SequenceDecoder final : Decoder {
  std::vector<std::shared_ptr<const Decoder>> steps;
  void decode(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps) s->decode(tokens);
  }
  ojson to_json() const override { return sequence_json("decoders", steps); }
};

}  // namespace

std::shared_ptr<const Normalizer> read_sequence_normalizer(const Node& n) {
  auto r = std::make_shared<SequenceNormalizer>();
  for (const auto& item : n.items("normalizers")) r->steps.push_back(read_normalizer(item));
  return r;
}

std::shared_ptr<const PreTokenizer> read_sequence_pre_tokenizer(const Node& n) {
  auto r = std::make_shared<SequencePreTokenizer>();
  const auto items = n.items("pretokenizers");
  for (std::size_t i = 0; i < items.size(); ++i) {
    r->steps.push_back(read_pre_tokenizer(items[i]));
    // The byte-level model reads raw bytes: nothing may look at the mapped characters.
    if (i + 1 < items.size() && dynamic_cast<const ByteLevelPreTokenizer*>(r->steps.back().get()))
      items[i + 1].fail("a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
  }
  return r;
}

std::shared_ptr<const PostProcessor> read_sequence_post_processor(const Node& n) {
  auto r = std::make_shared<SequencePostProcessor>();
  for (const auto& item : n.items("processors")) {
    r->steps.push_back(read_post_processor(item));
    const auto* seq = dynamic_cast<const SequencePostProcessor*>(r->steps.back().get());
    const bool adds =
        seq ? seq->adding != nullptr : !dynamic_cast<const ByteLevelPostProcessor*>(r->steps.back().get());
    if (!adds) continue;
    // HF would run the second on the first's output, special tokens included; no tokenizer does.
    if (r->adding)
      item.fail(
          "a second post-processor that adds special tokens in one Sequence is not supported (keep one "
          "TemplateProcessing, BertProcessing or RobertaProcessing; ByteLevel steps may go with it)");
    r->adding = seq ? seq->adding : r->steps.back();
  }
  return r;
}

std::shared_ptr<const Decoder> read_sequence_decoder(const Node& n) {
  auto r = std::make_shared<SequenceDecoder>();
  for (const auto& item : n.items("decoders")) r->steps.push_back(read_decoder(item));
  return r;
}

}  // namespace detail
}  // namespace lathe::tokenizer
