// The training loop.

#include "lathe/train/trainer.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.hpp"
#include "lathe/data/loader.hpp"
#include "lathe/dist/grad_sync.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/store.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/metrics.hpp"
#include "lathe/train/optimizer.hpp"
#include "lathe/train/schedule.hpp"
#include "lathe/train/step_graph.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using recipe::Precision;

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int sig) { g_signal.store(sig); }

/// SIGTERM / SIGINT set a flag the loop checks after each step; the old handlers come back after.
class SignalScope {
 public:
  explicit SignalScope(bool active) : active_(active) {
    if (!active_) return;
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
  }
  ~SignalScope() {
    if (!active_) return;
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }
  int signal() const { return active_ ? g_signal.load() : 0; }

 private:
  bool active_;
  struct sigaction old_term_ {}, old_int_ {};
};

/// Autocast for bf16 / fp16 on the device type, restored on exit.
class AutocastScope {
 public:
  AutocastScope(Precision p, const at::Device& device) : type_(device.type()) {
    if (p == Precision::Fp32) return;
    active_ = true;
    was_enabled_ = at::autocast::is_autocast_enabled(type_);
    was_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, recipe::scalar_type(p));
  }
  ~AutocastScope() {
    if (!active_) return;
    at::autocast::set_autocast_enabled(type_, was_enabled_);
    at::autocast::set_autocast_dtype(type_, was_dtype_);
    at::autocast::clear_cache();
  }

 private:
  at::DeviceType type_;
  bool active_ = false, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// The first `n` validation batches of `data`, in eval mode without gradients (the model's
/// training flag is restored).
EvalAccumulator evaluate_batches(const models::AnyModel& model, const TaskData& data, int64_t n, Precision p,
                                 const at::Device& device) {
  const bool was_training = model.module()->is_training();
  model.module()->eval();
  EvalAccumulator acc;
  {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < n; ++i) {
      AutocastScope autocast(p, device);
      acc.add(model, to_device(data.val_batch(i), device));
    }
  }
  model.module()->train(was_training);
  return acc;
}

/// Dense matmul throughput of the device in the training dtype (FLOP/s): the denominator of
/// the MFU estimate, measured rather than looked up so that it is honest on any CPU. The best of
/// the kernels a step uses (at::linear, and at::mm where it is a fast path), at a size on the
/// kernels' plateau, best repetition: a smaller product under-measures the peak and the MFU then
/// reads above 100%.
double measure_peak_flops(const at::Device& device, Precision p) {
  const int64_t n = device.is_cuda() ? 4096 : 1024;
  const auto dtype = recipe::scalar_type(p);
  torch::NoGradGuard no_grad;
  // Constant operands: the throughput does not depend on the values, and the global random
  // streams (dropout, resume) stay untouched.
  auto a = at::full({n, n}, 0.5, at::TensorOptions(device).dtype(dtype));
  auto b = at::full({n, n}, 0.25, at::TensorOptions(device).dtype(dtype));
  auto sync = [&] {
    if (device.is_cuda()) (void)a.sum().item<float>();
  };
  std::vector<std::function<at::Tensor()>> kernels{[&] { return at::linear(a, b); }};
  // On the CPU, reduced-precision at::mm takes a slow reference path no training step uses.
  if (device.is_cuda() || p == Precision::Fp32) kernels.push_back([&] { return at::mm(a, b); });
  const int reps = device.is_cuda() ? 10 : 3;
  double best = std::numeric_limits<double>::infinity();
  for (const auto& kernel : kernels) {
    kernel();
    sync();
    for (int i = 0; i < reps; ++i) {
      const auto t0 = Clock::now();
      kernel();
      sync();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  return 2.0 * static_cast<double>(n * n * n) / std::max(best, 1e-9);
}

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

/// Non-embedding parameters and the attention term: 6 N + 12 L T d FLOPs per token
/// (forward + backward), the usual estimate.
double flops_per_token(const models::AnyModel& m, int64_t seq_len) {
  int64_t n = 0;
  for (const auto& p : nn::roles_of(*m.module()))
    if (p.role != nn::Role::Embedding) n += p.tensor.numel();
  const auto& o = m.options();
  return 6.0 * static_cast<double>(n) + 12.0 * static_cast<double>(o.n_layer * seq_len * o.d_model);
}

/// The model the recipe describes, freshly initialised.
models::AnyModel recipe_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok, int64_t min_vocab = 0) {
  const auto kind = model_kind(r.train.task);
  int64_t vocab = std::max<int64_t>(r.model.vocab_size, min_vocab);
  if (tok) vocab = std::max<int64_t>(vocab, tok->vocab_size());
  if (vocab <= 0)
    throw Error("no tokenizer at " + recipe::tokenizer_path(r).string() +
                " to size the vocabulary; run the tokenizer stage first (lathe tokenizer train RECIPE) or set "
                "model.vocab_size");
  const int64_t pad = tok ? tok->token_to_id("[PAD]") : -1;
  return models::make_model(kind, r.model.options(vocab, pad));
}

/// `loaded` (a checkpoint's or init_from's model) in the recipe's model: refused, naming every
/// key, when the architectures differ; otherwise the recipe's model with `loaded`'s weights, so
/// the options that may change (dropout) are the recipe's. `what` names the source in messages.
models::AnyModel adopt(const recipe::Recipe& r, const tokenizer::Tokenizer* tok, const models::AnyModel& loaded,
                       const std::string& what, const std::string& way_out) {
  // A vocabulary left to the tokenizer (model.vocab_size 0) takes the loaded model's size when
  // that is larger: a padded embedding stays padded.
  auto want = recipe_model(r, tok, r.model.vocab_size > 0 ? 0 : loaded.vocab_size());
  auto diffs = models::architecture_differences(loaded.arch(), loaded.options(), want.options());
  const auto have_labels = loaded.options().num_labels, want_labels = want.options().num_labels;
  if (loaded.kind == models::ModelKind::BertClassifier && have_labels != want_labels)
    diffs.push_back(fmt::format("model.num_labels: {} in the checkpoint, {} in the recipe", have_labels, want_labels));
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += "\n  " + d;
    throw Error(fmt::format("{} is another model than the recipe's:{}\n{}", what, list, way_out));
  }
  torch::NoGradGuard no_grad;
  auto src = loaded.module()->named_parameters(), dst = want.module()->named_parameters();
  for (auto& item : dst) item.value().copy_(src[item.key()]);
  auto src_buffers = loaded.module()->named_buffers();
  for (auto& item : want.module()->named_buffers())
    if (src_buffers.contains(item.key())) item.value().copy_(src_buffers[item.key()]);
  want.labels = loaded.labels;
  return want;
}

