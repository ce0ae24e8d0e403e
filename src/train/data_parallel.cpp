// Data-parallel training: the ranks' agreements and the sharded optimizer's state.

#include "lathe/train/data_parallel.hpp"

#include <algorithm>
#include <limits>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.hpp"
#include "lathe/core/hash.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/nn/checkpoint.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"

namespace lathe::train {
namespace fs = std::filesystem;

at::Device rank_device(const at::Device& device, const dist::Communicator* comm) {
  if (!comm) {
    if (const auto world = dist::detect_world(); world.distributed())
      throw Error(fmt::format("this process is {}, but this command trains in one process (the data-parallel "
                              "trainer is `lathe train` / `lathe run`); launch it without {}",
                              world.describe(), world.launcher));
    return device;
  }
  if (!device.is_cuda()) return device;
  const int gpu = dist::local_device(comm->world(), static_cast<int>(at::getNumGPUs()));
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(gpu));
}

void share_threads(int64_t threads, const dist::Communicator* comm, const at::Device& device) {
  if (threads > 0) {
    at::set_num_threads(static_cast<int>(threads));
  } else if (comm && !device.is_cuda()) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    at::set_num_threads(std::max(1, cores / std::max(1, comm->world().local_size)));
  }
}

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

namespace {

/// fsdp: runs each block with its parameters gathered: waits for the block's all-gather (launched
/// ahead by the block before it), launches the next block's, runs the block and frees its
/// parameters again; the block's output gathers them once more before the block's backward
/// (prefetching the block before it). Autocast's cast cache is off inside a block: the casts are
/// not kept beyond the block's forward (autograd still saves the bf16 weights its backward
/// needs).
class FsdpRunner : public nn::BlockRunner {
 public:
  FsdpRunner(dist::GradSync& sync, std::map<const nn::BlockImpl*, int> unit_of, bool reshard_after_forward)
      : sync_(sync), unit_of_(std::move(unit_of)), reshard_(reshard_after_forward) {}

  torch::Tensor run(int64_t index, nn::BlockImpl& block, const torch::Tensor& x,
                    const nn::AttentionContext& ctx) override {
    const auto it = unit_of_.find(&block);
    if (it == unit_of_.end()) return forward_next(index, block, x, ctx);
    const int unit = it->second;
    // Re-run by activation checkpointing inside the backward: the block's own backward comes
    // next, then the block before it's (as FSDP skips its forward hooks in the pre-backward).
    const bool recompute = nn::in_recompute();
    sync_.wait_unshard(unit);
    if (recompute && unit > 0) sync_.unshard(unit - 1);
    if (!recompute && unit + 1 < sync_.units()) sync_.unshard(unit + 1);
    torch::Tensor y;
    {
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      try {
        y = forward_next(index, block, x, ctx);
      } catch (...) {
        at::autocast::set_autocast_cache_enabled(cache);
        throw;
      }
      at::autocast::set_autocast_cache_enabled(cache);
    }
    const bool backward_follows = at::GradMode::is_enabled() && y.requires_grad();
    if ((reshard_ && !recompute) || !backward_follows) sync_.reshard(unit);
    if (!backward_follows) return y;
    return nn::before_backward(y, [this, unit] {
      sync_.wait_unshard(unit);
      if (unit > 0) sync_.unshard(unit - 1);
    });
  }

 private:
  dist::GradSync& sync_;
  std::map<const nn::BlockImpl*, int> unit_of_;
  bool reshard_;
};

}  // namespace

