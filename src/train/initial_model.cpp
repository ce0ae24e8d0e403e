// The model a training run starts from.

#include "lathe/train/initial_model.hpp"

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/task.hpp"

namespace lathe::train {
namespace fs = std::filesystem;

namespace {

/// The model the recipe describes, freshly initialised (deferred).
models::DeferredModel recipe_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok, int64_t min_vocab = 0) {
  const auto kind = model_kind(r.train.task);
  int64_t vocab = std::max<int64_t>(r.model.vocab_size, min_vocab);
  if (tok) vocab = std::max<int64_t>(vocab, tok->vocab_size());
  if (vocab <= 0)
    throw Error("no tokenizer at " + recipe::tokenizer_path(r).string() +
                " to size the vocabulary; run the tokenizer stage first (lathe tokenizer train RECIPE) or set "
                "model.vocab_size");
  const int64_t pad = tok ? tok->token_to_id("[PAD]") : -1;
  return models::deferred_model(kind, r.model.options(vocab, pad));
}

}  // namespace

models::DeferredModel adopt(const recipe::Recipe& r, const tokenizer::Tokenizer* tok,
                            const models::DeferredModel& loaded, const std::string& what, const std::string& way_out) {
  // A vocabulary left to the tokenizer (model.vocab_size 0) takes the loaded model's size when
  // that is larger: a padded embedding stays padded.
  const auto& from = loaded.model;
  auto want = recipe_model(r, tok, r.model.vocab_size > 0 ? 0 : from.vocab_size());
  auto diffs = models::architecture_differences(from.arch(), from.options(), want.model.options());
  const auto have_labels = from.options().num_labels, want_labels = want.model.options().num_labels;
  if (from.traits().labelled && have_labels != want_labels)
    diffs.push_back(fmt::format("model.num_labels: {} in the checkpoint, {} in the recipe", have_labels, want_labels));
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += "\n  " + d;
    throw Error(fmt::format("{} is another model than the recipe's:{}\n{}", what, list, way_out));
  }
  want.model.labels = from.labels;
  want.values = loaded.values;
  return want;
}

models::DeferredModel initial_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok) {
  const auto kind = model_kind(r.train.task);
  if (r.train.init_from.empty()) return recipe_model(r, tok);
  const fs::path from = r.train.init_from;
  if (!fs::exists(from)) throw Error("train.init_from: '" + from.string() + "' does not exist");
  if (const auto steps = list_checkpoints(from); !steps.empty())
    throw Error(fmt::format("train.init_from: {} holds the checkpoints of a run, not a model: name one of them (the "
                            "newest is {})",
                            from.string(), steps.back().string()));
  // An adapter directory (a LoRA run's checkpoint, a PEFT adapter) starts from its base with the
  // adapter merged.
  auto loaded = [&]() -> models::DeferredModel {
    if (!adapters::is_adapter_dir(from)) return models::open_model(from, kind, r.model.num_labels);
    auto merged = adapters::load_adapted(from, /*merged=*/true);
    return {merged, models::parameter_values(merged)};
  }();
  if (!models::quantized_layers(loaded.model).empty())
    throw Error("train.init_from: " + from.string() + " is a quantized model, which cannot be trained; start from "
                "the float checkpoint it was quantized from" +
                std::string(r.adapters.kind == adapters::AdapterKind::Qlora
                                ? " (qlora quantizes it at the start as adapters.base_method says)"
                                : ""));
  return adopt(r, tok, loaded, "train.init_from " + from.string(),
               "set these model keys to the values of the weights you start from");
}

}  // namespace lathe::train
