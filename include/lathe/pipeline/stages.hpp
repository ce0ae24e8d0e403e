// The stages of a recipe, each runnable alone (`lathe tokenizer train`, ...) or from `lathe run`.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

#include "lathe/models/generate.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// Called with (stage, done, total) as a stage makes progress.
using Progress = std::function<void(const std::string&, int64_t, int64_t)>;

struct StageResult {
  bool skipped = false;     // outputs existed and the stage was not forced
  std::string summary;      // one line for the log
};

/// Tokenizer stage: with tokenizer.path set, checks that it loads; otherwise trains a byte-level
/// BPE or WordPiece tokenizer (tokenizer.type) on tokenizer.train_files (or data.train_files)
/// into <out_dir>/tokenizer.json.
StageResult run_tokenizer_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

/// Data stage: tokenizes data.train_files (and data.val_files) with the run's tokenizer into
/// train/val shards under shard_dir(); skipped when index.json shows the same tokenizer.
StageResult run_data_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

}  // namespace lathe::pipeline

namespace lathe::pipeline {

/// Where the train stage prints its progress line and messages.
struct ConsoleOptions {
  std::ostream* out = nullptr;  // null: silent
  bool is_tty = false;          // redraw the progress line in place
};

/// Train stage: trains to train.max_steps. Skipped when the newest checkpoint already reached
/// max_steps (unless forced). An unfinished run in out_dir is resumed (train.resume: none
/// behaves like auto there); forced, the old checkpoints are removed first.
StageResult run_train_stage(const recipe::Recipe& recipe, bool force, const ConsoleOptions& console = {});

/// Eval stage: evaluates the newest checkpoint (or eval.checkpoint) and writes
/// <out_dir>/eval.json. Skipped when eval.json already describes that checkpoint.
StageResult run_eval_stage(const recipe::Recipe& recipe, bool force);

struct Sample {
  std::string prompt;
  std::string text;           // the continuation (cut at a stop string)
  int64_t tokens = 0;         // tokens generated
  std::string finish_reason;  // length, stop_token, stop_string, context
};

struct GenerateRequest {
  std::filesystem::path model;      // a checkpoint directory, a lathe model file or a HF directory
  std::filesystem::path tokenizer;  // the tokenizer file
  std::vector<std::string> prompts; // "" starts from the end-of-text token
  models::SamplingOptions sampling; // stop_tokens: the end-of-text token is added
  std::vector<std::string> stop;    // strings that end a generation
  recipe::Device device = recipe::Device::Auto;
};

/// Continues each prompt; `on_text` (optional) receives each piece of text as it is decoded.
std::vector<Sample> generate_samples(const GenerateRequest& request,
                                     const std::function<void(const std::string&)>& on_text = {});

/// Generate stage: samples for generate.prompts from the newest checkpoint, printed to `out`
/// and written to <out_dir>/samples.jsonl.
StageResult run_generate_stage(const recipe::Recipe& recipe, bool force, std::ostream* out = nullptr);

}  // namespace lathe::pipeline