/// The recipe keys whose values differ from those the checkpoint was trained with (its
/// meta.json holds that recipe): what a resume applies anew, said when training starts.
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

constexpr const char* kResumeWayOut =
    "resume with the model section it was trained with, or start a new run (--force, or another run.out_dir)";

models::AnyModel build_model(const recipe::Recipe& r, const tokenizer::Tokenizer* tok) {
  const auto kind = model_kind(r.train.task);
  if (r.train.init_from.empty()) return recipe_model(r, tok);
  const fs::path from = r.train.init_from;
  if (!fs::exists(from)) throw Error("train.init_from: '" + from.string() + "' does not exist");
  auto loaded = models::load_model(from, kind, kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0);
  if (!models::quantized_layers(loaded).empty())
    throw Error("train.init_from: " + from.string() + " is a quantized model, which cannot be trained; start from "
                "the float checkpoint it was quantized from");
  return adopt(r, tok, loaded, "train.init_from " + from.string(),
               "set these model keys to the values of the weights you start from");
}

}  // namespace

tokenizer::LoadOptions tokenizer_load_options(const recipe::Recipe& r) {
  tokenizer::LoadOptions o;
  if (r.tokenizer.lowercase) o.lowercase = true;
  o.pattern = r.tokenizer.pattern;
  o.special_tokens = r.tokenizer.special_tokens;
  o.eos_token = r.tokenizer.eos_token;
  return o;
}

namespace {

std::unique_ptr<tokenizer::Tokenizer> load_run_tokenizer(const recipe::Recipe& r, bool required) {
  const auto path = recipe::tokenizer_path(r);
  if (!fs::exists(path)) {
    if (required)
      throw Error("the tokenizer " + path.string() + " does not exist; run the tokenizer stage first (lathe run "
                  "RECIPE, or lathe tokenizer train RECIPE)");
    return nullptr;
  }
  return tokenizer::load_tokenizer(path, tokenizer_load_options(r));
}

void check_vocab(const models::AnyModel& m, const tokenizer::Tokenizer& tok, const std::string& where) {
  if (tok.vocab_size() > m.vocab_size())
    throw Error(fmt::format("vocabulary mismatch: the tokenizer has {} tokens but the model{} has {} embedding rows",
                            tok.vocab_size(), where, m.vocab_size()));
}

std::string new_run_id() {
  std::random_device rd;
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                     static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  return fmt::format("{:016x}", r);
}

bool same_dir(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

/// Validation: owns its schedule (every train.eval_every steps and at the last step, when there
/// is validation data) and the time it takes.
class Validator {
 public:
  Validator(int64_t every, bool enabled) : every_(every), enabled_(enabled) {}
  bool due(int64_t step, bool last) const { return enabled_ && ((every_ > 0 && step % every_ == 0) || last); }
  bool done_at(int64_t step) const { return last_ == step; }
  double seconds() const { return seconds_; }

  /// Validates at `step`: records the loss in `state` (val_loss, best_val_loss) and returns the
  /// metrics and whether the loss is the best so far.
  std::pair<std::map<std::string, double>, bool> run(int64_t step, TrainerState& state,
                                                     const std::function<std::map<std::string, double>()>& evaluate) {
    const auto t0 = Clock::now();
    auto m = evaluate();
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    last_ = step;
    state.val_loss = m.count("loss") ? m["loss"] : std::nan("");
    const bool best = state.val_loss < state.best_val_loss;
    if (best) state.best_val_loss = state.val_loss;
    return {std::move(m), best};
  }

 private:
  int64_t every_;
  bool enabled_;
  int64_t last_ = -1;
  double seconds_ = 0;
};

/// Checkpoints: owns its schedule (every train.save_every steps, at the last step, and when a
/// validation finds a new best loss under keep_best), the retention and the time it takes.
class Checkpointer {
 public:
  Checkpointer(fs::path root, const recipe::TrainConfig& tr) : root_(std::move(root)), tr_(tr) {}
  bool due(int64_t step, bool last, bool new_best) const {
    return (tr_.save_every > 0 && step % tr_.save_every == 0) || last || (new_best && tr_.keep_best);
  }
  bool done_at(int64_t step) const { return last_ == step; }
  double seconds() const { return seconds_; }
  /// A rank that does not write: the checkpoint of `step` is rank 0's.
  fs::path skip(int64_t step) {
    last_ = step;
    return root_ / fmt::format("step_{:08d}", step);
  }

  /// Writes the checkpoint of `state` (its val_loss only when validated at this very step)
  /// and prunes old ones; returns its directory.
  fs::path save(const models::AnyModel& model, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                TrainerState state, bool validated_now) {
    const auto t0 = Clock::now();
    if (!validated_now) state.val_loss = std::nan("");  // meta.json's val_loss is this step's
    auto dir = save_checkpoint(root_, model, tensors, state);
    prune_checkpoints(root_, state.run_id, tr_.keep_last, tr_.keep_best);
    last_ = state.step;
    seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    return dir;
  }

 private:
  fs::path root_;
  const recipe::TrainConfig& tr_;
  int64_t last_ = -1;
  double seconds_ = 0;
};

/// Brings the weights and the optimizer state in line with the masks (after they change).
void hold_masks(const Sparsity& sparsity, const models::AnyModel& model, Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  auto params = model.module()->named_parameters();
  for (const auto& [name, mask] : sparsity.masks) {
    auto* p = params.find(name);
    if (!p) throw Error("a pruning mask names " + name + ", which the model does not have");
    if (p->sizes() != mask.sizes())
      throw Error(fmt::format("the pruning mask of {} has shape [{}], the parameter [{}]", name,
                              fmt::join(mask.sizes(), ", "), fmt::join(p->sizes(), ", ")));
    p->mul_(mask.to(p->device()));
  }
  optimizer.mask_state(sparsity.masks);
}

/// Every rank runs the same job: the same resolved recipe, tokenizer and shard index. Each
/// rank's fingerprints are gathered; any difference is an error on every rank, naming the ranks.
void check_same_job(dist::Communicator& comm, const recipe::Recipe& r, const tokenizer::Tokenizer* tok) {
  Fnv1a data_hash;
  const auto index = recipe::shard_dir(r) / "index.json";
  if (std::ifstream in(index, std::ios::binary); in) {
    std::ostringstream bytes;
    bytes << in.rdbuf();
    data_hash.add(bytes.str());
  }
  const uint64_t tok_hash = tok ? tok->fingerprint() : 0;
  const int64_t n = 3;
  auto mine = at::tensor({static_cast<int64_t>(recipe::recipe_hash(r)), static_cast<int64_t>(tok_hash),
                          static_cast<int64_t>(data_hash.value())},
                         at::TensorOptions(at::kLong))
                  .to(comm.device());
  auto all = at::empty({n * comm.size()}, mine.options());
  comm.all_gather(all, mine, "the check that every rank runs the same job")->wait();
  const auto host = all.cpu();
  const auto* v = host.data_ptr<int64_t>();
  static const char* what[] = {"recipe (resolved, with --set overrides)", "tokenizer", "shard index (data)"};
  std::vector<std::string> problems;
  for (int rank = 1; rank < comm.size(); ++rank)
    for (int64_t k = 0; k < n; ++k)
      if (v[rank * n + k] != v[k])
        problems.push_back(fmt::format("rank {} has another {} than rank 0 ({:016x} vs {:016x})", rank, what[k],
                                       static_cast<uint64_t>(v[rank * n + k]), static_cast<uint64_t>(v[k])));
  if (!problems.empty())
    throw Error(fmt::format("rank {}: the {} ranks do not run the same job: {}; start every rank with the same "
                            "recipe file and overrides, in the same directory",
                            comm.rank(), comm.size(), fmt::join(problems, "; ")));
}

/// Rank 0 chose the checkpoint to resume (or none); the other ranks load the same one from the
/// shared out_dir (or train.resume's path) and check that it is the same step.
std::optional<CheckpointData> agree_on_resume(dist::Communicator& comm, const fs::path& root, const std::string& how,
                                              std::optional<CheckpointData> resume) {
  auto t = at::full({1}, resume ? resume->state.step : int64_t{-1}, at::TensorOptions(comm.device()).dtype(at::kLong));
  comm.broadcast(t, 0, "the choice of the checkpoint to resume")->wait();
  const int64_t step = t.cpu().item<int64_t>();
  if (comm.rank() == 0) return resume;
  if (step < 0) return std::nullopt;
  if (how != "auto" && how != "none") {
    auto data = load_checkpoint(how);
    if (data.state.step == step) return data;
  } else {
    for (const auto& dir : list_checkpoints(root))
      if (checkpoint_step(dir) == step) return load_checkpoint(dir);
  }
  throw Error(fmt::format("rank {}: rank 0 resumes from step {}, which this rank does not find in {}: run.out_dir "
                          "must be a directory every rank shares",
                          comm.rank(), step, how != "auto" && how != "none" ? how : root.string()));
}

/// The sharded optimizer's state from a checkpoint's whole-parameter state: each segment's
/// part of every tensor ("exp_avg.<param>" -> "exp_avg.<param>@<offset>"), the step as it is.
std::map<std::string, at::Tensor> shard_state(const std::map<std::string, at::Tensor>& full,
                                              const std::vector<dist::Segment>& segments) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : full) {
    const auto dot = name.find('.');
    const auto kind = name.substr(0, dot), param = name.substr(dot + 1);
    for (const auto& seg : segments)
      if (seg.param == param)
        out[kind + "." + seg.key] = kind == "step" ? t : t.reshape({-1}).narrow(0, seg.offset, seg.length);
  }
  return out;
}

