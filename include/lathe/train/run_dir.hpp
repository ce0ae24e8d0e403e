// What every stage reads from a run's out_dir the same way: the tokenizer (with the recipe's
// reading options) and the newest checkpoint.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::train {

/// How the recipe's tokenizer file is read: tokenizer.lowercase for a vocab.txt (set: lower-cased;
/// unset: as its vocabulary says, as the CLI reads it), tokenizer.pattern and
/// tokenizer.special_tokens for a tiktoken file, tokenizer.eos_token for any.
tokenizer::LoadOptions tokenizer_load_options(const recipe::Recipe& recipe);

/// The run's tokenizer (recipe::tokenizer_path); when the file does not exist, null, or with
/// `required` an error that says to run the tokenizer stage.
std::unique_ptr<tokenizer::Tokenizer> load_run_tokenizer(const recipe::Recipe& recipe, bool required);

/// Refuses a tokenizer with more tokens than `model` has embedding rows; `where` follows "the
/// model" in the message (" in <path>", or empty).
void check_vocab(const models::AnyModel& model, const tokenizer::Tokenizer& tok, const std::string& where);

/// The newest checkpoint directory of a run, or throws naming the directory searched.
std::filesystem::path newest_checkpoint(const recipe::Recipe& recipe);

}  // namespace lathe::train
