// Where a run's artifacts live, derived from its recipe (every stage and command agrees).
#pragma once

#include <filesystem>
#include <optional>

#include "lathe/recipe/recipe.hpp"

namespace lathe::recipe {

/// tokenizer.path, else <out_dir>/tokenizer.json.
inline std::filesystem::path tokenizer_path(const Recipe& r) {
  return r.tokenizer.path.empty() ? std::filesystem::path(r.run.out_dir) / "tokenizer.json"
                                  : std::filesystem::path(r.tokenizer.path);
}

/// data.shard_dir, else <out_dir>/shards.
inline std::filesystem::path shard_dir(const Recipe& r) {
  return r.data.shard_dir.empty() ? std::filesystem::path(r.run.out_dir) / "shards"
                                  : std::filesystem::path(r.data.shard_dir);
}

/// <out_dir>/checkpoints.
inline std::filesystem::path checkpoint_dir(const Recipe& r) {
  return std::filesystem::path(r.run.out_dir) / "checkpoints";
}

/// <out_dir>/pruned: the pruned model (model.safetensors), its one-shot state before the
/// fine-tune (oneshot.safetensors) and the fine-tune's own run (finetune/).
inline std::filesystem::path pruned_dir(const Recipe& r) { return std::filesystem::path(r.run.out_dir) / "pruned"; }
/// <out_dir>/quantized: the quantize stage's model.
inline std::filesystem::path quantized_dir(const Recipe& r) { return std::filesystem::path(r.run.out_dir) / "quantized"; }

}  // namespace lathe::recipe
