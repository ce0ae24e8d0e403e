// The sft task's data (train.task: sft): conversations or prompt / completion pairs from JSONL,
// one example per row (padded to the longest of the batch) or packed.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "lathe/data/sampler.hpp"
#include "lathe/data/sft.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "lathe/train/task.hpp"

namespace lathe::train {

/// How the recipe's examples (sft and dpo) are read: the chat template (parsed into `holder`;
/// none where the tokenizer has none and the recipe sets none) and what it sees, the eos token
/// after pairs, rows cut to data.seq_len, the targets of train.loss_on.
data::SftOptions example_options(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                 std::optional<tokenizer::ChatTemplate>& holder);

/// Moves a share `fraction` of `all` to `val` and the rest to `train`, each example chosen by a
/// hash of its index and `seed`, so the split survives reordering.
template <class T>
void split_by_hash(std::vector<T>&& all, double fraction, uint64_t seed, std::vector<T>& train, std::vector<T>& val) {
  for (std::size_t i = 0; i < all.size(); ++i) {
    const double u = static_cast<double>(data::splitmix64(seed ^ (i * 0x9E3779B97F4A7C15ull)) >> 11) * 0x1.0p-53;
    (u < fraction ? val : train).push_back(std::move(all[i]));
  }
}

std::unique_ptr<TaskData> make_sft_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                        recipe::Split eval_split, DataRank rank);

}  // namespace lathe::train
