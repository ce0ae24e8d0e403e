// The model a training run starts from: the recipe's model freshly initialised, or weights
// (train.init_from, a resumed checkpoint) put into the recipe's model once their architecture
// is checked against it.
#pragma once

#include <string>

#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::train {

/// The model of a run that resumes nothing: the recipe's, freshly initialised (the vocabulary
/// from model.vocab_size or the tokenizer `tok`), or with train.init_from's weights.
models::AnyModel initial_model(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok);

/// `loaded` (a checkpoint's or init_from's model) in the recipe's model: refused, naming every
/// key, when the architectures differ; otherwise the recipe's model with `loaded`'s weights, so
/// the options that may change (dropout) are the recipe's. `what` names the source in messages,
/// `way_out` says what to do about a refusal.
models::AnyModel adopt(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok, const models::AnyModel& loaded,
                       const std::string& what, const std::string& way_out);

}  // namespace lathe::train
