// ByteLevel's post-processor and decoder, which the GPT-2 and byte-level-split pipelines build
// and a Sequence of post-processors recognises (its pre-tokenizer is public: the BPE model reads it).
#pragma once

#include "node.hpp"

namespace lathe::tokenizer::detail {

/// ByteLevel as a post-processor only trims offsets; ids pass unchanged.
struct ByteLevelPostProcessor final : PostProcessor {
  bool add_prefix_space = true, trim_offsets = true, use_regex = true;
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override;
  ojson to_json() const override;
};

struct ByteLevelDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override;
  ojson to_json() const override;
};

/// The ids of `a` then those of `b` (if any), type ids 0 then 1: a pair with no tokens added.
PairEncoding concatenate(const std::vector<int32_t>& a, const std::vector<int32_t>* b);

}  // namespace lathe::tokenizer::detail
