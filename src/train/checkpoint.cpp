// Atomic checkpoint directories.

#include "lathe/io/json_file.hpp"
#include "lathe/train/checkpoint.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/io/safetensors.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double number_or(const json& j, const char* key, double fallback) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

CheckpointFaultHook& fault_hook() {
  static CheckpointFaultHook hook;
  return hook;
}
void fault_point(std::string_view point) {
  if (fault_hook()) fault_hook()(point);
}

/// meta.json of a directory when it is a lathe checkpoint's; null otherwise.
json checkpoint_meta(const fs::path& dir) {
  auto meta = io::read_json_if_valid(dir / "meta.json");
  if (!meta || !meta->is_object() || meta->value("format", "") != kCheckpointFormat) return nullptr;
  return *meta;
}

int64_t step_of(const fs::path& dir) {
  static const std::regex name(R"(step_([0-9]{8,}))");
  std::smatch m;
  const auto n = dir.filename().string();
  if (!std::regex_match(n, m, name)) return -1;
  try {
    return std::stoll(m[1].str());
  } catch (const std::out_of_range&) {
    return -1;
  }
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}-{}-{}", getpid(),
                     std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffff, counter++);
}

/// Atomically swaps two directory entries (Linux renameat2 RENAME_EXCHANGE); false where the
/// file system does not support it.
bool exchange(const fs::path& a, const fs::path& b) {
#ifdef SYS_renameat2
  return ::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), 1 /*RENAME_EXCHANGE*/) == 0;
#else
  return false;
#endif
}

uint64_t tensor_bytes(const std::vector<TensorSpec>& specs) {
  uint64_t n = 0;
  for (const auto& spec : specs) {
    uint64_t numel = 1;
    for (const auto d : spec.shape) numel *= static_cast<uint64_t>(d);
    n += numel * c10::elementSize(spec.dtype);
  }
  return n;
}

}  // namespace

void set_checkpoint_fault_hook(CheckpointFaultHook hook) { fault_hook() = std::move(hook); }

bool is_checkpoint(const fs::path& dir) { return step_of(dir) >= 0 && checkpoint_meta(dir).is_object(); }

int64_t checkpoint_step(const fs::path& dir) { return step_of(dir); }

fs::path save_checkpoint(const fs::path& root, const models::AnyModel& model,
                         const std::vector<std::pair<std::string, at::Tensor>>& trainer_tensors,
                         const TrainerState& s) {
  return save_checkpoint(root, model, {}, TensorStream::of(trainer_tensors), s);
}