/// The sharded optimizer's state as whole-parameter tensors, the names and shapes a one-process
/// checkpoint has, gathered from every rank (a collective: every rank calls it).
std::vector<std::pair<std::string, at::Tensor>> gathered_state(const Optimizer& opt, dist::GradSync& sync,
                                                                const recipe::OptimConfig& config) {
  std::map<std::string, std::map<std::string, at::Tensor>> parts;
  double step = 0;
  for (const auto& [name, t] : opt.state()) {
    const auto dot = name.find('.');
    if (name.substr(0, dot) == "step") step = std::max(step, t.item<double>());
    else parts[name.substr(0, dot)][name.substr(dot + 1)] = t;
  }
  auto& comm = sync.communicator();
  auto steps = at::full({1}, step, at::TensorOptions(comm.device()).dtype(at::kDouble));
  comm.all_reduce(steps, dist::ReduceOp::Max, "the optimizer step count")->wait();
  step = steps.cpu().item<double>();
  std::vector<std::string> kinds;
  if (config.name == recipe::Optimizer::AdamW) kinds = {"exp_avg", "exp_avg_sq"};
  else if (config.momentum > 0) kinds = {"momentum"};
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kind : kinds)
    for (auto& [param, t] : sync.gather_segments(parts[kind])) {
      out.emplace_back(kind + "." + param, t);
      if (kind == kinds.front() && (step > 0 || config.name == recipe::Optimizer::AdamW))
        out.emplace_back("step." + param, at::full({1}, step, t.options().dtype(at::kFloat)));
    }
  return out;
}

}  // namespace

at::Device model_device(const models::AnyModel& model, recipe::Device d) {
  return models::quantized_layers(model).empty() ? resolve_device(d) : at::Device(at::kCPU);
}

at::Device resolve_device(recipe::Device d) {
  switch (d) {
    case recipe::Device::Cpu: return at::kCPU;
    case recipe::Device::Cuda:
      if (!at::hasCUDA()) throw Error("run.device is cuda but no CUDA device is visible (use auto or cpu)");
      return at::Device(at::kCUDA, 0);
    case recipe::Device::Auto: return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  }
  return at::kCPU;
}

