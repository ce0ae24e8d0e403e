// The dpo task's data (train.task: dpo): JSONL preference pairs, a batch of B pairs being 2B rows
// (the chosen completions, then the rejected ones) with the reference model's log-probabilities
// of each pair, computed once before training (TaskData::set_reference).
#pragma once

#include <memory>

#include "lathe/train/task.hpp"

namespace lathe::train {

std::unique_ptr<TaskData> make_dpo_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                        recipe::Split eval_split, DataRank rank);

}  // namespace lathe::train