fs::path save_checkpoint(const fs::path& root, const models::AnyModel& model, const ValueSource& model_values,
                         const TensorStream& trainer, const TrainerState& s, const AdapterFiles* adapter) {
  fs::create_directories(root);
  const auto name = fmt::format("step_{:08d}", s.step);
  const auto final_dir = root / name;
  // Claimed before anything is written: a directory of the user's with this name stops the save.
  io::claim(final_dir);
  const auto tmp = root / fmt::format(".tmp-{}-{}", name, unique_suffix());
  io::claim(tmp);
  try {
    fs::create_directories(tmp);
    const char* model_file = adapter ? "adapter_model.safetensors" : "model.safetensors";
    if (adapter) adapters::save_peft(model, tmp, adapter->options, adapter->base);
    else models::save_model(model, tmp / model_file, model_values);
    fault_point("model");
    io::save_safetensors(tmp / "trainer.safetensors", trainer);
    fault_point("trainer");
    json meta = {{"format", kCheckpointFormat},
                 {"version", kCheckpointVersion},
                 {"run_id", s.run_id},
                 {"step", s.step},
                 {"tokens", s.tokens},
                 {"skipped_steps", s.skipped_steps},
                 {"best_val_loss", number_or_null(s.best_val_loss)},
                 {"val_loss", number_or_null(s.val_loss)},
                 {"loss_scale", s.loss_scale},
                 {"good_steps", s.good_steps},
                 {"overflow_steps", s.overflow_steps},
                 {"elapsed_s", s.elapsed_s},
                 {"model_kind", model.kind_name()},
                 {"files",
                  {{model_file, fs::file_size(tmp / model_file)},
                   {"trainer.safetensors", fs::file_size(tmp / "trainer.safetensors")}}},
                 {"recipe", s.recipe_yaml}};
    // Recorded too: without its config an adapter directory is none.
    if (adapter) meta["files"]["adapter_config.json"] = fs::file_size(tmp / "adapter_config.json");
    io::write_file_atomic(tmp / "meta.json", meta.dump(2) + "\n");
    io::fsync_path(tmp);
    fault_point("complete");
  } catch (const std::exception& e) {
    // A failed save leaves nothing behind; the checkpoints already written stay as they are.
    std::error_code ec;
    try {
      io::remove_owned(tmp);
    } catch (const std::exception&) {
      fs::remove_all(tmp, ec);  // the manifest could not be updated (a full disk): the name stays listed
    }
    const auto space = fs::space(root, ec);
    const uint64_t need =
        tensor_bytes(trainer.specs) + (adapter ? 0 : static_cast<uint64_t>(models::parameter_count(*model.module())) * 4);
    throw Error(fmt::format("cannot write checkpoint {}: {}; it needs about {:.1f} MB and {} has {:.1f} MB free. The "
                            "earlier checkpoints are intact",
                            final_dir.string(), e.what(), static_cast<double>(need) / 1e6, root.string(),
                            ec ? 0.0 : static_cast<double>(space.available) / 1e6));
  }
  if (!fs::exists(final_dir)) {
    fs::rename(tmp, final_dir);
    fault_point("renamed");
  } else if (exchange(tmp, final_dir)) {
    // A checkpoint of the same step (a re-run) is replaced by swapping the two directories in
    // one step: at every instant step_N is a complete checkpoint, the old or the new one.
    fault_point("exchanged");
  } else {
    // No atomic swap here: move the old one aside first. recover_checkpoints() puts it back if
    // the process dies between the two renames.
    const auto old = root / fmt::format(".old-{}-{}", name, unique_suffix());
    io::claim(old);
    fs::rename(final_dir, old);
    fault_point("moved_aside");
    fs::rename(tmp, final_dir);
    fault_point("renamed");
    io::remove_owned(old);
  }
  io::remove_owned(tmp);
  io::fsync_path(root);
  return final_dir;
}

void recover_checkpoints(const fs::path& root) {
  if (!fs::is_directory(root)) return;
  for (const auto& p : io::owned_entries(root)) {
    const auto n = p.filename().string();
    if (!n.starts_with(".old-step_")) continue;
    // .old-step_N-<suffix>: the complete step_N moved aside by an interrupted replacement.
    const auto name = n.substr(5, n.find('-', 5) - 5);
    if (!fs::exists(root / name) && checkpoint_meta(p).is_object()) fs::rename(p, root / name);
  }
  for (const auto& p : io::owned_entries(root)) {
    const auto n = p.filename().string();
    if (n.starts_with(".tmp-step_") || n.starts_with(".old-step_")) io::remove_owned(p);
  }
}

std::string checkpoint_problem(const fs::path& dir) {
  const auto meta_path = dir / "meta.json";
  if (!fs::exists(meta_path)) return meta_path.string() + ": missing (not a checkpoint directory, or an incomplete one)";
  const auto read = io::read_json_if_valid(meta_path);
  if (!read || !read->is_object()) return meta_path.string() + ": not valid JSON";
  const json& meta = *read;
  if (meta.value("format", "") != kCheckpointFormat)
    return meta_path.string() + ": format is not " + std::string(kCheckpointFormat);
  if (meta.value("version", 0) > kCheckpointVersion)
    return meta_path.string() + ": version " + meta["version"].dump() + " is newer than this lathe reads (" +
           std::to_string(kCheckpointVersion) + ")";
  const bool adapter = meta.contains("files") && meta["files"].is_object() &&
                       meta["files"].contains("adapter_model.safetensors");
  std::vector<const char*> files{"model.safetensors", "trainer.safetensors"};
  if (adapter) files = {"adapter_model.safetensors", "adapter_config.json", "trainer.safetensors"};
  for (const char* file : files) {
    const auto path = dir / file;
    if (!fs::exists(path)) return path.string() + ": missing";
    const auto want = meta.contains("files") && meta["files"].is_object() ? meta["files"].value(file, uint64_t{0}) : 0;
    if (fs::file_size(path) != want)
      return path.string() + ": " + std::to_string(fs::file_size(path)) + " bytes, meta.json recorded " +
             std::to_string(want) + " (truncated or overwritten)";
  }
  return {};
}

