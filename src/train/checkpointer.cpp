// The trainer's checkpoint schedule and contents, and the resume policy.

#include "lathe/train/checkpointer.hpp"

#include <chrono>
#include <cmath>
#include <random>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/train/initial_model.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/train/task.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kResumeWayOut =
    "resume with the model section it was trained with, or start a new run (--force, or another run.out_dir)";

std::vector<std::pair<std::string, at::Tensor>> rng_state(const at::Device& device) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto cpu = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard lock(cpu.mutex());
    out.emplace_back("rng.cpu", cpu.get_state());
  }
  if (device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard lock(gen.mutex());
    out.emplace_back("rng.cuda", gen.get_state());
  }
  return out;
}

bool same_dir(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

/// With `resume` chosen, the other checkpoints under `root` that would mix two runs or
/// interleave two histories.
void refuse_neighbours(const fs::path& root, const std::vector<fs::path>& existing, const CheckpointData& resume) {
  std::vector<std::string> later, foreign;
  for (const auto& dir : existing) {
    const auto id = checkpoint_run_id(dir);
    if (!resume.state.run_id.empty() && id != resume.state.run_id) foreign.push_back(dir.filename().string());
    else if (!same_dir(dir, resume.dir) && checkpoint_step(dir) > resume.state.step &&
             checkpoint_problem(dir).empty())  // a damaged later one was warned about and is replaced
      later.push_back(dir.filename().string());
  }
  if (!foreign.empty())
    throw Error(fmt::format("{} holds checkpoints of another run ({}); resuming {} there would mix two runs: "
                            "start over with --force, or choose another run.out_dir",
                            root.string(), fmt::join(foreign, ", "), resume.dir.string()));
  if (!later.empty())
    throw Error(fmt::format("{} holds checkpoints later than {} ({}); resuming from it would interleave two "
                            "histories: resume the newest (--resume auto), or pass --force to remove the later "
                            "ones",
                            root.string(), resume.dir.string(), fmt::join(later, ", ")));
}

}  // namespace

Checkpointer::Checkpointer(CheckpointerOptions options, const recipe::TrainConfig& train)
    : o_(std::move(options)), train_(train) {}

bool Checkpointer::due(int64_t step, bool last, bool new_best) const {
  return (train_.save_every > 0 && step % train_.save_every == 0) || last || (new_best && train_.keep_best);
}

fs::path Checkpointer::save(const models::AnyModel& model, const ValueSource& model_values, TensorStream optimizer,
                            const Sparsity* sparsity, TrainerState state, bool validated_now) {
  // The streams may be collectives (fsdp's blocks, the sharded optimizer state gathered from
  // every rank): every rank runs each one exactly once, in this order, whatever happens here.
  bool model_ran = false, optimizer_ran = false;
  auto drain = [&] {
    const ValueSink discard = [](const std::string&, const at::Tensor&) {};
    if (!model_ran && model_values) model_values(discard);
    if (!optimizer_ran && optimizer.values) optimizer.values(discard);
  };
  if (!o_.writes) {
    drain();
    last_ = state.step;
    return o_.root / fmt::format("step_{:08d}", state.step);  // rank 0's
  }
  const auto t0 = Clock::now();
  ValueSource model_stream;
  if (model_values)
    model_stream = [&](const ValueSink& sink) {
      model_ran = true;
      model_values(sink);
    };
  TensorStream trainer;
  for (const auto& spec : optimizer.specs) trainer.specs.push_back({"optim." + spec.name, spec.dtype, spec.shape});
  trainer.values = [&](const ValueSink& sink) {
    optimizer_ran = true;
    if (optimizer.values) optimizer.values([&](const std::string& name, const at::Tensor& t) { sink("optim." + name, t); });
  };
  auto rest = rng_state(o_.device);
  if (sparsity)
    for (const auto& [name, mask] : sparsity->masks) rest.emplace_back("mask." + name, mask);
  trainer = trainer.then(TensorStream::of(std::move(rest)));
  if (!validated_now) state.val_loss = std::nan("");  // meta.json's val_loss is this step's
  fs::path dir;
  try {
    dir = save_checkpoint(o_.root, model, model_stream, trainer, state, o_.adapter ? &*o_.adapter : nullptr);
  } catch (...) {
    drain();
    throw;
  }
  prune_checkpoints(o_.root, state.run_id, train_.keep_last, train_.keep_best);
  last_ = state.step;
  seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  return dir;
}

std::optional<CheckpointData> choose_resume(const fs::path& root, const std::string& how,
                                            const std::function<void(const std::string&)>& warn) {
  std::optional<CheckpointData> resume;
  std::vector<std::string> unreadable;
  if (how == "auto") {
    resume = load_latest_checkpoint(root, [&](const std::string& w) {
      warn(w);
      unreadable.push_back(w.substr(w.find("checkpoint ") + 11));
    });
  } else if (how != "none") {
    resume = load_checkpoint(how);
  }
  // One run per out_dir: checkpoints of another run, or later ones of this run that resuming
  // from an earlier step would interleave with, stop the run before anything is written.
  const auto existing = list_checkpoints(root);
  // Checkpoints that all fail to load are refused, not passed over: a new run would start
  // from step 0 beside them and the user would never learn that the earlier run was lost.
  if (!resume && !unreadable.empty())
    throw Error(fmt::format("{} holds checkpoints, but none of them loads ({}): move them away, start over with "
                            "--force, or choose another run.out_dir",
                            root.string(), fmt::join(unreadable, "; ")));
  if (!resume && !existing.empty())
    throw Error(fmt::format("{} holds the checkpoints of an earlier run (newest {}) and train.resume is none: "
                            "resume it (--resume auto), start over with --force (removes that run's checkpoints "
                            "and metrics), or choose another run.out_dir",
                            root.string(), existing.back().filename().string()));
  if (resume) refuse_neighbours(root, existing, *resume);
  return resume;
}