DataParallel::DataParallel(std::shared_ptr<dist::Communicator> comm, const torch::nn::Module& model,
                           const dist::DistOptions& options, const ValueSource* values)
    : comm_(std::move(comm)) {
  const bool fsdp = options.resolved_strategy() == dist::Strategy::Fsdp;
  // fsdp's units: the transformer blocks, in the order the model runs them.
  std::map<const nn::BlockImpl*, int> unit_of;
  if (fsdp)
    for (const auto& item : model.named_modules("", /*include_self=*/false))
      if (const auto* block = dynamic_cast<const nn::BlockImpl*>(item.value().get())) {
        unit_of[block] = static_cast<int>(unit_prefix_.size());
        unit_prefix_.push_back(item.key() + ".");
      }
  std::vector<dist::GradSync::Param> params;
  for (const auto& item : model.named_parameters()) {
    model_shapes_.emplace_back(item.key(), item.value().sizes().vec());
    if (!item.value().requires_grad()) continue;
    params.push_back({item.key(), item.value(), unit_of_param(item.key())});
  }
  sync_ = std::make_unique<dist::GradSync>(std::move(params), comm_, options);
  if (values) {
    sync_->load_parameters(*values);
    for (const auto& item : model.named_parameters())
      if (item.value().is_meta())
        throw std::logic_error("DataParallel: " + item.key() + " is not trained and was given no value");
  } else {
    sync_->broadcast_parameters();  // rank 0's weights everywhere, whatever each rank built
  }
  if (fsdp) {
    if (!values) sync_->shard_parameters();
    runner_ = std::make_shared<FsdpRunner>(*sync_, std::move(unit_of), options.reshard_after_forward);
  }
}

StepAgreement local_agreement(const at::Tensor& loss, const at::Tensor& found_inf, Optimizer& opt, double grad_clip) {
  auto norm = opt.clip_grad_norm(grad_clip);
  if (!norm.defined()) norm = at::zeros({}, found_inf.options());
  return {loss, found_inf, at::zeros({}, loss.options()), norm};
}

void DataParallel::gather_model(torch::nn::Module& model) const {
  if (!runner_) return;
  // The float32 values of the masters, whatever dtype the blocks computed in; the parameters
  // leave the units' buffers for good.
  auto params = model.named_parameters();
  torch::NoGradGuard no_grad;
  for (int u = 0; u < sync_->units(); ++u) {
    for (const auto& [name, value] : sync_->gathered_values(u)) params[name].set_data(value);
    sync_->reshard(u);
  }
  nn::set_block_runner(model, nullptr);
}

int DataParallel::unit_of_param(const std::string& name) const {
  for (std::size_t u = 0; u < unit_prefix_.size(); ++u)
    if (name.starts_with(unit_prefix_[u])) return static_cast<int>(u);
  return -1;
}

ValueSource DataParallel::model_values(const torch::nn::Module& model) const {
  if (!runner_) return {};
  std::vector<std::tuple<std::string, at::Tensor, int>> params;
  for (const auto& item : model.named_parameters()) {
    params.emplace_back(item.key(), item.value(), unit_of_param(item.key()));
  }
  // A unit at a time: its float32 values gathered from the masters, handed on, freed.
  return [this, params = std::move(params)](const ValueSink& sink) {
    int current = -1;
    std::map<std::string, at::Tensor> unit_values;
    for (const auto& [name, t, unit] : params) {
      if (unit != current) {
        unit_values.clear();
        if (unit >= 0)
          for (auto& [n, v] : sync_->gathered_values(unit)) unit_values[n] = v;
        current = unit;
      }
      sink(name, unit >= 0 ? unit_values.at(name) : t.detach());
    }
  };
}

std::unique_ptr<Optimizer> DataParallel::optimizer(const torch::nn::Module& model,
                                                   const recipe::OptimConfig& config) const {
  if (!sharded()) return std::make_unique<Optimizer>(model, config);
  std::map<std::string, bool> decay;
  for (const auto& slot : Optimizer::slots_of(model, config)) decay[slot.name] = slot.decay;
  std::vector<OptimizerSlot> slots;
  for (const auto& seg : sync_->segments()) slots.push_back({seg.key, seg.value, decay.at(seg.param)});
  return std::make_unique<Optimizer>(std::move(slots), config);
}

std::map<std::string, at::Tensor> DataParallel::rank_state(std::map<std::string, at::Tensor> full) const {
  if (!sharded()) return full;
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : full) {
    const auto dot = name.find('.');
    const auto kind = name.substr(0, dot), param = name.substr(dot + 1);
    for (const auto& seg : sync_->segments())
      if (seg.param == param)
        out[kind + "." + seg.key] = kind == "step" ? t : t.reshape({-1}).narrow(0, seg.offset, seg.length);
  }
  return out;
}

