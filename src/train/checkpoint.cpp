// Atomic checkpoint directories.

#include "lathe/train/checkpoint.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/safetensors.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double number_or(const json& j, const char* key, double fallback) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

int64_t step_of(const fs::path& dir) {
  const auto name = dir.filename().string();
  try {
    return std::stoll(name.substr(5));
  } catch (...) {
    return -1;
  }
}

}  // namespace

fs::path save_checkpoint(const fs::path& root, const models::AnyModel& model,
                         const std::vector<std::pair<std::string, at::Tensor>>& trainer_tensors,
                         const TrainerState& s) {
  fs::create_directories(root);
  const auto name = fmt::format("step_{:08d}", s.step);
  const auto final_dir = root / name;
  const auto tmp = root / fmt::format(".tmp-{}-{}", name, getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  models::save_model(model, tmp / "model.safetensors");
  io::save_safetensors(tmp / "trainer.safetensors", trainer_tensors);
  json meta = {{"format", kCheckpointFormat},
               {"version", kCheckpointVersion},
               {"step", s.step},
               {"tokens", s.tokens},
               {"skipped_steps", s.skipped_steps},
               {"best_val_loss", number_or_null(s.best_val_loss)},
               {"val_loss", number_or_null(s.val_loss)},
               {"loss_scale", s.loss_scale},
               {"good_steps", s.good_steps},
               {"elapsed_s", s.elapsed_s},
               {"model_kind", model.kind_name()},
               {"files",
                {{"model.safetensors", fs::file_size(tmp / "model.safetensors")},
                 {"trainer.safetensors", fs::file_size(tmp / "trainer.safetensors")}}},
               {"recipe", s.recipe_yaml}};
  io::write_file_atomic(tmp / "meta.json", meta.dump(2) + "\n");
  io::fsync_path(tmp);
  // A checkpoint of the same step (a re-run) is replaced: the new one is complete before the
  // old one goes.
  if (fs::exists(final_dir)) {
    const auto old = root / fmt::format(".old-{}-{}", name, getpid());
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old);
  } else {
    fs::rename(tmp, final_dir);
  }
  io::fsync_path(root);
  return final_dir;
}

CheckpointData load_checkpoint(const fs::path& dir) {
  const auto meta_path = dir / "meta.json";
  std::ifstream in(meta_path);
  if (!in) throw Error(meta_path.string() + ": missing (not a checkpoint directory, or an incomplete one)");
  json meta = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.is_object()) throw Error(meta_path.string() + ": not valid JSON");
  if (meta.value("format", "") != kCheckpointFormat)
    throw Error(meta_path.string() + ": format is not " + std::string(kCheckpointFormat));
  if (meta.value("version", 0) > kCheckpointVersion)
    throw Error(meta_path.string() + ": version " + meta["version"].dump() + " is newer than this lathe reads (" +
                std::to_string(kCheckpointVersion) + ")");
  for (const char* file : {"model.safetensors", "trainer.safetensors"}) {
    const auto path = dir / file;
    if (!fs::exists(path)) throw Error(path.string() + ": missing");
    const auto want = meta["files"].value(file, uint64_t{0});
    if (fs::file_size(path) != want)
      throw Error(path.string() + ": " + std::to_string(fs::file_size(path)) + " bytes, meta.json recorded " +
                  std::to_string(want) + " (truncated or overwritten)");
  }
  CheckpointData c;
  c.dir = dir;
  try {
    c.state.step = meta.at("step").get<int64_t>();
    c.state.tokens = meta.value("tokens", int64_t{0});
    c.state.skipped_steps = meta.value("skipped_steps", int64_t{0});
    c.state.best_val_loss = number_or(meta, "best_val_loss", std::numeric_limits<double>::infinity());
    c.state.val_loss = number_or(meta, "val_loss", std::numeric_limits<double>::quiet_NaN());
    c.state.loss_scale = number_or(meta, "loss_scale", 65536.0);
    c.state.good_steps = meta.value("good_steps", int64_t{0});
    c.state.elapsed_s = number_or(meta, "elapsed_s", 0.0);
    c.state.recipe_yaml = meta.value("recipe", "");
  } catch (const json::exception& e) {
    throw Error(meta_path.string() + ": " + e.what());
  }
  c.model = models::load_model(dir / "model.safetensors");
  for (auto& [name, t] : io::load_safetensors(dir / "trainer.safetensors").tensors) c.tensors[name] = t;
  return c;
}

std::vector<fs::path> list_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().starts_with("step_") && step_of(e.path()) >= 0)
      out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return out;
}

std::optional<CheckpointData> load_latest_checkpoint(const fs::path& root,
                                                     const std::function<void(const std::string&)>& warn) {
  auto all = list_checkpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return load_checkpoint(*it);
    } catch (const std::exception& e) {
      if (warn) warn("warning: skipping checkpoint " + it->string() + ": " + e.what());
    }
  }
  return std::nullopt;
}

void prune_checkpoints(const fs::path& root, int64_t keep_last, bool keep_best) {
  auto all = list_checkpoints(root);
  std::optional<fs::path> best;
  if (keep_best) {
    double best_loss = std::numeric_limits<double>::infinity();
    for (const auto& dir : all) {
      std::ifstream in(dir / "meta.json");
      auto meta = json::parse(in, nullptr, false);
      if (meta.is_discarded()) continue;
      const double v = number_or(meta, "val_loss", std::numeric_limits<double>::quiet_NaN());
      if (std::isfinite(v) && v < best_loss) {
        best_loss = v;
        best = dir;
      }
    }
  }
  const auto keep_from = all.size() > static_cast<std::size_t>(keep_last) ? all.size() - keep_last : 0;
  for (std::size_t i = 0; i < keep_from; ++i)
    if (!best || all[i] != *best) fs::remove_all(all[i]);
  // Leftovers of a write that was killed halfway.
  for (const auto& e : fs::directory_iterator(root)) {
    const auto n = e.path().filename().string();
    if ((n.starts_with(".tmp-step_") || n.starts_with(".old-step_")) && !n.ends_with("-" + std::to_string(getpid())))
      fs::remove_all(e.path());
  }
}

}  // namespace lathe::train
