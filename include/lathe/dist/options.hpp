// What a data-parallel run is configured with: the communicator backend, its timeout, the
// gradient buckets and the sharded optimizer. Declared once here; the recipe's `distributed:`
// section is this struct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lathe/core/enum_table.hpp"
#include "lathe/core/schema.hpp"

namespace lathe::dist {

/// nccl: c10d ProcessGroupNCCL (CUDA tensors); mpi: OpenMPI (CPU tensors); none: one process;
/// auto: nccl when training on CUDA, mpi on the CPU, none in a world of one.
enum class Backend { Auto, Nccl, Mpi, None };

/// What each rank keeps whole and what it keeps 1/world of, from least to most sharded.
/// ddp: everything whole, gradients all-reduced. zero1: the optimizer state sharded (gradients
/// reduce-scattered, parameters all-gathered after the update). zero2: zero1, and no whole
/// gradient kept once its bucket is reduce-scattered. fsdp (ZeRO-3): zero2, and each transformer
/// block's parameters sharded too, gathered just before the block runs and freed after.
enum class Strategy { Ddp, Zero1, Zero2, Fsdp };

/// fsdp: the dtype a block's parameters are gathered and computed in (FSDP2's
/// MixedPrecisionPolicy.param_dtype): fp32, or the autocast dtype of train.precision. The masters
/// the optimizer updates, the checkpoints and the model after training stay float32.
enum class ParamDtype { Fp32, Bf16, Fp16 };

struct DistOptions {
  Backend backend = Backend::Auto;
  /// Seconds a collective may wait for the slowest rank before the job ends with an error
  /// naming the ranks that stopped responding.
  int64_t timeout_s = 300;
  /// Gradient bucket size in MiB: a bucket's all-reduce starts as soon as backward has produced
  /// all of its gradients, while backward goes on with the rest.
  double bucket_mb = 25.0;
  Strategy strategy = Strategy::Ddp;
  /// The older spelling of strategy: zero1 (true with strategy ddp means zero1).
  bool shard_optimizer = false;
  /// Communicate gradients in bfloat16 (half the bytes; the sum is rounded to 8 mantissa bits).
  bool bf16_grads = false;
  /// fsdp: free a block's gathered parameters after its forward (gather them again for its
  /// backward); false keeps them from the forward to the block's backward.
  bool reshard_after_forward = true;
  /// fsdp: gather the blocks' parameters in this dtype (half the bytes of every gather and of the
  /// blocks held whole under bf16 / fp16); must be fp32 or train.precision.
  ParamDtype param_dtype = ParamDtype::Fp32;

  /// The strategy this run uses: `strategy`, or zero1 where only shard_optimizer says so.
  Strategy resolved_strategy() const {
    return shard_optimizer && strategy == Strategy::Ddp ? Strategy::Zero1 : strategy;
  }
  /// Whether the optimizer state is sharded (zero1 and above).
  bool sharded() const { return resolved_strategy() != Strategy::Ddp; }
};

template <class V>
void visit(V& v, DistOptions& c) {
  v.field("backend", c.backend, "Gradient communication: nccl (GPUs), mpi (CPUs, under mpirun or srun), none (one "
                                "process); auto picks nccl on CUDA and mpi on the CPU when the world is larger "
                                "than one.");
  v.field("timeout_s", c.timeout_s, "Seconds a collective waits for the slowest rank before the job ends with an "
                                    "error naming the ranks that stopped responding.",
          at_least(1));
  v.field("bucket_mb", c.bucket_mb, "Gradient bucket size in MiB; a bucket is reduced as soon as backward has "
                                    "produced it, overlapping the rest of backward.",
          greater_than(0.0));
  v.field("strategy", c.strategy,
          "ddp: every rank holds the whole model, gradients and optimizer state; zero1: gradients "
          "reduce-scattered, each rank keeps and updates 1/world of the optimizer state, parameters all-gathered "
          "after the update; zero2: zero1, and each bucket's whole gradients freed once it is reduce-scattered; "
          "fsdp: zero2, and every transformer block's parameters sharded as well, all-gathered just before the "
          "block's forward (the next block's gather prefetched) and again before its backward, freed after use, "
          "its gradients reduce-scattered as soon as its backward is done (embeddings, final norm and head stay "
          "whole, their gradients and optimizer state sharded). "
          "The start-up line prints the bytes per rank (docs/distributed.md). Checkpoints hold whole tensors: any "
          "strategy at any world size resumes them.");
  v.field("shard_optimizer", c.shard_optimizer, "The older spelling of strategy: zero1 (true with strategy ddp "
                                                "means zero1; with zero2 it is refused as a contradiction).");
  v.field("bf16_grads", c.bf16_grads, "Communicate gradients in bfloat16 (half the bytes, rounded sums).");
  v.field("reshard_after_forward", c.reshard_after_forward,
          "fsdp: free a block's gathered parameters after its forward and gather them again for its backward; "
          "false keeps them from the forward to the block's backward (less communication, more memory).");
  v.field("param_dtype", c.param_dtype,
          "fsdp: the dtype blocks' parameters are gathered and computed in (FSDP2's param_dtype): fp32, or "
          "train.precision's bf16 / fp16 (half the bytes of each gather and of the blocks held whole; their "
          "gradients come in that dtype and are reduced as bf16_grads says). The float32 masters, the "
          "checkpoints and the trained model are unchanged.");
}

}  // namespace lathe::dist

LATHE_ENUM_TABLE(lathe::dist::Backend, {lathe::dist::Backend::Auto, "auto"}, {lathe::dist::Backend::Nccl, "nccl"},
                 {lathe::dist::Backend::Mpi, "mpi"}, {lathe::dist::Backend::None, "none"});
LATHE_ENUM_TABLE(lathe::dist::Strategy, {lathe::dist::Strategy::Ddp, "ddp"}, {lathe::dist::Strategy::Zero1, "zero1"},
                 {lathe::dist::Strategy::Zero2, "zero2"}, {lathe::dist::Strategy::Fsdp, "fsdp"});
LATHE_ENUM_TABLE(lathe::dist::ParamDtype, {lathe::dist::ParamDtype::Fp32, "fp32"},
                 {lathe::dist::ParamDtype::Bf16, "bf16"}, {lathe::dist::ParamDtype::Fp16, "fp16"});
