#include "lathe/pipeline/provenance.hpp"

#include <sys/stat.h>

#include <fstream>

#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/pipeline/registry.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

MadeFrom recipe_part(const recipe::Recipe& r, const std::vector<std::string_view>& prefixes) {
  MadeFrom out;
  for (const auto& k : recipe::recipe_keys(r))
    for (auto p : prefixes)
      if (k.key.starts_with(p)) out[k.key] = k.value;
  return out;
}

MadeFrom recipe_part(const recipe::Recipe& r, std::initializer_list<std::string_view> prefixes) {
  return recipe_part(r, std::vector<std::string_view>(prefixes));
}

namespace {
/// "<size> bytes, modified <ns since the epoch>", or "missing".
std::string file_state(const fs::path& f) {
  struct stat st {};
  if (::stat(f.c_str(), &st) != 0) return "missing";
  return fmt::format("{} bytes, modified {}.{:09d}", st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}
}  // namespace

void add_files(MadeFrom& record, const std::vector<fs::path>& files) {
  for (const auto& f : files) record["file " + f.string()] = file_state(f);
}

std::string checkpoint_identity(const fs::path& dir) {
  const auto meta = io::read_json_if_valid(dir / "meta.json");
  // A sharded Hugging Face checkpoint is known by its index (rewritten with its shards).
  auto weights = dir / "model.safetensors";
  if (!fs::exists(weights) && fs::exists(dir / "model.safetensors.index.json")) weights += ".index.json";
  // Adapters are known by their weights and by the base they adapt.
  std::string base;
  if (adapters::is_adapter_dir(dir)) {
    weights = dir / "adapter_model.safetensors";
    try {
      const fs::path b = adapters::read_peft_config(dir).base_model;
      base = ", on the base " + b.string() + ": " + (fs::is_directory(b) ? checkpoint_identity(b) : file_state(b));
    } catch (const Error& e) {
      base = std::string(", ") + e.what();
    }
  }
  return fmt::format("{} of run {} ({}: {}{})", dir.filename().string(),
                     meta && meta->is_object() ? meta->value("run_id", "?") : "?", weights.filename().string(),
                     file_state(weights), base);
}

void add_model(MadeFrom& record, const fs::path& model) {
  if (fs::is_directory(model)) record["model " + model.string()] = checkpoint_identity(model);
  else add_files(record, {model});
}

const StageReads& stage_reads(recipe::Stage stage) {
  const auto& spec = stage_spec(stage);
  if (!spec.reads)
    throw std::invalid_argument(fmt::format("stage_reads: the {} stage reads no model", recipe::enum_name(stage)));
  return *spec.reads;
}

MadeFrom task_data_record(const recipe::Recipe& r) {
  MadeFrom record = recipe_part(r, {"data.", "train.task", "train.batch_size", "model.num_labels", "run.seed"});
  if (recipe::renders_chats(r.train.task)) {
    // What decides which tokens are scored, and the template beside the tokenizer.
    record.merge(recipe_part(r, {"train.loss_on", "tokenizer.chat_template"}));
    const auto dir = recipe::tokenizer_path(r).parent_path();
    for (const auto* name : {"chat_template.jinja", "tokenizer_config.json"})
      if (fs::exists(dir / name)) add_files(record, {dir / name});
  }
  if (r.train.task == recipe::Task::Dpo) {
    // The rewards and the loss are measured against the reference, train.init_from.
    record.merge(recipe_part(r, {"train.dpo_", "train.init_from", "adapters."}));
    if (!r.train.init_from.empty()) add_model(record, r.train.init_from);
  }
  if (recipe::reads_example_files(r.train.task)) {
    // Examples are read from the files themselves, not from shards.
    for (const auto* list : {&r.data.train_files, &r.data.val_files}) {
      try {
        add_files(record, io::expand_inputs(*list));
      } catch (const Error&) {
        // a missing file is the reading stage's error to report
      }
    }
  } else {
    add_files(record, {recipe::shard_dir(r) / "index.json"});
  }
  return record;
}

MadeFrom stage_record(const recipe::Recipe& r, recipe::Stage stage, const fs::path& model) {
  const auto& reads = stage_reads(stage);
  MadeFrom record = recipe_part(r, reads.keys);
  record.merge(recipe_part(r, {"tokenizer."}));
  add_files(record, {recipe::tokenizer_path(r)});
  add_model(record, model);
  if (reads.task_data) record.merge(task_data_record(r));
  return record;
}

json to_json(const MadeFrom& record) { return json(record); }

std::optional<MadeFrom> from_json(const json& j) {
  if (!j.is_object()) return std::nullopt;
  MadeFrom out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) return std::nullopt;
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

std::vector<std::string> changes(const std::optional<MadeFrom>& recorded, const MadeFrom& now) {
  if (!recorded) return {"no record of what it was made from"};
  // A key that a newer lathe added, at its default value, made the output as before.
  static const MadeFrom defaults = recipe_part(recipe::Recipe{}, {""});
  std::vector<std::string> out;
  for (const auto& [k, v] : now) {
    auto it = recorded->find(k);
    if (it == recorded->end() && defaults.count(k) && defaults.at(k) == v) continue;
    if (it == recorded->end()) out.push_back(k.starts_with("file ") ? k + ": added" : k + ": new in the recipe");
    else if (it->second != v) out.push_back(k.starts_with("file ") ? k + ": changed" : fmt::format("{}: {} -> {}", k, it->second, v));
  }
  for (const auto& [k, v] : *recorded)
    if (!now.count(k)) out.push_back(k.starts_with("file ") ? k + ": no longer an input" : k + ": no longer set");
  return out;
}

std::optional<MadeFrom> read_stage_record(const fs::path& out_dir, const std::string& stage) {
  const auto j = io::read_json_if_valid(out_dir / "stages.json");
  if (!j || !j->is_object() || !j->contains(stage)) return std::nullopt;
  return from_json((*j)[stage]);
}

void write_stage_record(const fs::path& out_dir, const std::string& stage, const MadeFrom& record) {
  const auto path = out_dir / "stages.json";
  json j = json::object();
  if (auto old = io::read_json_if_valid(path); old && old->is_object()) j = std::move(*old);
  j[stage] = to_json(record);
  io::claim(path);
  io::write_file_atomic(path, j.dump(2) + "\n");
}

std::string Freshness::why() const { return diff.empty() ? "" : "inputs changed (" + summarize(diff) + "): "; }

Freshness freshness(bool force, const fs::path& output, const std::optional<MadeFrom>& recorded, const MadeFrom& now) {
  Freshness f;
  if (force || !fs::exists(output)) return f;
  f.diff = changes(recorded, now);
  f.up_to_date = f.diff.empty();
  return f;
}

std::string summarize(const std::vector<std::string>& items, std::size_t shown) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < shown; ++i) out += (i ? "; " : "") + items[i];
  if (items.size() > shown) out += fmt::format("; and {} more", items.size() - shown);
  return out;
}

}  // namespace lathe::pipeline
