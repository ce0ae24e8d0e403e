// The components lathe reads from a tokenizer.json, by part and "type" (registry.cpp lists
// them), and the reader of each.
#pragma once

#include <memory>

#include "node.hpp"

namespace lathe::tokenizer::detail {

/// One "type" of one part and its reader. A component's writer is its to_json().
template <class Part>
struct Component {
  const char* type;
  std::shared_ptr<const Part> (*read)(const Node& n);
};

/// Reads the part at `n` by its "type"; an unknown type is refused naming the supported ones.
std::shared_ptr<const Normalizer> read_normalizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_pre_tokenizer(const Node& n);
std::shared_ptr<const PostProcessor> read_post_processor(const Node& n);
std::shared_ptr<const Decoder> read_decoder(const Node& n);

// Each component's reader, in the file named after its type.
std::shared_ptr<const Normalizer> read_unicode_normalizer(const Node& n);  // unicode_forms.cpp
std::shared_ptr<const Normalizer> read_lowercase_normalizer(const Node& n);
std::shared_ptr<const Normalizer> read_replace_normalizer(const Node& n);
std::shared_ptr<const Normalizer> read_prepend_normalizer(const Node& n);
std::shared_ptr<const Normalizer> read_strip_normalizer(const Node& n);
std::shared_ptr<const Normalizer> read_sequence_normalizer(const Node& n);

std::shared_ptr<const PreTokenizer> read_byte_level_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_split_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_digits_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_punctuation_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_whitespace_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_whitespace_split_pre_tokenizer(const Node& n);  // whitespace.cpp
std::shared_ptr<const PreTokenizer> read_metaspace_pre_tokenizer(const Node& n);
std::shared_ptr<const PreTokenizer> read_sequence_pre_tokenizer(const Node& n);

std::shared_ptr<const PostProcessor> read_template_post_processor(const Node& n);  // template_processing.cpp
std::shared_ptr<const PostProcessor> read_byte_level_post_processor(const Node& n);
std::shared_ptr<const PostProcessor> read_bert_post_processor(const Node& n);     // bert_processing.cpp
std::shared_ptr<const PostProcessor> read_roberta_post_processor(const Node& n);  // bert_processing.cpp
std::shared_ptr<const PostProcessor> read_sequence_post_processor(const Node& n);

std::shared_ptr<const Decoder> read_byte_level_decoder(const Node& n);
std::shared_ptr<const Decoder> read_metaspace_decoder(const Node& n);
std::shared_ptr<const Decoder> read_byte_fallback_decoder(const Node& n);
std::shared_ptr<const Decoder> read_fuse_decoder(const Node& n);
std::shared_ptr<const Decoder> read_strip_decoder(const Node& n);
std::shared_ptr<const Decoder> read_replace_decoder(const Node& n);
std::shared_ptr<const Decoder> read_sequence_decoder(const Node& n);

}  // namespace lathe::tokenizer::detail
