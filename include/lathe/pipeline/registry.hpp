// The stages of `lathe run`, declared once: each stage's name, command, what it reads and
// writes, which ranks of a data-parallel job run it, and the function that runs it. `lathe run`,
// `--dry-run`, the stage records (provenance.hpp), the CLI's stage commands and the README's
// stage table all come from this registry.
//
// Adding a stage: its enumerator and spelling in recipe/enums.hpp (the recipe's `pipeline:`
// names it), one file under src/pipeline/ with its run function and its spec, one line in
// src/pipeline/registry.cpp. The registry refuses to build without a spec for every enumerator.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// How a stage was asked to run.
struct StageCall {
  const recipe::Recipe& recipe;
  bool force = false;
  ConsoleOptions console;  // training progress and tables; null: silent
  Progress progress;       // the tokenizer and data stages' progress
};

/// One stage.
struct StageSpec {
  recipe::Stage stage;
  std::string_view command;  // its own command: "tokenizer train", "data prepare", "train", ...
  std::string_view summary;  // one line for `lathe --help` and the README's stage table
  std::string_view writes;   // what it writes, relative to run.out_dir (or the key naming where); Markdown
  /// What its output depends on, for a stage that reads a model (eval, generate, prune,
  /// quantize, export): its own keys, whether it reads task data; the stages that make the
  /// tokenizer, the shards and the checkpoints keep records of their own.
  std::optional<StageReads> reads;
  /// The recipe key that chooses its model (eval.source, ...), "" when it reads none or only
  /// checkpoints.
  std::string_view model_key;
  /// A data-parallel job runs it on every rank (they meet rank 0 inside it); otherwise rank 0
  /// runs it alone.
  bool every_rank = false;
  StageResult (*run)(const StageCall&) = nullptr;
};

/// Every stage, in the order of recipe::Stage's spelling table.
std::span<const StageSpec> stage_registry();

/// The spec of `stage`.
const StageSpec& stage_spec(recipe::Stage stage);

/// The README's stage table (Markdown): stage, command, reads, writes.
std::string stage_table_markdown();

}  // namespace lathe::pipeline
