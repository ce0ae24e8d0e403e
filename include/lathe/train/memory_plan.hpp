// What a rank will hold for its model, before it holds it: the bytes of parameters, gradients,
// optimizer state and communication buffers each data-parallel strategy keeps per rank, and
// the refusal of a plan the machine cannot hold. Activations are not counted (they depend on
// the batch, the sequence and train.activation_checkpointing).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include "lathe/dist/communicator.hpp"
#include "lathe/dist/options.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::train {

struct MemoryPlan {
  dist::Strategy strategy = dist::Strategy::Ddp;
  int world = 1;
  double params = 0;     // bytes per rank
  double grads = 0;      // bytes per rank kept after backward
  double optimizer = 0;  // bytes per rank
  double buffers = 0;    // communication buffers per rank (flat buckets, shards)
  double frozen = 0;     // weights that do not train (a base under adapters, quantized or not), whole per rank
  double total() const { return params + grads + optimizer + buffers + frozen; }
  /// "zero2 over 2 ranks: per rank 0.47 GiB parameters + 0.12 GiB gradients + ... = 1.30 GiB
  /// (activations not counted)"
  std::string describe() const;
};

/// What the plan counts of a model: its float32 trainable parameters, and how many of them are
/// in its `blocks` transformer blocks (fsdp shards those); and the bytes of what does not train
/// (frozen parameters, quantized weights).
struct ModelSize {
  int64_t parameters = 0;
  int64_t block_parameters = 0;
  int64_t blocks = 0;
  double frozen_bytes = 0;
};
ModelSize model_size(const torch::nn::Module& model);

/// The plan of a model of that size trained with `optim` by `world` ranks under `dist` (one
/// process: world 1, no buffers), `grad_accum` micro-batches a step.
MemoryPlan plan_memory(const ModelSize& size, const recipe::OptimConfig& optim, const dist::DistOptions& dist,
                       int world, int64_t grad_accum = 1);

/// Bytes the ranks of one node can use on `device`: the GPU's memory (one rank per GPU) or the
/// machine's memory (its cgroup limit when lower) shared by `ranks_per_node` ranks; nothing
/// when it cannot be read.
std::optional<double> memory_per_rank(const at::Device& device, int ranks_per_node);

/// The most resident memory this process has held so far (getrusage's ru_maxrss), in bytes.
double peak_rss_bytes();

/// Throws lathe::Error with the plan's figures when it needs more than `available` bytes.
void refuse_if_too_large(const MemoryPlan& plan, double available, const at::Device& device);

/// The plan of `model` trained by `recipe` (over the ranks of `comm`, or one process when null),
/// refused on every rank when some rank's node cannot hold it.
MemoryPlan check_memory_plan(const torch::nn::Module& model, const recipe::Recipe& recipe, dist::Communicator* comm,
                             const at::Device& device);

}  // namespace lathe::train
