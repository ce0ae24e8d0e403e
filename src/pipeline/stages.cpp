#include "lathe/io/json_file.hpp"
#include "lathe/pipeline/stages.hpp"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <algorithm>
#include <optional>

#include "lathe/core/error.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/trainer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/pipeline/provenance.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using recipe::shard_dir;
using recipe::tokenizer_path;

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

/// A stage whose inputs changed may not rerun under a trained run: its checkpoints would then
/// hold a model of other inputs than the directory's tokenizer or shards.
void refuse_if_trained(const recipe::Recipe& r, const char* stage, const std::vector<std::string>& diff) {
  const auto ckpts = train::list_checkpoints(recipe::checkpoint_dir(r));
  if (ckpts.empty()) return;
  throw Error(fmt::format("the {} stage's inputs changed since the run in {} was trained ({}); rerunning it would "
                          "leave checkpoints made from other inputs: start over with --force, or use another "
                          "run.out_dir",
                          stage, r.run.out_dir, summarize(diff)));
}

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

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

StageResult run_tokenizer_stage(const recipe::Recipe& r, bool force, const Progress& progress) {
  const auto path = tokenizer_path(r);
  if (!r.tokenizer.path.empty()) {
    auto tok = tokenizer::load_tokenizer(path, train::tokenizer_load_options(r));
    return {true, fmt::format("using {} ({} tokens)", path.string(), tok->vocab_size())};
  }
  RunLock lock(r);
  const auto& sources = r.tokenizer.train_files.empty() ? r.data.train_files : r.tokenizer.train_files;
  const auto files = io::expand_inputs(sources);
  MadeFrom made_from = recipe_part(r, {"tokenizer.", "data.format", "data.jsonl_field"});
  add_files(made_from, files);
  const auto fresh = freshness(force, path, read_stage_record(r.run.out_dir, "tokenizer"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} was made from these inputs", path.string())};
  if (!fresh.diff.empty()) refuse_if_trained(r, "tokenizer", fresh.diff);
  check_not_input(r, {path});
  io::claim(path);  // before the training: a file of the user's there stops the stage at once
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<tokenizer::Tokenizer> trained;
  if (r.tokenizer.type == recipe::TokenizerType::Bpe) {
    tokenizer::BpeTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.pre_tokenizer = r.tokenizer.pre_tokenizer;
    o.threads = static_cast<int>(r.run.threads);
    o.format = r.data.format;
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::Bpe>(tokenizer::train_byte_bpe(files, o));
  } else {
    tokenizer::WordPieceTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.wordpiece.lowercase = o.wordpiece.strip_accents = r.tokenizer.lowercase;
    o.threads = static_cast<int>(r.run.threads);
    o.format = r.data.format;
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::WordPiece>(tokenizer::train_wordpiece(files, o));
  }
  trained->save(path);
  write_stage_record(r.run.out_dir, "tokenizer", made_from);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {false, fmt::format("{}trained a {}-token {} tokenizer on {} file(s) in {:.1f} s -> {}", fresh.why(),
                             trained->vocab_size(),
                             recipe::enum_name(r.tokenizer.type), files.size(), s, path.string())};
}

StageResult run_data_stage(const recipe::Recipe& r, bool force, const Progress& progress) {
  const auto tok_path = tokenizer_path(r);
  if (!fs::exists(tok_path))
    throw Error("the data stage needs the tokenizer '" + tok_path.string() + "'; run the tokenizer stage first");
  const auto tok = tokenizer::load_tokenizer(tok_path, train::tokenizer_load_options(r));
  RunLock lock(r);
  const auto dir = shard_dir(r);
  auto train_files = io::expand_inputs(r.data.train_files);
  const auto val_files = r.data.val_files.empty() ? std::vector<fs::path>{} : io::expand_inputs(r.data.val_files);
  MadeFrom made_from = recipe_part(r, {"data.train_files", "data.val_files", "data.val_fraction", "data.format",
                                       "data.jsonl_field", "data.shard_tokens", "run.seed"});
  add_files(made_from, train_files);
  add_files(made_from, val_files);
  made_from["tokenizer"] = hex(tok->fingerprint());
  std::optional<MadeFrom> recorded;
  if (auto index = io::read_json_if_valid(dir / "index.json"); index && index->contains("made_from"))
    recorded = from_json((*index)["made_from"]);
  const auto fresh = freshness(force, dir / "index.json", recorded, made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} holds the shards of these inputs", dir.string())};
  if (!fresh.diff.empty()) refuse_if_trained(r, "data", fresh.diff);
  refuse_if_shards_used(r);
  data::PrepareOptions o;
  o.train_files = std::move(train_files);
  o.val_files = val_files;
  o.made_from = to_json(made_from);
  o.val_fraction = r.data.val_fraction;
  o.format = r.data.format;
  o.jsonl_field = r.data.jsonl_field;
  o.shard_dir = dir;
  o.shard_tokens = static_cast<uint64_t>(r.data.shard_tokens);
  o.seed = static_cast<uint64_t>(r.run.seed);
  o.threads = static_cast<int>(r.run.threads);
  o.progress = progress;
  check_not_input(r, {dir / "index.json"});
  const auto rep = data::prepare_shards(*tok, o);
  return {false, fmt::format("{}{}{:.1f} MB -> {} train tokens ({} documents, {} shard(s)), {} val tokens ({} "
                             "documents) in {:.1f} s ({:.1f} MB/s) -> {}",
                             fresh.why(), rep.removed.empty() ? "" : fmt::format("removed the {} file(s) of the earlier prepare; ",
                                                                     rep.removed.size()),
                             static_cast<double>(rep.bytes) / 1e6, rep.train_tokens, rep.train_documents,
                             rep.train_shards.size(), rep.val_tokens, rep.val_documents, rep.seconds,
                             rep.seconds > 0 ? static_cast<double>(rep.bytes) / 1e6 / rep.seconds : 0.0, dir.string())};
}

}  // namespace lathe::pipeline
