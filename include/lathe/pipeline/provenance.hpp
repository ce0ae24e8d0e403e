// What a stage's output was made from, recorded beside it: a stage is skipped only when every
// part of its record is unchanged, and otherwise says which parts changed.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// A flat record: "tokenizer.vocab_size" -> "400", "file data/kjv.txt" -> "4322111 bytes, mtime
/// 1732870000123456789", "checkpoint" -> "...".
using MadeFrom = std::map<std::string, std::string>;

/// The recipe keys that start with one of `prefixes` ("tokenizer." for a section, "run.seed"
/// for one key), with their values.
MadeFrom recipe_part(const recipe::Recipe& recipe, std::initializer_list<std::string_view> prefixes);
MadeFrom recipe_part(const recipe::Recipe& recipe, const std::vector<std::string_view>& prefixes);

/// Adds each file's size and modification time under "file <path>".
void add_files(MadeFrom& record, const std::vector<std::filesystem::path>& files);

/// A checkpoint directory's identity: path, run id, step, and its model file's size and mtime
/// (a checkpoint rewritten in place is another checkpoint).
std::string checkpoint_identity(const std::filesystem::path& dir);

/// Adds a model's identity: a checkpoint directory's (checkpoint_identity), or a model file's
/// size and mtime.
void add_model(MadeFrom& record, const std::filesystem::path& model);

/// What a stage that reads a model depends on, declared once per stage in its registry entry
/// (registry.hpp; stage_reads): the recipe keys of its own, and whether it reads the run's task
/// data. Every such stage also
/// reads the model it is given and the run's tokenizer (its file and the tokenizer.* keys).
struct StageReads {
  std::vector<std::string_view> keys;  // prefixes: a section ("prune.") or one key ("run.seed")
  /// The batches train::make_task_data builds: every data.* key, the keys that shape a batch,
  /// the shards' index (LM tasks) and the example files (classification).
  bool task_data = false;
};
const StageReads& stage_reads(recipe::Stage stage);

/// The recipe keys and files train::make_task_data reads for `recipe`'s task.
MadeFrom task_data_record(const recipe::Recipe& recipe);

/// The record of `stage` (one of eval, generate, prune, quantize, export) reading `model`, as
/// stage_reads(stage) declares it.
MadeFrom stage_record(const recipe::Recipe& recipe, recipe::Stage stage, const std::filesystem::path& model);

nlohmann::json to_json(const MadeFrom& record);
/// An absent or malformed record reads as nullopt (the output's origin is unknown).
std::optional<MadeFrom> from_json(const nlohmann::json& j);

/// One line per difference: "tokenizer.vocab_size: 400 -> 500", "file x: changed", "y: added".
/// nullopt `recorded`: the output has no record.
std::vector<std::string> changes(const std::optional<MadeFrom>& recorded, const MadeFrom& now);

/// The record of `stage` in <out_dir>/stages.json (for outputs with no room for one inside).
std::optional<MadeFrom> read_stage_record(const std::filesystem::path& out_dir, const std::string& stage);
void write_stage_record(const std::filesystem::path& out_dir, const std::string& stage, const MadeFrom& record);

/// Whether a stage's existing output still stands for its inputs.
struct Freshness {
  bool up_to_date = false;         // the output exists, was not forced, and its record matches
  std::vector<std::string> diff;   // what changed, when the output exists and was not forced
  /// "inputs changed (...): " for the stage's summary, or "" when it simply runs.
  std::string why() const;
};

/// Compares the record of `output` (nullopt: none) with `now`; `force` makes it stale.
Freshness freshness(bool force, const std::filesystem::path& output, const std::optional<MadeFrom>& recorded,
                    const MadeFrom& now);

/// Notes in <shard_dir>/trained_runs.json that the run of `recipe` trains on the shards there
/// (its checkpoint directory), so that another run's data stage does not rewrite them under it.
void record_shard_user(const recipe::Recipe& recipe);

/// Throws naming the run when another run that trained on the shards of `recipe`'s shard
/// directory still has checkpoints: preparing them again would change what those checkpoints
/// were trained on. Holds with --force too (it starts this run over, not the others).
void refuse_if_shards_used(const recipe::Recipe& recipe);

/// "a, b and 2 more" for messages.
std::string summarize(const std::vector<std::string>& items, std::size_t shown = 3);

}  // namespace lathe::pipeline