TensorStream DataParallel::checkpoint_state(const Optimizer& opt, const recipe::OptimConfig& config) const {
  if (!sharded()) return TensorStream::of(opt.state());
  std::map<std::string, std::map<std::string, at::Tensor>> parts;
  double step = 0;
  for (const auto& [name, t] : opt.state()) {
    const auto dot = name.find('.');
    if (name.substr(0, dot) == "step") step = std::max(step, t.item<double>());
    else parts[name.substr(0, dot)][name.substr(dot + 1)] = t;
  }
  auto steps = at::full({1}, step, at::TensorOptions(comm_->device()).dtype(at::kDouble));
  comm_->all_reduce(steps, dist::ReduceOp::Max, "the optimizer step count")->wait();
  step = steps.cpu().item<double>();
  std::vector<std::string> kinds;
  if (config.name == recipe::Optimizer::AdamW) kinds = {"exp_avg", "exp_avg_sq"};
  else if (config.momentum > 0) kinds = {"momentum"};
  const bool with_step = step > 0 || config.name == recipe::Optimizer::AdamW;
  // What the stream gives, in the order the buckets are gathered.
  const std::map<std::string, std::vector<int64_t>> shapes(model_shapes_.begin(), model_shapes_.end());
  TensorStream out;
  for (const auto& kind : kinds)
    for (const auto& param : sync_->bucket_order()) {
      out.specs.push_back({kind + "." + param, at::kFloat, shapes.at(param)});
      if (kind == kinds.front() && with_step) out.specs.push_back({"step." + param, at::kFloat, {1}});
    }
  out.values = [this, parts = std::move(parts), kinds, with_step, step](const ValueSink& sink) {
    for (const auto& kind : kinds) {
      ValueSink named;
      if (sink)
        named = [&](const std::string& param, const at::Tensor& t) {
          sink(kind + "." + param, t);
          if (kind == kinds.front() && with_step) sink("step." + param, at::full({1}, step, t.options()));
        };
      const auto it = parts.find(kind);
      sync_->gather_segments(it == parts.end() ? std::map<std::string, at::Tensor>{} : it->second, named);
    }
  };
  return out;
}

double DataParallel::sum(double value, const std::string& what) const {
  auto t = at::full({1}, value, at::TensorOptions(comm_->device()).dtype(at::kDouble));
  comm_->all_reduce(t, dist::ReduceOp::Sum, what)->wait();
  return t.cpu().item<double>();
}

StepAgreement DataParallel::agree(const at::Tensor& loss, const at::Tensor& found_inf, bool stop, Optimizer& opt,
                                  double grad_clip, int64_t step) const {
  auto sq = opt.grad_norm_squared();
  if (!sq.defined()) sq = at::zeros({}, found_inf.options());
  auto scalars = at::stack({loss, found_inf.to(at::kDouble).reshape({}), at::full({}, stop ? 1.0 : 0.0, loss.options()),
                            sharded() ? sq.to(at::kDouble) : at::zeros({}, loss.options())});
  comm_->all_reduce(scalars, dist::ReduceOp::Sum, fmt::format("the loss all-reduce of step {}", step))->wait();
  StepAgreement out{scalars[0] / static_cast<double>(world()), scalars[1], scalars[2],
                    (sharded() ? scalars[3] : sq.to(at::kDouble)).sqrt()};
  opt.clip_to(out.grad_norm.to(at::kFloat), grad_clip);
  return out;
}

std::vector<double> loss_divisors(const std::vector<Batch>& micro, bool weighted, const DataParallel* dp,
                                  int64_t step) {
  std::vector<double> divisor(micro.size(), static_cast<double>(micro.size()));
  if (!weighted) return divisor;
  std::vector<double> counts;
  double total = 0;
  for (const auto& b : micro) {
    counts.push_back(b.targets.ne(-100).sum().item<double>());
    total += counts.back();
  }
  if (dp) total = dp->sum(total, fmt::format("the target count of step {}", step + 1));
  // count * world / total of the loss: the ranks' gradients are averaged afterwards. Nothing
  // to predict: an infinite divisor makes the (zero) loss count for nothing.
  const int world = dp ? dp->world() : 1;
  for (std::size_t k = 0; k < micro.size(); ++k)
    divisor[k] = counts[k] > 0 ? total / (counts[k] * world) : std::numeric_limits<double>::infinity();
  return divisor;
}

}  // namespace lathe::train
