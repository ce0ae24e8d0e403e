// The data stage: tokenizes the corpus into train / val shards.

#include <optional>

#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/run_dir.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;

namespace {

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

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
