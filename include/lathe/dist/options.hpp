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

struct DistOptions {
  Backend backend = Backend::Auto;
  /// Seconds a collective may wait for the slowest rank before the job ends with an error
  /// naming the ranks that stopped responding.
  int64_t timeout_s = 300;
  /// Gradient bucket size in MiB: a bucket's all-reduce starts as soon as backward has produced
  /// all of its gradients, while backward goes on with the rest.
  double bucket_mb = 25.0;
  /// ZeRO-1: gradients are reduce-scattered, each rank keeps and updates the AdamW state of
  /// its 1/world share of every bucket, and the parameters are all-gathered after the update.
  bool shard_optimizer = false;
  /// Communicate gradients in bfloat16 (half the bytes; the sum is rounded to 8 mantissa bits).
  bool bf16_grads = false;
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
  v.field("shard_optimizer", c.shard_optimizer, "ZeRO-1: reduce-scatter the gradients, keep and update 1/world "
                                                "of the optimizer state on each rank, all-gather the parameters. "
                                                "Checkpoints hold the whole state (any world size resumes them).");
  v.field("bf16_grads", c.bf16_grads, "Communicate gradients in bfloat16 (half the bytes, rounded sums).");
}

}  // namespace lathe::dist

LATHE_ENUM_TABLE(lathe::dist::Backend, {lathe::dist::Backend::Auto, "auto"}, {lathe::dist::Backend::Nccl, "nccl"},
                 {lathe::dist::Backend::Mpi, "mpi"}, {lathe::dist::Backend::None, "none"});
