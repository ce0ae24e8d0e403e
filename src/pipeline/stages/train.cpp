// The train stage: trains the recipe's model, or continues its run.

#include <fstream>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/checkpointer.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/train/task.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// --force for the train stage: removes lathe's files of the earlier run (all of them, or with
/// train.resume naming a checkpoint of this out_dir, the checkpoints after it). Returns what went.
std::vector<fs::path> remove_earlier_training(const recipe::Recipe& r) {
  const auto root = recipe::checkpoint_dir(r);
  const auto& how = r.train.resume;
  std::optional<int64_t> keep_to;
  if (how != "none" && how != "auto" && fs::exists(how)) {
    std::error_code ec;
    if (fs::equivalent(fs::path(how).parent_path(), root, ec)) keep_to = train::checkpoint_step(how);
  }
  std::vector<fs::path> doomed, dirs = train::list_checkpoints(root);
  for (const auto& dir : train::damaged_checkpoints(root)) dirs.push_back(dir);  // unreadable ones go too
  for (const auto& dir : dirs)
    if (!keep_to || train::checkpoint_step(dir) > *keep_to) doomed.push_back(dir);
  if (!keep_to) {
    doomed.push_back(fs::path(r.run.out_dir) / "metrics.jsonl");
    for (const auto& f : io::owned_entries(fs::path(r.run.out_dir) / "tensorboard")) doomed.push_back(f);
  }
  check_not_input(r, doomed);  // all checked before anything goes
  std::vector<fs::path> removed;
  for (const auto& p : doomed)
    if (io::remove_owned(p)) removed.push_back(p);
  return removed;
}

/// A finished run that read its examples from files (sft, classification) is not skipped as
/// finished when what decides its examples has changed since: it would stand for a model those
/// settings never trained. (Pretraining's corpus is guarded by the data stage.)
void refuse_changed_examples(const recipe::Recipe& r, const fs::path& checkpoint) {
  if (!recipe::reads_example_files(r.train.task)) return;
  const auto meta = io::read_json_if_valid(checkpoint / "meta.json");
  if (!meta || !meta->is_object() || !meta->contains("recipe")) return;
  recipe::Recipe then;
  try {
    then = recipe::parse_recipe((*meta)["recipe"].get<std::string>(), "the checkpoint's recipe");
  } catch (const std::exception&) {
    return;  // a recipe of another lathe version: nothing to compare
  }
  const auto keys = recipe_part(r, {"data.", "train.task", "train.loss_on", "tokenizer.chat_template"});
  const auto before = recipe_part(then, {"data.", "train.task", "train.loss_on", "tokenizer.chat_template"});
  std::vector<std::string> changed;
  for (const auto& [key, value] : keys)
    if (auto it = before.find(key); it != before.end() && it->second != value && !key.starts_with("data.num_workers") &&
                                    !key.starts_with("data.prefetch"))
      changed.push_back(fmt::format("{}: {} -> {}", key, it->second, value));
  if (!changed.empty())
    throw Error(fmt::format("{} finished training on other examples ({}); train again from the start with --force, "
                            "or set another run.out_dir",
                            checkpoint.string(), fmt::join(changed, ", ")));
}

}  // namespace

StageResult run_train_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  // A data-parallel launch (torchrun, mpirun, srun): every rank runs this stage; rank 0 alone
  // locks out_dir, removes what --force removes and writes.
  const auto comm = job_communicator(r);
  const bool lead = !comm || comm->rank() == 0;
  std::optional<RunLock> lock;
  const auto root = recipe::checkpoint_dir(r);
  std::string removed_note;
  std::optional<StageResult> finished;
  // Rank 0 prepares out_dir while the others wait; a failure there (out_dir locked by another
  // process, say) ends every rank at once with its message.
  dist::together(comm.get(), "the start of training (rank 0 prepares out_dir)", [&] {
    if (lead) lock.emplace(r);
    // Before anything else, so that a run trained before the shards kept this list is noted too.
    if (lead && !recipe::reads_example_files(r.train.task)) record_shard_user(r);
    if (force && !lead) {
      // rank 0 removes; the ranks meet at the end of this block, before any of them reads out_dir
    } else if (force) {
      // Examples read from files are read (and refused) before anything is removed.
      if (recipe::reads_example_files(r.train.task)) {
        const auto tok = tokenizer::load_tokenizer(recipe::tokenizer_path(r), train::tokenizer_load_options(r));
        (void)train::make_task_data(r, *tok);
      }
      const auto removed = remove_earlier_training(r);
      if (!removed.empty()) {
        std::vector<std::string> names;
        for (const auto& p : removed) names.push_back(p.lexically_relative(r.run.out_dir).string());
        removed_note = fmt::format("removed {}; ", fmt::join(names, ", "));
        if (console.out) *console.out << "--force: " << removed_note.substr(0, removed_note.size() - 2) << "\n";
      }
    } else if (r.train.resume == "auto") {
      const auto existing = train::list_checkpoints(root);
      if (!existing.empty()) {
        const int64_t step = train::checkpoint_step(existing.back());
        if (step >= r.train.max_steps) {
          train::check_checkpoint_model(r, existing.back());  // a changed model is refused, not skipped
          refuse_changed_examples(r, existing.back());
          finished = StageResult{true, fmt::format("{} reached step {} of {}", existing.back().string(), step,
                                                   r.train.max_steps)};
        }
      }
    }
  });
  if (finished) return *finished;
  train::Trainer trainer(r, {console.out, console.is_tty, /*handle_signals=*/true, /*sparsity=*/nullptr, comm});
  const auto rep = trainer.run();
  std::string val;
  for (const auto& [k, v] : rep.val) val += fmt::format(", val {} {:.4f}", k, v);
  StageResult result{false,
                     fmt::format("{}{} at step {}{} (train loss {:.4f}{}; {:.0f} tokens/s over {:.1f} s) -> {}",
                                 removed_note, rep.interrupted ? "interrupted" : "trained", rep.steps,
                                 rep.start_step ? fmt::format(" (resumed at {})", rep.start_step) : "", rep.train_loss,
                                 val, rep.tokens_per_s, rep.seconds, rep.checkpoint.string())};
  result.interrupted = rep.interrupted;
  return result;
}

}  // namespace lathe::pipeline
