// From a recipe's model section to the plain options the models take (models never read
// recipes themselves).
#pragma once

#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::models {

/// `vocab_size` is used when the recipe leaves model.vocab_size at 0 (the tokenizer's size).
GptOptions gpt_options(const recipe::ModelConfig& model, int64_t vocab_size);
/// `pad_token_id`: the tokenizer's [PAD] id, or -1.
BertOptions bert_options(const recipe::ModelConfig& model, int64_t vocab_size, int64_t pad_token_id);

}  // namespace lathe::models
