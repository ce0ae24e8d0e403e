// The stages of a recipe, each runnable alone (`lathe tokenizer train`, ...) or from `lathe run`.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// Called with (stage, done, total) as a stage makes progress.
using Progress = std::function<void(const std::string&, int64_t, int64_t)>;

/// Where the run's tokenizer lives: tokenizer.path, else <out_dir>/tokenizer.json.
std::filesystem::path tokenizer_path(const recipe::Recipe& recipe);

struct StageResult {
  bool skipped = false;     // outputs existed and the stage was not forced
  std::string summary;      // one line for the log
};

/// Tokenizer stage: with tokenizer.path set, checks that it loads; otherwise trains a byte-level
/// BPE or WordPiece tokenizer (tokenizer.type) on tokenizer.train_files (or data.train_files)
/// into <out_dir>/tokenizer.json.
StageResult run_tokenizer_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

/// Where the run's shards live: data.shard_dir, else <out_dir>/shards.
std::filesystem::path shard_dir(const recipe::Recipe& recipe);

/// Data stage: tokenizes data.train_files (and data.val_files) with the run's tokenizer into
/// train/val shards under shard_dir(); skipped when index.json shows the same tokenizer.
StageResult run_data_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

}  // namespace lathe::pipeline
