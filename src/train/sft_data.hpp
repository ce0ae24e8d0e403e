// The sft task's data (train.task: sft): conversations or prompt / completion pairs from JSONL,
// one example per row (padded to the longest of the batch) or packed.
#pragma once

#include <memory>

#include "lathe/train/task.hpp"

namespace lathe::train {

std::unique_ptr<TaskData> make_sft_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                        recipe::Split eval_split, DataRank rank);


}  // namespace lathe::train
