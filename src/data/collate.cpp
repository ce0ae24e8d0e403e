#include "lathe/data/collate.hpp"

#include <ATen/ATen.h>

#include <algorithm>

#include "lathe/core/error.hpp"
#include "lathe/data/sampler.hpp"

namespace lathe::data {

LmBatch make_lm_batch(const std::vector<int32_t>& rows, int64_t batch_size, int64_t seq_len) {
  if (static_cast<int64_t>(rows.size()) != batch_size * (seq_len + 1))
    throw Error("make_lm_batch: expected " + std::to_string(batch_size * (seq_len + 1)) + " tokens, got " +
                std::to_string(rows.size()));
  auto all = at::from_blob(const_cast<int32_t*>(rows.data()), {batch_size, seq_len + 1}, at::kInt).to(at::kLong);
  return {all.narrow(1, 0, seq_len).contiguous(), all.narrow(1, 1, seq_len).contiguous()};
}

PaddedBatch pad_batch(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id,
                      const std::vector<std::vector<int32_t>>* type_ids) {
  std::size_t longest = 0;
  for (const auto& s : ids) longest = std::max(longest, s.size());
  const auto B = static_cast<int64_t>(ids.size()), T = static_cast<int64_t>(longest);
  auto input = at::full({B, T}, pad_id, at::kLong);
  auto mask = at::zeros({B, T}, at::kLong);
  auto types = at::zeros({B, T}, at::kLong);
  auto in = input.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  auto ty = types.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = ids[b];
    for (std::size_t t = 0; t < s.size(); ++t) {
      in[b][t] = s[t];
      ma[b][t] = 1;
      if (type_ids) ty[b][t] = (*type_ids)[b].at(t);
    }
  }
  return {input, mask, types};
}

MlmCollator::MlmCollator(MlmOptions options) : o_(std::move(options)) {
  if (o_.mask_id < 0 || o_.mask_id >= o_.vocab_size) throw Error("MlmCollator: mask_id is not a token of the vocabulary");
  if (o_.probability <= 0 || o_.probability > 1) throw Error("MlmCollator: probability must be in (0, 1]");
  special_.assign(static_cast<std::size_t>(o_.vocab_size), false);
  for (int32_t id : o_.special_ids)
    if (id >= 0 && id < o_.vocab_size) special_[id] = true;
  for (int32_t id = 0; id < o_.vocab_size; ++id)
    if (!special_[id]) replaceable_.push_back(id);
}

MlmBatch MlmCollator::operator()(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id, uint64_t step,
                                 const std::vector<std::vector<int32_t>>* type_ids, uint64_t first_row) const {
  MlmBatch out{pad_batch(ids, pad_id, type_ids), {}};
  out.labels = at::full_like(out.inputs.input_ids, -100);
  auto in = out.inputs.input_ids.accessor<int64_t, 2>();
  auto lab = out.labels.accessor<int64_t, 2>();
  auto uniform = [](uint64_t x) { return static_cast<double>(x >> 11) * 0x1.0p-53; };
  const bool whole_words = !o_.continuation.empty();
  for (std::size_t b = 0; b < ids.size(); ++b) {
    const auto& s = ids[b];
    const uint64_t row_key = splitmix64(o_.seed ^ splitmix64(step ^ splitmix64(first_row + b + 0x6d6c6d)));
    bool word_selected = false;
    for (std::size_t t = 0; t < s.size(); ++t) {
      const int32_t id = s[t];
      if (id < 0 || id >= o_.vocab_size || special_[id]) {
        word_selected = false;
        continue;
      }
      const uint64_t r = splitmix64(row_key ^ splitmix64(t));
      // Whole-word masking draws once per word (at its first piece); pieces follow their word.
      const bool continues = whole_words && t > 0 && o_.continuation[id];
      const bool selected = continues ? word_selected : uniform(r) < o_.probability;
      word_selected = selected;
      if (!selected) continue;
      lab[b][t] = id;
      const double action = uniform(splitmix64(r ^ 0xa5a5a5a5));
      if (action < 0.8)
        in[b][t] = o_.mask_id;
      else if (action < 0.9)
        in[b][t] = replaceable_[splitmix64(r ^ 0x5a5a5a5a) % replaceable_.size()];
      // else: kept unchanged
    }
  }
  return out;
}

}  // namespace lathe::data
