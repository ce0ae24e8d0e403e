// What every stage shares: the run's locks, its inputs that nothing may overwrite, the shard
// directory's list of the runs trained on it, and the model a stage reads.

#include "lathe/io/json_file.hpp"
#include "lathe/pipeline/stages.hpp"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <algorithm>
#include <optional>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "gate.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using recipe::shard_dir;
using recipe::tokenizer_path;
using recipe::ModelSource;
using recipe::Stage;

struct RunLock::Impl {
  io::DirLock out;
  std::optional<io::DirLock> shards;
  explicit Impl(const recipe::Recipe& r) : out(r.run.out_dir) {
    std::error_code ec;
    const auto rel = fs::weakly_canonical(shard_dir(r), ec).lexically_relative(fs::weakly_canonical(r.run.out_dir, ec));
    if (rel.empty() || *rel.begin() == "..") shards.emplace(shard_dir(r));
  }
};

RunLock::RunLock(const recipe::Recipe& r) : impl_(std::make_unique<Impl>(r)) {}
RunLock::~RunLock() = default;

std::vector<fs::path> run_inputs(const recipe::Recipe& r) {
  std::vector<fs::path> out = r.sources;
  for (const auto* list : {&r.data.train_files, &r.data.val_files, &r.tokenizer.train_files}) {
    for (const auto& entry : *list) {
      try {
        for (auto& f : io::expand_inputs({entry})) out.push_back(std::move(f));
      } catch (const Error&) {
        // a missing input is the reading stage's error to report
      }
    }
  }
  if (!r.tokenizer.path.empty()) out.emplace_back(r.tokenizer.path);
  for (const auto* model : {&r.train.init_from, &r.prune.checkpoint, &r.quantize.checkpoint, &r.eval.checkpoint,
                            &r.export_.checkpoint})
    if (!model->empty()) out.emplace_back(*model);
  return out;
}

void check_not_input(const recipe::Recipe& r, const std::vector<fs::path>& outputs) {
  std::error_code ec;
  const auto inputs = run_inputs(r);
  for (const auto& output : outputs) {
    const auto out = fs::weakly_canonical(output, ec);
    for (const auto& input : inputs) {
      const auto in = fs::weakly_canonical(input, ec);
      const auto rel = in.lexically_relative(out);
      if (in == out || (!rel.empty() && *rel.begin() != ".." && rel.is_relative()))
        throw Error(fmt::format("refusing to write '{}': {} is an input of this run; lathe never writes over its "
                                "inputs (choose another run.out_dir, or move the input)",
                                output.string(), in == out ? "it" : "'" + input.string() + "' inside it"));
    }
  }
}

namespace {

constexpr const char* kTrainedRuns = "trained_runs.json";

fs::path canonical_or_self(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? p : c;
}

/// The checkpoint directories <shard_dir>/trained_runs.json lists.
std::vector<fs::path> shard_users(const fs::path& shard_dir) {
  std::vector<fs::path> out;
  const auto j = io::read_json_if_valid(shard_dir / kTrainedRuns);
  if (!j || !j->is_array()) return out;
  for (const auto& e : *j)
    if (e.is_string()) out.emplace_back(e.get<std::string>());
  return out;
}

}  // namespace

void record_shard_user(const recipe::Recipe& r) {
  const auto dir = shard_dir(r);
  if (!fs::exists(dir / "index.json")) return;  // not a shard directory (a classification run)
  const auto mine = canonical_or_self(recipe::checkpoint_dir(r));
  auto users = shard_users(dir);
  // Runs whose checkpoints are gone no longer hold the shards.
  std::erase_if(users, [](const fs::path& p) { return train::list_checkpoints(p).empty(); });
  if (std::find(users.begin(), users.end(), mine) == users.end()) users.push_back(mine);
  nlohmann::json j = nlohmann::json::array();
  for (const auto& u : users) j.push_back(u.string());
  const auto path = dir / kTrainedRuns;
  if (const auto old = io::read_json_if_valid(path); old && *old == j) return;
  io::claim(path);
  io::write_file_atomic(path, j.dump(2) + "\n");
}

void refuse_if_shards_used(const recipe::Recipe& r) {
  const auto dir = shard_dir(r);
  const auto mine = canonical_or_self(recipe::checkpoint_dir(r));
  for (const auto& user : shard_users(dir)) {
    if (canonical_or_self(user) == mine) continue;  // this run's own checkpoints: refuse_if_trained's case
    const auto ckpts = train::list_checkpoints(user);
    if (ckpts.empty()) continue;
    throw Error(fmt::format("the shards in {} were used to train the run whose checkpoints are in {} (newest: {}); "
                            "preparing them again with other inputs would change what that run was trained on: "
                            "set another data.shard_dir for this run, or remove that run's checkpoints first",
                            dir.string(), user.string(), ckpts.back().filename().string()));
  }
}

fs::path source_model(const recipe::Recipe& r, ModelSource source, Stage reader, const std::string& checkpoint) {
  if (source == ModelSource::Auto) {
    source = ModelSource::Checkpoint;
    const auto end = std::find(r.pipeline.begin(), r.pipeline.end(), reader);
    for (auto it = r.pipeline.begin(); it != end; ++it) {
      if (*it == Stage::Prune) source = ModelSource::Pruned;
      if (*it == Stage::Quantize) source = ModelSource::Quantized;
    }
  }
  switch (source) {
    case ModelSource::Pruned:
    case ModelSource::Quantized: {
      const bool pruned = source == ModelSource::Pruned;
      const auto path = (pruned ? recipe::pruned_dir(r) : recipe::quantized_dir(r)) / "model.safetensors";
      const char* stage = pruned ? "prune" : "quantize";
      if (!fs::exists(path))
        throw Error(fmt::format("no {} model at {}; run the {} stage first (lathe {} RECIPE)", enum_name(source),
                                path.string(), stage, stage));
      refuse_failed_output(path.parent_path(), fmt::format("the {} model {}", enum_name(source), path.string()));
      return path;
    }
    default: {
      if (checkpoint.empty()) return train::newest_checkpoint(r);
      if (!fs::exists(checkpoint))
        throw Error(fmt::format("{}.checkpoint: {} does not exist", enum_name(reader), checkpoint));
      refuse_model_of_failed_gate(checkpoint);  // a stage's output named by its path
      return checkpoint;
    }
  }
}

}  // namespace lathe::pipeline
