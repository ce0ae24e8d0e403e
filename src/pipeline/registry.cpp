#include "lathe/pipeline/registry.hpp"

#include <array>
#include <stdexcept>

#include <fmt/format.h>

#include "lathe/core/enum_table.hpp"

namespace lathe::pipeline {
using recipe::Stage;

namespace {

constexpr std::size_t kStageCount = EnumTable<Stage>::values.size();

/// The registry; the compiler refuses one that does not name every stage.
template <class... Specs>
std::array<StageSpec, sizeof...(Specs)> make_registry(Specs&&... specs) {
  static_assert(sizeof...(Specs) == kStageCount,
                "src/pipeline/registry.cpp: every recipe::Stage needs its StageSpec in the registry");
  std::array<StageSpec, sizeof...(Specs)> out{std::forward<Specs>(specs)...};
  for (std::size_t i = 0; i < out.size(); ++i)
    if (out[i].stage != EnumTable<Stage>::values[i].first || !out[i].run)
      throw std::logic_error(fmt::format("src/pipeline/registry.cpp: entry {} is not the {} stage of recipe::Stage's "
                                         "spelling table, or has no run function",
                                         i, EnumTable<Stage>::values[i].second));
  return out;
}

const std::array<StageSpec, kStageCount>& registry() {
  // Whole sections where a stage reads most of one: a key added to the section later is then
  // recorded without anyone remembering to list it (at worst a stage reruns needlessly).
  static const auto specs = make_registry(
      StageSpec{Stage::Tokenizer, "tokenizer train", "Train the recipe's tokenizer into <out_dir>/tokenizer.json",
                "`tokenizer.json` (nothing with `tokenizer.path` set)", std::nullopt, "", false,
                [](const StageCall& c) { return run_tokenizer_stage(c.recipe, c.force, c.progress); }},
      StageSpec{Stage::Data, "data prepare", "Tokenize the corpus into train/val shards",
                "`shards/` (`data.shard_dir`): `{train,val}_NNNNNN.bin`, `index.json`", std::nullopt, "", false,
                [](const StageCall& c) { return run_data_stage(c.recipe, c.force, c.progress); }},
      StageSpec{Stage::Train, "train", "Train the recipe's model", "`checkpoints/`, `metrics.jsonl`, `tensorboard/`",
                std::nullopt, "", true,
                [](const StageCall& c) { return run_train_stage(c.recipe, c.force, c.console); }},
      StageSpec{Stage::Eval, "eval", "Evaluate a checkpoint (loss, perplexity, accuracy)", "`eval.json`",
                StageReads{{"eval.", "train.precision", "run.device"}, true}, "eval.source", false,
                [](const StageCall& c) { return run_eval_stage(c.recipe, c.force); }},
      StageSpec{Stage::Generate, "generate", "Generate text from a trained GPT (a run's checkpoint, or --model)",
                "`samples.jsonl`", StageReads{{"generate.", "run.seed"}, false}, "generate.source", false,
                [](const StageCall& c) { return run_generate_stage(c.recipe, c.force, c.console.out); }},
      // The fine-tune is a training run of its own: every training setting shapes it.
      StageSpec{Stage::Prune, "prune", "Prune a checkpoint (prune: section), fine-tune it, report before/after",
                "`pruned/`, `prune.json`",
                StageReads{{"prune.", "train.", "optim.", "schedule.", "model.", "eval.batches", "run.seed", "run.device"},
                           true},
                "prune.checkpoint", true,
                [](const StageCall& c) { return run_prune_stage(c.recipe, c.force, c.console); }},
      StageSpec{Stage::Quantize, "quantize",
                "Quantize a checkpoint (quantize: section), report size, accuracy and latency before/after",
                "`quantized/`, `quantize.json`",
                StageReads{{"quantize.", "train.precision", "eval.batches", "run.seed"}, true}, "quantize.source", false,
                [](const StageCall& c) { return run_quantize_stage(c.recipe, c.force, c.console); }},
      StageSpec{Stage::Export, "export",
                "Export to ONNX (model.onnx, decoder_with_past_model.onnx) and/or a Hugging Face directory "
                "(export.format)",
                "`export/` (`export.path`)", StageReads{{"export."}, false}, "export.source", false,
                [](const StageCall& c) { return run_export_stage(c.recipe, c.force); }});
  return specs;
}

}  // namespace

std::span<const StageSpec> stage_registry() { return registry(); }

const StageSpec& stage_spec(Stage stage) {
  for (const auto& s : registry())
    if (s.stage == stage) return s;
  throw std::logic_error("stage_spec: no spec for stage " + std::string(recipe::enum_name(stage)));
}

std::string stage_table_markdown() {
  std::string out = "| stage | command | reads | writes |\n|---|---|---|---|\n";
  for (const auto& s : registry()) {
    std::string reads;
    if (s.reads) {
      for (auto k : s.reads->keys) reads += fmt::format("{}`{}{}`", reads.empty() ? "" : ", ", k, k.ends_with('.') ? "*" : "");
      reads += s.reads->task_data ? ", `data.*`, `tokenizer.*`, the shard index or example files" : ", `tokenizer.*`";
      if (!s.model_key.empty()) reads += fmt::format("; the model `{}` names", s.model_key);
    } else {
      reads = "its own record ([Files lathe writes](docs/files.md))";
    }
    out += fmt::format("| `{}` | `lathe {} RECIPE` | {} | {} |\n", recipe::enum_name(s.stage), s.command, reads, s.writes);
  }
  return out;
}

}  // namespace lathe::pipeline
