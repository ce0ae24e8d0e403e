// From a recipe's model section to the plain options the models take (models never read
// recipes themselves).
#pragma once

#include <string>
#include <vector>

#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::models {

/// `vocab_size` is used when the recipe leaves model.vocab_size at 0 (the tokenizer's size).
GptOptions gpt_options(const recipe::ModelConfig& model, int64_t vocab_size);
/// `pad_token_id`: the tokenizer's [PAD] id, or -1.
BertOptions bert_options(const recipe::ModelConfig& model, int64_t vocab_size, int64_t pad_token_id);

/// The model keys on which a model's options (`have`: a checkpoint's, an init_from model's)
/// and the recipe's (`want`) disagree in a way that changes the parameters or what they
/// compute, each as "model.n_layer: 1 in the checkpoint, 2 in the recipe". Dropout and the
/// initialisation may differ: the recipe's apply. Derived values are compared (d_ff 0 is
/// 4 * d_model, n_kv_head 0 is n_head). A classifier's num_labels is its caller's to compare.
std::vector<std::string> architecture_differences(const GptOptions& have, const GptOptions& want);
std::vector<std::string> architecture_differences(const BertOptions& have, const BertOptions& want);

}  // namespace lathe::models
