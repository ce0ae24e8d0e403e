// Who this process is in a multi-process job, read from the launcher's environment.
//
// Order: torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; else Open MPI's
// OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE (mpirun); else SLURM's
// SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID (a task of `srun`; a batch script itself,
// which has SLURM_NTASKS but is one process, is not a world); else a world of one.
// MASTER_ADDR / MASTER_PORT name the rendezvous (the c10d TCPStore that rank 0 serves).
#pragma once

#include <functional>
#include <string>

namespace lathe::dist {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;   // rank on this node: picks the GPU
  int local_size = 1;
  std::string launcher = "none";  // torchrun, mpirun, srun or none: which variables were read
  std::string master_addr;        // MASTER_ADDR, empty when not set
  int master_port = 0;            // MASTER_PORT, 0 when not set
  bool distributed() const { return size > 1; }
  /// "rank 1 of 2 (local 1 of 2, mpirun), rendezvous host:port".
  std::string describe() const;
};

/// Reads the world from the environment; `getenv` is std::getenv unless a test passes its own.
/// Malformed values are refused naming the variable (lathe::Error).
World detect_world(const std::function<const char*(const char*)>& getenv = {});

/// The index of the GPU this rank uses among the `device_count` it sees: local_rank modulo the
/// count, as torchrun and torch.distributed's launchers choose. A task that sees only its own
/// GPU (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES per rank) has local ranks 0..N-1 but one
/// device, cuda:0. Throws naming the rank when it sees none.
int local_device(const World& world, int device_count);

}  // namespace lathe::dist