models::DeferredModel resumed_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok,
                                    const CheckpointData& c) {
  if (c.model.kind() != model_kind(r.train.task))
    throw Error(c.dir.string() + ": holds a " + c.model.kind_name() + " model, but train.task is " +
                std::string(recipe::enum_name(r.train.task)));
  return adopt(r, tok, {c.model, models::parameter_values(c.model)}, "the checkpoint " + c.dir.string(),
               kResumeWayOut);
}

namespace {

/// The keys under `prefix` (but `except`) whose values differ between a checkpoint's recipe and
/// `now`, as "key: then -> now".
std::vector<std::string> changed_keys(const fs::path& dir, const recipe::Recipe& now, std::string_view prefix,
                                      std::string_view except) {
  std::vector<std::string> changed;
  const auto meta = io::read_json_if_valid(dir / "meta.json");
  if (!meta || !meta->is_object() || !meta->contains("recipe") || !(*meta)["recipe"].is_string()) return changed;
  std::vector<recipe::KeyDoc> before;
  try {
    before = recipe::recipe_keys(recipe::parse_recipe((*meta)["recipe"].get<std::string>(), "the checkpoint's recipe"));
  } catch (const std::exception&) {
    return changed;  // a recipe of another lathe version
  }
  const auto after = recipe::recipe_keys(now);
  for (std::size_t i = 0; i < before.size() && i < after.size(); ++i)
    if (before[i].key == after[i].key && before[i].key.starts_with(prefix) && before[i].key != except &&
        before[i].value != after[i].value)
      changed.push_back(fmt::format("{}: {} -> {}", after[i].key, before[i].value, after[i].value));
  return changed;
}

}  // namespace

void check_checkpoint_model(const recipe::Recipe& r, const fs::path& dir) {
  if (adapters::is_adapter_dir(dir)) {  // the adapters' settings and base; their shapes when they load
    std::string problem = r.adapters.on() ? adapters::resume_problem(
                                                dir, r.adapters, fs::absolute(r.train.init_from).lexically_normal().string())
                                          : dir.string() + " holds adapters alone, and adapters.kind is none";
    if (const auto changed = changed_keys(dir, r, "adapters.", "adapters.dropout"); problem.empty() && !changed.empty())
      problem = fmt::format("{} was trained with other adapters ({})", dir.string(), fmt::join(changed, ", "));
    if (!problem.empty())
      throw Error(problem + ": resume with the settings that trained them, or start a new run (--force, or another "
                            "run.out_dir)");
    return;
  }
  if (r.adapters.on())
    throw Error(fmt::format("{} holds a whole model, but adapters.kind is {}: resume it without adapters, or start a "
                            "new run (--force, or another run.out_dir)",
                            dir.string(), enum_name(r.adapters.kind)));
  const auto tok = load_run_tokenizer(r, /*required=*/false);
  const auto kind = model_kind(r.train.task);
  adopt(r, tok.get(), models::open_model(dir, kind, r.model.num_labels), "the checkpoint " + dir.string(),
        kResumeWayOut);
}

std::string changed_settings(const std::string& checkpoint_recipe, const recipe::Recipe& now) {
  if (checkpoint_recipe.empty()) return {};
  std::vector<recipe::KeyDoc> before;
  try {
    before = recipe::recipe_keys(recipe::parse_recipe(checkpoint_recipe, "the checkpoint's recipe"));
  } catch (const std::exception&) {
    return {};  // a recipe of another lathe version: nothing to compare
  }
  const auto after = recipe::recipe_keys(now);
  std::vector<std::string> changed;
  for (std::size_t i = 0; i < before.size() && i < after.size(); ++i)
    if (before[i].key == after[i].key && before[i].value != after[i].value && before[i].key != "pipeline")
      changed.push_back(fmt::format("{}: {} -> {}", after[i].key, before[i].value, after[i].value));
  return changed.empty() ? "" : fmt::format("resuming with changed settings: {}", fmt::join(changed, ", "));
}

std::map<std::string, at::Tensor> checkpoint_part(const CheckpointData& c, const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : c.tensors)
    if (name.starts_with(prefix)) out[name.substr(prefix.size())] = t;
  return out;
}

void restore_rng(const std::map<std::string, at::Tensor>& t, const at::Device& device) {
  if (auto it = t.find("rng.cpu"); it != t.end()) {
    auto cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard lock(cpu.mutex());
    cpu.set_state(it->second);
  }
  if (auto it = t.find("rng.cuda"); it != t.end() && device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard lock(gen.mutex());
    gen.set_state(it->second);
  }
}

std::string new_run_id() {
  std::random_device rd;
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                     static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  return fmt::format("{:016x}", r);
}

}  // namespace lathe::train
