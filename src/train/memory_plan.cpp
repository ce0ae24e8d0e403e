// The per-rank memory of each data-parallel strategy, counted from the parameter count.

#include "lathe/train/memory_plan.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <sys/resource.h>

#ifdef LATHE_WITH_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#endif

#include "lathe/core/error.hpp"
#include "lathe/nn/block.hpp"
#include "lathe/nn/linear.hpp"

namespace lathe::train {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

/// Bytes of optimizer state per parameter: AdamW's two float32 moments, SGD's momentum buffer.
double optimizer_bytes(const recipe::OptimConfig& o) {
  if (o.name == recipe::Optimizer::AdamW) return 8;
  return o.momentum > 0 ? 4 : 0;
}

/// MemTotal of /proc/meminfo, lowered to the cgroup's memory.max when that is set.
std::optional<double> machine_bytes() {
  std::optional<double> total;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);)
    if (line.starts_with("MemTotal:")) {
      std::istringstream in(line.substr(9));
      double kib = 0;
      if (in >> kib) total = kib * 1024.0;
    }
  std::ifstream limit("/sys/fs/cgroup/memory.max");
  std::string value;
  if (limit >> value && value != "max") {
    try {
      const double bytes = std::stod(value);
      total = total ? std::min(*total, bytes) : bytes;
    } catch (const std::exception&) {
      // an unreadable limit leaves MemTotal
    }
  }
  return total;
}

}  // namespace

std::string MemoryPlan::describe() const {
  auto gib = [](double b) { return fmt::format("{:.2f} GiB", b / kGiB); };
  const auto who = world == 1 ? std::string("one process") : fmt::format("{} over {} ranks", enum_name(strategy), world);
  return fmt::format("{}: per rank {} parameters + {} gradients + {} optimizer state + {} communication buffers{} = {} "
                     "(activations not counted)",
                     who, gib(params), gib(grads), gib(optimizer), gib(buffers),
                     frozen > 0 ? " + " + gib(frozen) + " frozen weights" : "", gib(total()));
}

ModelSize model_size(const torch::nn::Module& model) {
  ModelSize size;
  std::vector<std::string> blocks;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (dynamic_cast<const nn::BlockImpl*>(item.value().get())) blocks.push_back(item.key() + ".");
  size.blocks = static_cast<int64_t>(blocks.size());
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) {
      size.frozen_bytes += static_cast<double>(item.value().numel() * static_cast<int64_t>(item.value().element_size()));
      continue;
    }
    size.parameters += item.value().numel();
    for (const auto& prefix : blocks)
      if (item.key().starts_with(prefix)) size.block_parameters += item.value().numel();
  }
  for (const auto& [path, lin] : nn::linear_layers(model))
    if (const auto* q = lin->quantized()) size.frozen_bytes += static_cast<double>(q->bytes());
  return size;
}

MemoryPlan plan_memory(const ModelSize& size, const recipe::OptimConfig& optim, const dist::DistOptions& dist,
                       int world, int64_t grad_accum) {
  const double P = static_cast<double>(size.parameters), W = std::max(1, world);
  const double comm = dist.bf16_grads ? 2 : 4;  // bytes of a communicated gradient
  MemoryPlan p;
  p.world = std::max(1, world);
  p.strategy = world > 1 ? dist.resolved_strategy() : dist::Strategy::Ddp;
  p.params = 4 * P;
  p.frozen = size.frozen_bytes;
  p.optimizer = optimizer_bytes(optim) * P;
  if (world <= 1) {
    p.grads = 4 * P;
    return p;
  }
  const double bucket = dist.bucket_mb * 1024 * 1024 / 4;  // parameters per bucket
  switch (p.strategy) {
    case dist::Strategy::Ddp:
      p.grads = 4 * P;
      p.buffers = comm * P;  // the flat buckets
      break;
    case dist::Strategy::Zero1:
      p.grads = 4 * P + 4 * P / W;  // the whole local gradients and this rank's mean part
      p.optimizer /= W;
      p.buffers = comm * P + (dist.bf16_grads ? comm * P / W : 0);
      break;
    case dist::Strategy::Zero2:
      // Accumulation micro-steps keep the whole gradients until the last one reduces them.
      p.grads = 4 * P / W + (grad_accum > 1 ? 4 * P : 0);
      p.optimizer /= W;
      p.buffers = comm * std::min(P, 2 * bucket) + (dist.bf16_grads ? comm * P / W : 0);  // two buckets in flight
      break;
    case dist::Strategy::Fsdp: {
      // The blocks' parameters are 1/W each (two blocks gathered at a time: the running one and
      // the prefetched one); the rest (embeddings, final norm, head) stay whole.
      const double B = static_cast<double>(size.block_parameters), unit = size.blocks > 0 ? B / size.blocks : 0;
      // Without resharding after the forward every block stays whole until its backward.
      // Gathered in distributed.param_dtype (2 bytes under bf16 / fp16).
      const double gathered = dist.param_dtype == dist::ParamDtype::Fp32 ? 4 : 2;
      p.params = 4 * (P - B) + 4 * B / W + gathered * (dist.reshard_after_forward ? std::min(B, 2 * unit) : B);
      p.grads = 4 * P / W + (grad_accum > 1 ? 4 * (P - B) : 0);
      p.optimizer /= W;
      // Two buckets or units in flight (with their reduced parts).
      p.buffers = comm * std::min(P, 2 * std::max(bucket, unit)) * (1 + 1 / W) + (dist.bf16_grads ? comm * (P - B) / W : 0);
      break;
    }
  }
  return p;
}

double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;  // KiB on Linux
}

std::optional<double> memory_per_rank(const at::Device& device, int ranks_per_node) {
#ifdef LATHE_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
#endif
  if (device.is_cuda()) return std::nullopt;
  const auto bytes = machine_bytes();
  if (!bytes) return std::nullopt;
  return *bytes / std::max(1, ranks_per_node);
}

void refuse_if_too_large(const MemoryPlan& plan, double available, const at::Device& device) {
  if (plan.total() <= available) return;
  const char* shard = plan.strategy == dist::Strategy::Fsdp
                          ? "spread it over more nodes (each rank holds 1/world of the gradients and optimizer state)"
                          : "shard more (distributed.strategy fsdp)";
  throw Error(fmt::format("the memory plan does not fit: {}, and a rank has {:.2f} GiB of {} memory; {}, run fewer "
                          "ranks per node, or train a smaller model (found before training, so nothing is lost)",
                          plan.describe(), available / kGiB, device.is_cuda() ? "GPU" : "the machine's", shard));
}

MemoryPlan check_memory_plan(const torch::nn::Module& model, const recipe::Recipe& recipe, dist::Communicator* comm,
                             const at::Device& device) {
  const auto plan = plan_memory(model_size(model), recipe.optim, recipe.distributed, comm ? comm->size() : 1,
                                recipe.train.grad_accum);
  dist::together(comm, "the memory plan (each rank checks its node)", [&] {
    if (const auto available = memory_per_rank(device, comm ? comm->world().local_size : 1))
      refuse_if_too_large(plan, *available, device);
  });
  return plan;
}

}  // namespace lathe::train
