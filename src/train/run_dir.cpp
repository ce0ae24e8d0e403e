// The tokenizer and the newest checkpoint of a run, as every stage reads them.

#include "lathe/train/run_dir.hpp"

#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"

namespace lathe::train {
namespace fs = std::filesystem;

tokenizer::LoadOptions tokenizer_load_options(const recipe::Recipe& r) {
  tokenizer::LoadOptions o;
  if (r.tokenizer.lowercase) o.lowercase = true;
  o.pattern = r.tokenizer.pattern;
  o.special_tokens = r.tokenizer.special_tokens;
  o.eos_token = r.tokenizer.eos_token;
  return o;
}

std::unique_ptr<tokenizer::Tokenizer> load_run_tokenizer(const recipe::Recipe& r, bool required) {
  const auto path = recipe::tokenizer_path(r);
  if (!fs::exists(path)) {
    if (required)
      throw Error("the tokenizer " + path.string() + " does not exist; run the tokenizer stage first (lathe run "
                  "RECIPE, or lathe tokenizer train RECIPE)");
    return nullptr;
  }
  return tokenizer::load_tokenizer(path, tokenizer_load_options(r));
}

void check_vocab(const models::AnyModel& m, const tokenizer::Tokenizer& tok, const std::string& where) {
  if (tok.vocab_size() > m.vocab_size())
    throw Error(fmt::format("vocabulary mismatch: the tokenizer has {} tokens but the model{} has {} embedding rows",
                            tok.vocab_size(), where, m.vocab_size()));
}

fs::path newest_checkpoint(const recipe::Recipe& r) {
  auto all = list_checkpoints(recipe::checkpoint_dir(r));
  if (all.empty())
    throw Error("no checkpoint in " + recipe::checkpoint_dir(r).string() + "; train first (lathe train RECIPE)");
  return all.back();
}

}  // namespace lathe::train