CheckpointData load_checkpoint(const fs::path& dir) {
  if (auto problem = checkpoint_problem(dir); !problem.empty()) throw Error(problem);
  const auto meta_path = dir / "meta.json";
  const json meta = io::read_json(meta_path);
  CheckpointData c;
  c.dir = dir;
  try {
    c.state.step = meta.at("step").get<int64_t>();
    c.state.run_id = meta.value("run_id", "");
    c.state.tokens = meta.value("tokens", int64_t{0});
    c.state.skipped_steps = meta.value("skipped_steps", int64_t{0});
    c.state.best_val_loss = number_or(meta, "best_val_loss", std::numeric_limits<double>::infinity());
    c.state.val_loss = number_or(meta, "val_loss", std::numeric_limits<double>::quiet_NaN());
    c.state.loss_scale = number_or(meta, "loss_scale", 65536.0);
    c.state.good_steps = meta.value("good_steps", int64_t{0});
    c.state.overflow_steps = meta.value("overflow_steps", int64_t{0});
    c.state.elapsed_s = number_or(meta, "elapsed_s", 0.0);
    c.state.recipe_yaml = meta.value("recipe", "");
  } catch (const json::exception& e) {
    throw Error(meta_path.string() + ": " + e.what());
  }
  // Mapped: a rank reads the pages of the parts it keeps (a shard of each tensor) and nothing else.
  // Adapters are read by the trainer onto the base it builds.
  c.adapters = meta.contains("files") && meta["files"].is_object() && meta["files"].contains("adapter_model.safetensors");
  if (c.adapters) adapters::read_peft_config(dir);  // refused here, naming the file, when unreadable
  else c.model = models::load_model(dir / "model.safetensors", std::nullopt, 0, io::Read::Map);
  for (auto& [name, t] : io::load_safetensors(dir / "trainer.safetensors", io::Read::Map).tensors) c.tensors[name] = t;
  return c;
}

std::vector<fs::path> list_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && is_checkpoint(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return out;
}

std::vector<fs::path> damaged_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& p : io::owned_entries(root))
    if (step_of(p) >= 0 && fs::is_directory(p) && !is_checkpoint(p)) out.push_back(p);
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return out;
}

std::string checkpoint_run_id(const fs::path& dir) {
  const auto meta = checkpoint_meta(dir);
  return meta.is_object() ? meta.value("run_id", "") : "";
}

std::optional<CheckpointData> load_latest_checkpoint(const fs::path& root,
                                                     const std::function<void(const std::string&)>& warn) {
  auto all = list_checkpoints(root);
  for (const auto& dir : damaged_checkpoints(root)) all.push_back(dir);
  std::stable_sort(all.begin(), all.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return load_checkpoint(*it);
    } catch (const std::exception& e) {
      if (warn) warn("warning: skipping checkpoint " + it->string() + ": " + e.what());
    }
  }
  return std::nullopt;
}

std::vector<fs::path> prune_checkpoints(const fs::path& root, const std::string& run_id, int64_t keep_last,
                                        bool keep_best) {
  std::vector<fs::path> mine;
  for (const auto& dir : list_checkpoints(root))
    if (checkpoint_run_id(dir) == run_id) mine.push_back(dir);
  std::optional<fs::path> best;
  if (keep_best) {
    double best_loss = std::numeric_limits<double>::infinity();
    for (const auto& dir : mine) {
      const double v = number_or(checkpoint_meta(dir), "val_loss", std::numeric_limits<double>::quiet_NaN());
      if (std::isfinite(v) && v < best_loss) {
        best_loss = v;
        best = dir;
      }
    }
  }
  std::vector<fs::path> removed;
  const auto keep_from = mine.size() > static_cast<std::size_t>(keep_last) ? mine.size() - keep_last : 0;
  for (std::size_t i = 0; i < keep_from; ++i)
    if ((!best || mine[i] != *best) && io::remove_owned(mine[i])) removed.push_back(mine[i]);
  return removed;
}

}  // namespace lathe::train