struct Trainer::Impl {
  std::shared_ptr<dist::Communicator> comm;  // data-parallel ranks; null: one process
  std::unique_ptr<dist::GradSync> sync;      // data-parallel gradient reduction
  bool distributed() const { return comm && comm->backend() != "none"; }
  bool lead() const { return !distributed() || comm->rank() == 0; }  // writes files and the console
  int world() const { return distributed() ? comm->size() : 1; }
  std::optional<io::DirLock> lock;  // one writer per out_dir
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<TaskData> data;
  std::unique_ptr<Optimizer> optimizer;
  std::string resumed_from;
  std::string resume_note;  // the settings that differ from the resumed checkpoint's recipe
  std::unique_ptr<MicroStepGraph> graph;  // train.cuda_graphs
  at::Tensor loss_scale;                  // fp16: the loss scale on the device, read by the micro-step
  at::ScalarType logits_dtype = at::kFloat;
};

Trainer::Trainer(recipe::Recipe r, TrainOptions options)
    : impl_(std::make_unique<Impl>()), recipe_(std::move(r)), options_(options),
      device_(resolve_device(recipe_.run.device)) {
  impl_->comm = options_.comm;
  const bool distributed = impl_->distributed(), lead = impl_->lead();
  if (!distributed) {
    if (const auto world = dist::detect_world(); world.distributed())
      throw Error(fmt::format("this process is {}, but this command trains in one process (the data-parallel "
                              "trainer is `lathe train` / `lathe run`); launch it without {}",
                              world.describe(), world.launcher));
  } else if (device_.is_cuda()) {
    device_ = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(dist::local_device(
                                        impl_->comm->world(), static_cast<int>(at::getNumGPUs()))));
  }
  if (!lead) options_.console = nullptr;  // rank 0 speaks for the job
  // A launched rank cannot tell where its output goes: Open MPI gives every rank a pseudo-terminal
  // even when mpirun's own output is a file. Plain lines every train.log_every, never redrawn.
  if (distributed || dist::detect_world().launcher != "none") options_.console_is_tty = false;
  if (recipe_.run.threads > 0) {
    at::set_num_threads(static_cast<int>(recipe_.run.threads));
  } else if (distributed && !device_.is_cuda()) {
    // CPU ranks on one node share its cores: each takes its part, none oversubscribes.
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    at::set_num_threads(std::max(1, cores / std::max(1, impl_->comm->world().local_size)));
  }
  if (recipe_.train.precision == Precision::Fp16 && !device_.is_cuda())
    throw Error("train.precision fp16 needs CUDA (dynamic loss scaling); use bf16 on the CPU");
  if (recipe_.train.cuda_graphs) {
    if (!device_.is_cuda())
      throw Error("train.cuda_graphs needs a CUDA device, and this run is on " + device_.str() +
                  "; set train.cuda_graphs: false");
    if (distributed)
      throw Error(fmt::format("train.cuda_graphs: data-parallel training ({} ranks) reduces gradients during the "
                              "backward, outside any graph; set train.cuda_graphs: false",
                              impl_->world()));
    impl_->graph = std::make_unique<MicroStepGraph>();
  }
  if (distributed && recipe_.distributed.shard_optimizer && options_.sparsity)
    throw Error("distributed.shard_optimizer: the pruning fine-tune holds masks on whole parameters; run it with "
                "shard_optimizer false");
  torch::manual_seed(static_cast<uint64_t>(recipe_.run.seed));
  const auto root = recipe::checkpoint_dir(recipe_);
  // What each rank does alone before the ranks work together: a rank that fails here ends every
  // rank at once with its message (dist::together), rather than leaving them to time out.
  dist::Communicator* const peers = distributed ? impl_->comm.get() : nullptr;
  dist::together(peers, "the start of training (each rank reads out_dir)", [&] {
    if (lead) {
      impl_->lock.emplace(recipe_.run.out_dir);
      recover_checkpoints(root);
    }
    impl_->tok = load_run_tokenizer(recipe_, /*required=*/false);
  });
  if (distributed) check_same_job(*impl_->comm, recipe_, impl_->tok.get());

  std::optional<CheckpointData> resume;
  const auto& how = recipe_.train.resume;
  dist::together(peers, "the choice of the checkpoint to resume (rank 0 chooses)", [&] {
    if (lead) {
      std::vector<std::string> unreadable;
      if (how == "auto") {
        resume = load_latest_checkpoint(root, [&](const std::string& w) {
          if (options_.console) *options_.console << w << "\n";
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
      if (!resume && !existing.empty()) {
        throw Error(fmt::format("{} holds the checkpoints of an earlier run (newest {}) and train.resume is none: "
                                "resume it (--resume auto), start over with --force (removes that run's checkpoints "
                                "and metrics), or choose another run.out_dir",
                                root.string(), existing.back().filename().string()));
      }
      if (resume) {
        std::vector<std::string> later, foreign;
        for (const auto& dir : existing) {
          const auto id = checkpoint_run_id(dir);
          if (!resume->state.run_id.empty() && id != resume->state.run_id) foreign.push_back(dir.filename().string());
          else if (!same_dir(dir, resume->dir) && checkpoint_step(dir) > resume->state.step &&
                   checkpoint_problem(dir).empty())  // a damaged later one was warned about and is replaced
            later.push_back(dir.filename().string());
        }
        if (!foreign.empty())
          throw Error(fmt::format("{} holds checkpoints of another run ({}); resuming {} there would mix two runs: "
                                  "start over with --force, or choose another run.out_dir",
                                  root.string(), fmt::join(foreign, ", "), resume->dir.string()));
        if (!later.empty())
          throw Error(fmt::format("{} holds checkpoints later than {} ({}); resuming from it would interleave two "
                                  "histories: resume the newest (--resume auto), or pass --force to remove the later "
                                  "ones",
                                  root.string(), resume->dir.string(), fmt::join(later, ", ")));
      }
    }
  });
  if (distributed) resume = agree_on_resume(*impl_->comm, root, how, std::move(resume));
  if (resume) {
    if (resume->model.kind != model_kind(recipe_.train.task))
      throw Error(resume->dir.string() + ": holds a " + resume->model.kind_name() + " model, but train.task is " +
                  std::string(recipe::enum_name(recipe_.train.task)));
    model_ = adopt(recipe_, impl_->tok.get(), resume->model, "the checkpoint " + resume->dir.string(), kResumeWayOut);
    state_ = resume->state;
    impl_->resumed_from = resume->dir.string();
    impl_->resume_note = changed_settings(resume->state.recipe_yaml, recipe_);
    if (state_.run_id.empty()) state_.run_id = new_run_id();  // a checkpoint from before run ids
  } else {
    model_ = build_model(recipe_, impl_->tok.get());
    state_.run_id = new_run_id();
  }
  if (impl_->tok) check_vocab(model_, *impl_->tok, "");
  state_.recipe_yaml = recipe::to_yaml(recipe_);
  model_.module()->to(device_);
  if (distributed) {
    std::vector<dist::GradSync::Param> params;
    for (const auto& item : model_.module()->named_parameters())
      if (item.value().requires_grad()) params.push_back({item.key(), item.value()});
    impl_->sync = std::make_unique<dist::GradSync>(std::move(params), impl_->comm, recipe_.distributed);
    impl_->sync->broadcast_parameters();  // rank 0's weights everywhere, whatever each rank built
  }
  const bool sharded = impl_->sync && impl_->sync->sharded();
  if (sharded) {
    std::map<std::string, bool> decay;
    for (const auto& slot : Optimizer::slots_of(*model_.module(), recipe_.optim)) decay[slot.name] = slot.decay;
    std::vector<OptimizerSlot> slots;
    for (const auto& seg : impl_->sync->segments()) slots.push_back({seg.key, seg.value, decay.at(seg.param)});
    impl_->optimizer = std::make_unique<Optimizer>(std::move(slots), recipe_.optim);
  } else {
    impl_->optimizer = std::make_unique<Optimizer>(*model_.module(), recipe_.optim);
  }
  if (resume) {
    std::map<std::string, at::Tensor> optim;
    for (const auto& [name, t] : resume->tensors)
      if (name.starts_with("optim.")) optim[name.substr(6)] = t;
    if (sharded) optim = shard_state(optim, impl_->sync->segments());
    impl_->optimizer->load_state(optim, (resume->dir / "trainer.safetensors").string());
    restore_rng(resume->tensors, device_);
  }
  if (auto& sp = options_.sparsity) {
    if (resume) {
      std::map<std::string, at::Tensor> masks;
      for (const auto& [name, t] : resume->tensors)
        if (name.starts_with("mask.")) masks[name.substr(5)] = t.to(device_, at::kBool);
      sp->masks = std::move(masks);
    }
    for (auto& [name, mask] : sp->masks) mask = mask.to(device_, at::kBool);
    hold_masks(*sp, model_, *impl_->optimizer);
  }
}

Trainer::~Trainer() = default;

StepResult Trainer::step(const std::vector<Batch>& micro, bool stop) {
  auto& opt = *impl_->optimizer;
  auto* sync = impl_->sync.get();
  const auto& tr = recipe_.train;
  const bool fp16 = tr.precision == Precision::Fp16;
  StepResult res;
  res.lr = learning_rate(recipe_.schedule, recipe_.optim.lr, state_.step, tr.max_steps);
  const auto& sparsity = options_.sparsity;
  if (sparsity && sparsity->update(state_.step, model_)) hold_masks(*sparsity, model_, opt);
  model_.module()->train();
  auto* graph = impl_->graph.get();
  opt.zero_grad(/*keep=*/graph != nullptr);  // a captured backward adds into the same gradient tensors
  if (sync) sync->zero_grad();
  if (impl_->comm) impl_->comm->set_step(state_.step + 1);  // what this rank's heartbeat reports
  // The loss stays on the device through the micro-batches; the host reads it, the gradient
  // norm and the fp16 overflow flag together, once, at the end of the step. A non-finite loss
  // is found there too: its backward only wasted work, and its gradients are dropped.
  const auto n = static_cast<double>(micro.size());
  if (fp16) {  // a device tensor, so that a captured micro-step reads the scale of each step
    if (!impl_->loss_scale.defined()) impl_->loss_scale = at::empty({}, at::TensorOptions(device_).dtype(at::kFloat));
    impl_->loss_scale.fill_(state_.loss_scale);
  }
  // Masked LM and classification: a micro-batch's mean loss counts by its share of the targets
  // of the whole step (every micro-batch of every rank), so the gradient is that of the mean
  // over the global batch's targets, however the batch is split: N ranks x B equal 1 x N*B, as
  // in Hugging Face's Trainer (num_items_in_batch). A masked micro-batch holds a random number of
  // targets; a causal LM one always batch x seq_len, so its plain mean (divisor n) is that share.
  std::vector<double> divisor(micro.size(), n);
  const bool weighted = model_.kind != models::ModelKind::Gpt;
  if (weighted) {
    std::vector<double> counts;
    double total = 0;
    for (const auto& b : micro) {
      counts.push_back(b.targets.ne(-100).sum().item<double>());
      total += counts.back();
    }
    if (impl_->distributed()) {
      auto t = at::full({1}, total, at::TensorOptions(impl_->comm->device()).dtype(at::kDouble));
      impl_->comm->all_reduce(t, dist::ReduceOp::Sum, fmt::format("the target count of step {}", state_.step + 1))
          ->wait();
      total = t.cpu().item<double>();
    }
    // count * world / total of the loss: the ranks' gradients are averaged afterwards. Nothing
    // to predict: an infinite divisor makes the (zero) loss count for nothing.
    for (std::size_t k = 0; k < micro.size(); ++k)
      divisor[k] = counts[k] > 0 ? total / (counts[k] * impl_->world()) : std::numeric_limits<double>::infinity();
  }
  double micro_divisor = n;  // graphs capture GPT steps only, whose divisor is always n
  bool last_micro = false;
  // One micro-batch's forward and backward (what train.cuda_graphs captures); the detached loss.
  auto micro_step = [&](const Batch& batch) {
    at::Tensor loss;
    {
      AutocastScope autocast(tr.precision, device_);
      loss = task_loss(model_, batch, &impl_->logits_dtype);
    }
    auto scaled = loss / micro_divisor;
    if (fp16) scaled = scaled * impl_->loss_scale;
    // Data-parallel: the gradients are reduced during the last micro-batch's backward only.
    if (sync) sync->begin_backward(/*sync=*/last_micro);
    scaled.backward();
    return loss.detach();
  };
  at::Tensor loss_sum;
  int64_t tokens = 0;
  for (std::size_t k = 0; k < micro.size(); ++k) {
    last_micro = k + 1 == micro.size();
    micro_divisor = divisor[k];
    const auto loss = graph ? graph->run(micro[k], static_cast<int64_t>(micro.size()), device_, micro_step)
                            : micro_step(to_device(micro[k], device_));
    tokens += micro[k].tokens;
    auto value = loss.to(at::kDouble);  // a copy: a replayed loss is overwritten by the next replay
    if (weighted) value = value / divisor[k];
    loss_sum = loss_sum.defined() ? loss_sum + value : value;
  }
  res.logits_dtype = impl_->logits_dtype;
  if (sync) sync->finish();
  if (sparsity) {  // a pruned weight gets no gradient, so no update and no moment
    torch::NoGradGuard no_grad;
    auto params = model_.module()->named_parameters();
    for (const auto& [name, mask] : sparsity->masks)
      if (auto* p = params.find(name); p && p->grad().defined()) p->grad().mul_(mask);
  }
  auto found_inf = at::zeros({1}, at::TensorOptions(device_).dtype(at::kFloat));
  if (fp16) {
    auto inv = at::full({1}, 1.0 / state_.loss_scale, at::TensorOptions(device_).dtype(at::kFloat));
    at::_amp_foreach_non_finite_check_and_unscale_(opt.grads(), found_inf, inv);
  }
  // Weighted: the sum of the shares is the rank's part of the global mean (times world).
  at::Tensor norm, loss_mean = weighted ? loss_sum.reshape({}) : loss_sum.reshape({}) / n, stop_flag;
  if (impl_->distributed()) {
    // The step's one agreement: the mean loss over ranks, any rank's fp16 overflow, any rank's
    // wish to stop and (sharded) the squared gradient norm summed over the shards.
    const bool sharded = sync->sharded();
    auto sq = opt.grad_norm_squared();
    if (!sq.defined()) sq = at::zeros({}, found_inf.options());
    auto scalars = at::stack({loss_mean, found_inf.to(at::kDouble).reshape({}),
                              at::full({}, stop ? 1.0 : 0.0, loss_mean.options()),
                              sharded ? sq.to(at::kDouble) : at::zeros({}, loss_mean.options())});
    impl_->comm->all_reduce(scalars, dist::ReduceOp::Sum, fmt::format("the loss all-reduce of step {}", state_.step + 1))
        ->wait();
    loss_mean = scalars[0] / static_cast<double>(impl_->world());
    found_inf = scalars[1];
    stop_flag = scalars[2];
    norm = (sharded ? scalars[3] : sq.to(at::kDouble)).sqrt();
    opt.clip_to(norm.to(at::kFloat), recipe_.optim.grad_clip);
  } else {
    norm = opt.clip_grad_norm(recipe_.optim.grad_clip);
    if (!norm.defined()) norm = at::zeros({}, found_inf.options());
    stop_flag = at::zeros({}, loss_mean.options());
  }
  const auto host = at::stack({loss_mean, norm.to(at::kDouble).reshape({}), found_inf.to(at::kDouble).reshape({}),
                               stop_flag.to(at::kDouble).reshape({})})
                        .to(at::kCPU);  // the step's one synchronisation
  const auto* v = host.data_ptr<double>();
  res.loss = v[0];
  res.grad_norm = v[1];
  const bool overflow = v[2] > 0;
  res.stop = v[3] > 0;
  tokens *= impl_->world();  // every rank read as many

  auto finish = [&](bool skipped, std::string why = {}) {
    res.skipped = skipped;
    res.why = std::move(why);
    if (skipped) opt.zero_grad(/*keep=*/graph != nullptr);
    ++state_.step;
    state_.tokens += tokens;
    return res;
  };
  auto bad = [&](const std::string& what, double value) {
    if (tr.nan_policy == recipe::NanPolicy::Error)
      throw Error(fmt::format("step {}: the {} is {} (train.nan_policy: error); lower optim.lr, keep optim.grad_clip "
                              "on, or set train.nan_policy: skip. Checkpoints already written are kept in {}",
                              state_.step + 1, what, value, recipe::checkpoint_dir(recipe_).string()));
    ++state_.skipped_steps;
    return finish(true, fmt::format("the {} is {} (train.nan_policy: skip)", what, value));
  };
  if (!std::isfinite(res.loss)) return bad("loss", res.loss);
  if (fp16) {
    // Dynamic loss scaling (torch.amp.GradScaler's rule): on overflow skip the step and halve
    // the scale; double it after 2000 clean steps. An overflow is routine for fp16: it is not
    // a bad step (skipped_steps), it is counted in overflow_steps.
    if (overflow) {
      state_.loss_scale *= 0.5;
      state_.good_steps = 0;
      ++state_.overflow_steps;
      return finish(true, fmt::format("fp16 overflow, loss scale now {}", state_.loss_scale));
    }
    if (++state_.good_steps >= 2000) {
      state_.loss_scale *= 2.0;
      state_.good_steps = 0;
    }
  }
  if (!std::isfinite(res.grad_norm)) return bad("gradient norm", res.grad_norm);
  opt.step(res.lr);
  if (sync && sync->sharded()) sync->gather_parameters();
  return finish(false);
}

std::map<std::string, double> Trainer::evaluate(int64_t batches) {
  if (!impl_->data) throw std::logic_error("Trainer::evaluate needs the data (run() sets it up)");
  const int64_t n = std::min(batches, impl_->data->val_batches());
  return evaluate_batches(model_, *impl_->data, n, recipe_.train.precision, device_).metrics(recipe_.model.num_labels);
}

TrainReport Trainer::run() {
  const auto& tr = recipe_.train;
  if (!impl_->tok) impl_->tok = load_run_tokenizer(recipe_, /*required=*/true);
  check_vocab(model_, *impl_->tok, "");
  const bool lead = impl_->lead();
  const int world = impl_->world();
  impl_->data = make_task_data(recipe_, *impl_->tok, recipe::Split::Val,
                               {impl_->distributed() ? impl_->comm->rank() : 0, world});
  model_.labels = impl_->data->labels();

  // Rank 0 alone writes metrics.jsonl, TensorBoard and the console.
  Metrics metrics({lead ? fs::path(recipe_.run.out_dir) : fs::path(), lead, options_.console,
                   options_.console_is_tty, state_.run_id, impl_->resumed_from.empty() ? -1 : state_.step});
  auto say = [&](const std::string& s) { metrics.message(s); };
  TrainReport report;
  report.start_step = state_.step;
  if (!impl_->resumed_from.empty()) say(fmt::format("resumed from {} (step {})", impl_->resumed_from, state_.step));
  if (!impl_->resume_note.empty()) say(impl_->resume_note);
  // From the first line on: a signal during the setup below stops the run after its first step
  // (with a checkpoint) rather than ending the process.
  SignalScope signals(options_.handle_signals);
  const int64_t params = models::parameter_count(*model_.module());
  say(fmt::format("training {} ({:.2f}M parameters) on {} for {} steps: batch {} x {} tokens x {} accumulation{}",
                  model_.kind_name(), static_cast<double>(params) / 1e6, device_.str(), tr.max_steps, tr.batch_size,
                  recipe_.data.seq_len, tr.grad_accum, impl_->optimizer->fused() ? ", fused AdamW" : ""));
  if (impl_->distributed())
    say(fmt::format("data-parallel over {} ranks ({}, {}): global batch {}, {} gradient buckets of up to {} MiB{}{}{}",
                    world, impl_->comm->backend(), impl_->comm->world().launcher,
                    tr.batch_size * tr.grad_accum * world,
                    impl_->sync->buckets(), recipe_.distributed.bucket_mb,
                    impl_->sync->sharded() ? ", sharded optimizer (ZeRO-1)" : "",
                    recipe_.distributed.bf16_grads ? ", bf16 gradients" : "",
                    device_.is_cuda() ? "" : fmt::format(", {} threads per rank", at::get_num_threads())));
  if (const auto note = impl_->data->notes(); !note.empty()) say(note);
  const bool can_eval = impl_->data->val_batches() > 0;
  if (!can_eval) {
    const auto& p = recipe_.pipeline;
    if (std::find(p.begin(), p.end(), recipe::Stage::Eval) != p.end() && recipe_.eval.split == recipe::Split::Val)
      throw Error("the validation split holds no batch, and the pipeline's eval stage evaluates on it: set "
                  "data.val_files or a larger data.val_fraction, or remove eval from pipeline: (found before "
                  "training, so nothing is lost)");
    say("no validation data: validation is skipped (set data.val_files or data.val_fraction)");
  }
  const double peak = measure_peak_flops(device_, tr.precision) * world;  // every rank's device
  const double fpt = flops_per_token(model_, recipe_.data.seq_len);

  const auto accum = static_cast<uint64_t>(tr.grad_accum);
  // On CUDA the workers also pin each batch, so the step's copy to the GPU is asynchronous.
  const bool pinned = device_.is_cuda();
  data::PrefetchLoader<Batch> loader([&](uint64_t i) {
                                       auto b = impl_->data->train_batch(i);
                                       return pinned ? pin(b) : b;
                                     },
                                     static_cast<int>(recipe_.data.num_workers),
                                     static_cast<int>(recipe_.data.prefetch), static_cast<uint64_t>(state_.step) * accum);

  Checkpointer checkpointer(recipe::checkpoint_dir(recipe_), tr);
  Validator validator(tr.eval_every, can_eval);
  auto save = [&] {
    // Sharded: the whole optimizer state is gathered from every rank first (all take part).
    auto tensors = impl_->sync && impl_->sync->sharded()
                       ? gathered_state(*impl_->optimizer, *impl_->sync, recipe_.optim)
                       : impl_->optimizer->state();
    if (!lead) {
      report.checkpoint = checkpointer.skip(state_.step);
      return;
    }
    for (auto& [n, t] : tensors) n = "optim." + n;
    for (auto& kv : rng_state(device_)) tensors.push_back(kv);
    if (options_.sparsity)
      for (const auto& [name, mask] : options_.sparsity->masks) tensors.emplace_back("mask." + name, mask);
    report.checkpoint = checkpointer.save(model_, tensors, state_, validator.done_at(state_.step));
  };
  auto validate = [&] {
    auto [m, best] = validator.run(state_.step, state_, [&] { return evaluate(tr.eval_batches); });
    report.val = m;
    metrics.record({state_.step, "val", m});
    std::string line = fmt::format("step {}: validation", state_.step);
    for (const auto& [k, v] : m) line += fmt::format(" {} {:.4f}", k, v);
    say(line);
    return best;
  };

  const auto t_start = Clock::now();
  auto t_window = t_start;
  double window_loss = 0;
  int64_t window_steps = 0, window_tokens = 0, run_tokens = 0;
  const double elapsed_before = state_.elapsed_s;
  bool graph_noted = false, graph_eager_noted = false;
  while (state_.step < tr.max_steps) {
    std::vector<Batch> micro;
    for (uint64_t k = 0; k < accum; ++k) micro.push_back(loader.next());
    // Data-parallel ranks stop together: a signal is this rank's wish, agreed in the step.
    const auto r = step(micro, /*stop=*/signals.signal() != 0);
    if (const auto* g = impl_->graph.get()) {
      if (g->captured() && !graph_noted)
        say(fmt::format("step {}: the micro-step is captured as a CUDA graph (train.cuda_graphs) and replayed from "
                        "here on",
                        state_.step));
      if (g->eager_after_capture() > 0 && !graph_eager_noted)
        say(fmt::format("step {}: a micro-batch of other shapes than the captured one ran without the graph",
                        state_.step));
      graph_noted = g->captured();
      graph_eager_noted = g->eager_after_capture() > 0;
    }
    const int own = signals.signal();
    const int stop_signal = impl_->distributed() ? (r.stop ? (own ? own : SIGTERM) : 0) : own;
    report.logits_dtype = r.logits_dtype;
    if (r.skipped) say(fmt::format("step {}: step skipped: {}", state_.step, r.why));
    if (!r.skipped) {
      window_loss += r.loss;
      ++window_steps;
    }
    int64_t step_tokens = 0;
    for (const auto& b : micro) step_tokens += b.tokens * world;  // every rank read as many
    window_tokens += step_tokens;
    run_tokens += step_tokens;
    state_.elapsed_s = elapsed_before + std::chrono::duration<double>(Clock::now() - t_start).count();

    const bool last = state_.step == tr.max_steps;
    // The step a signal stops at is logged too: the report's loss is that of the steps since
    // the last log, not of an earlier window (or none).
    const bool logged = state_.step % tr.log_every == 0 || last || stop_signal != 0;
    const double window_s = std::chrono::duration<double>(Clock::now() - t_window).count();
    const double tps = window_s > 0 ? static_cast<double>(window_tokens) / window_s : 0;
    const double per_step = (state_.step - report.start_step) > 0
                                ? std::chrono::duration<double>(Clock::now() - t_start).count() /
                                      static_cast<double>(state_.step - report.start_step)
                                : 0;
    ProgressLine line{state_.step, tr.max_steps, r.loss, r.lr, tps, tps * fpt / peak,
                      per_step * static_cast<double>(tr.max_steps - state_.step)};
    metrics.progress(line, logged);
    if (logged) {
      report.train_loss = window_steps ? window_loss / static_cast<double>(window_steps) : r.loss;
      metrics.record({state_.step, "train",
                      {{"loss", report.train_loss},
                       {"lr", r.lr},
                       {"grad_norm", r.grad_norm},
                       {"tokens_per_s", tps},
                       {"mfu", tps * fpt / peak},
                       {"tokens", static_cast<double>(state_.tokens)},
                       {"skipped_steps", static_cast<double>(state_.skipped_steps)}}});
      if (impl_->sync) {
        const auto& o = impl_->sync->last_overlap();
        metrics.record({state_.step, "comm",
                        {{"buckets", static_cast<double>(o.buckets)},
                         {"launched_in_backward", static_cast<double>(o.launched_before_backward_end)},
                         {"started_in_backward", static_cast<double>(o.started_before_backward_end)},
                         {"seconds", o.comm_s},
                         {"hidden_fraction", o.hidden_fraction()}}});
      }
      window_loss = 0;
      window_steps = 0;
      window_tokens = 0;
      t_window = Clock::now();
    }
    const bool new_best = validator.due(state_.step, last) && validate();
    if (checkpointer.due(state_.step, last, new_best)) save();
    if (const int sig = stop_signal) {
      if (!checkpointer.done_at(state_.step)) save();
      say(fmt::format("received {}: saved {} at step {}; resume with train.resume: auto",
                      sig == SIGTERM ? "SIGTERM" : "SIGINT", report.checkpoint.string(), state_.step));
      report.interrupted = true;
      break;
    }
  }
  if (!report.interrupted && !checkpointer.done_at(state_.step)) {
    if (validator.due(state_.step, /*last=*/true) && !validator.done_at(state_.step)) validate();
    save();
  }
  report.steps = state_.step;
  report.world_size = world;
  if (impl_->sync) report.overlap = impl_->sync->last_overlap();
  report.skipped_steps = state_.skipped_steps;
  report.overflow_steps = state_.overflow_steps;
  report.loss_scale = state_.loss_scale;
  report.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  const double training_s = report.seconds - validator.seconds() - checkpointer.seconds();
  report.tokens_per_s = training_s > 0 ? static_cast<double>(run_tokens) / training_s : 0;
  return report;
}

fs::path newest_checkpoint(const recipe::Recipe& r) {
  auto all = list_checkpoints(recipe::checkpoint_dir(r));
  if (all.empty())
    throw Error("no checkpoint in " + recipe::checkpoint_dir(r).string() + "; train first (lathe train RECIPE)");
  return all.back();
}

void check_checkpoint_model(const recipe::Recipe& r, const fs::path& dir) {
  const auto tok = load_run_tokenizer(r, /*required=*/false);
  const auto kind = model_kind(r.train.task);
  auto loaded = models::load_model(dir, kind, kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0);
  adopt(r, tok.get(), loaded, "the checkpoint " + dir.string(), kResumeWayOut);
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = metrics;
  j["batches"] = batches;
  j["targets"] = targets;
  return j;
}

EvalResult evaluate_checkpoint(const recipe::Recipe& r, const fs::path& checkpoint) {
  const auto path = checkpoint.empty() ? newest_checkpoint(r) : checkpoint;
  const auto kind = model_kind(r.train.task);
  auto model = models::load_model(path, kind, kind == models::ModelKind::BertClassifier ? r.model.num_labels : 0);
  auto tok = load_run_tokenizer(r, /*required=*/true);
  check_vocab(model, *tok, " in " + path.string());
  const auto device = model_device(model, r.run.device);
  if (r.run.threads > 0) at::set_num_threads(static_cast<int>(r.run.threads));
  model.module()->to(device);
  auto data = make_task_data(r, *tok, r.eval.split);
  auto result = evaluate_model(r, model, *data, device);
  if (r.train.task == recipe::Task::CausalLm && r.eval.split == recipe::Split::Val)
    result.metrics["unigram_loss"] = unigram_loss(r, *tok);
  return result;
}

EvalResult evaluate_model(const recipe::Recipe& r, const models::AnyModel& model, const TaskData& data,
                          const at::Device& device) {
  const int64_t n = std::min(r.eval.batches, data.val_batches());
  if (n == 0) throw Error("no " + std::string(recipe::enum_name(r.eval.split)) + " data to evaluate on");
  const auto acc = evaluate_batches(model, data, n, r.train.precision, device);
  return {acc.metrics(r.model.num_labels), n, acc.count};
}

}  // namespace lathe::train
