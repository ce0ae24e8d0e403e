// Every tokenizer.json component lathe reads, one line each: its part, its "type" and its
// reader. Each lives in components/<type>.cpp (the type in snake_case: ByteLevel in
// byte_level.cpp, TemplateProcessing in template_processing.cpp), with its reader and its writer
// (to_json); a file holds every part of that type (byte_level.cpp: ByteLevel's pre-tokenizer,
// post-processor and decoder), and unicode_forms.cpp holds NFC, NFD, NFKC and NFKD. Adding a
// component: its file, its reader's declaration in registry.hpp, its line here. The errors for an
// unknown type list these tables, in this order.

#include "registry.hpp"

#include <span>
#include <string>

namespace lathe::tokenizer::detail {
namespace {

const Component<Normalizer> kNormalizers[] = {
    {"NFC", read_unicode_normalizer},         {"NFD", read_unicode_normalizer},
    {"NFKC", read_unicode_normalizer},        {"NFKD", read_unicode_normalizer},
    {"Lowercase", read_lowercase_normalizer}, {"Replace", read_replace_normalizer},
    {"Prepend", read_prepend_normalizer},     {"Strip", read_strip_normalizer},
    {"Sequence", read_sequence_normalizer},
};

const Component<PreTokenizer> kPreTokenizers[] = {
    {"ByteLevel", read_byte_level_pre_tokenizer},  {"Split", read_split_pre_tokenizer},
    {"Digits", read_digits_pre_tokenizer},         {"Punctuation", read_punctuation_pre_tokenizer},
    {"Whitespace", read_whitespace_pre_tokenizer}, {"WhitespaceSplit", read_whitespace_split_pre_tokenizer},
    {"Metaspace", read_metaspace_pre_tokenizer},   {"Sequence", read_sequence_pre_tokenizer},
};

const Component<PostProcessor> kPostProcessors[] = {
    {"TemplateProcessing", read_template_post_processor}, {"ByteLevel", read_byte_level_post_processor},
    {"BertProcessing", read_bert_post_processor},         {"RobertaProcessing", read_roberta_post_processor},
    {"Sequence", read_sequence_post_processor},
};

const Component<Decoder> kDecoders[] = {
    {"ByteLevel", read_byte_level_decoder},
    {"Metaspace", read_metaspace_decoder},
    {"ByteFallback", read_byte_fallback_decoder},
    {"Fuse", read_fuse_decoder},
    {"Strip", read_strip_decoder},
    {"Replace", read_replace_decoder},
    {"Sequence", read_sequence_decoder},
};

template <class Part>
std::vector<std::string> types_of(std::span<const Component<Part>> table) {
  std::vector<std::string> out;
  for (const auto& c : table) out.emplace_back(c.type);
  return out;
}

template <class Part>
std::shared_ptr<const Part> read_from(std::span<const Component<Part>> table, const char* part, const Node& n) {
  const auto type = n.type();
  for (const auto& c : table)
    if (type == c.type) return c.read(n);
  std::string supported;
  for (const auto& c : table) supported += (supported.empty() ? "" : ", ") + std::string(c.type);
  n.fail(std::string(part) + " type '" + type + "' is not supported (supported: " + supported + ")");
}

}  // namespace

std::shared_ptr<const Normalizer> read_normalizer(const Node& n) {
  return read_from<Normalizer>(kNormalizers, "normalizer", n);
}

std::shared_ptr<const PreTokenizer> read_pre_tokenizer(const Node& n) {
  return read_from<PreTokenizer>(kPreTokenizers, "pre-tokenizer", n);
}

std::shared_ptr<const PostProcessor> read_post_processor(const Node& n) {
  return read_from<PostProcessor>(kPostProcessors, "post-processor", n);
}

std::shared_ptr<const Decoder> read_decoder(const Node& n) { return read_from<Decoder>(kDecoders, "decoder", n); }

}  // namespace lathe::tokenizer::detail

namespace lathe::tokenizer {

std::vector<std::string> supported_types(PipelinePart part) {
  switch (part) {
    case PipelinePart::Normalizer: return detail::types_of<Normalizer>(detail::kNormalizers);
    case PipelinePart::PreTokenizer: return detail::types_of<PreTokenizer>(detail::kPreTokenizers);
    case PipelinePart::PostProcessor: return detail::types_of<PostProcessor>(detail::kPostProcessors);
    case PipelinePart::Decoder: return detail::types_of<Decoder>(detail::kDecoders);
  }
  return {};
}

}  // namespace lathe::tokenizer
