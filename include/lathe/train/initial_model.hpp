// The model a training run starts from: the recipe's model freshly initialised, or weights
// (train.init_from, a resumed checkpoint) put into the recipe's model once their architecture
// is checked against it.
#pragma once

#include <string>

#include "lathe/models/deferred.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::train {

/// The model of a run that resumes nothing, not yet materialised: the recipe's, freshly
/// initialised (the vocabulary from model.vocab_size or the tokenizer `tok`), or with
/// train.init_from's weights (read from the mapped files when the source runs).
/// models::materialise() gives what one process trains; an fsdp rank keeps its shards of the
/// values alone.
models::DeferredModel initial_model(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok);

/// `loaded` (a checkpoint's or init_from's model) as the recipe's model: refused, naming every
/// key, when the architectures differ; otherwise the recipe's model (on the meta device: the
/// options that may change, such as dropout, are the recipe's) with `loaded`'s values. `what`
/// names the source in messages, `way_out` says what to do about a refusal.
models::DeferredModel adopt(const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok,
                            const models::DeferredModel& loaded, const std::string& what, const std::string& way_out);

}  // namespace lathe::train
