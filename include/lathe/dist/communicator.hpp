// Collective communication between the processes of a data-parallel job, behind one interface
// with three backends: `mpi` (Open MPI, CPU tensors), `nccl` (c10d ProcessGroupNCCL, CUDA
// tensors) and `none` (a world of one, where every collective is the identity).
//
// Every collective is asynchronous: it returns a Work at once and runs in the background (MPI:
// on the communicator's own thread, in the order the calls were made; NCCL: on its stream).
// Every rank must issue the same collectives in the same order. wait() enforces the timeout:
// a collective that has not completed within DistOptions::timeout_s throws lathe::Error naming
// the ranks whose heartbeat stopped (each rank beats every second through the rendezvous store)
// and the step they were last at. After such an error the communicator is unusable and the
// process should exit; the launcher (mpirun, srun, torchrun) then ends the other ranks.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/dist/options.hpp"
#include "lathe/dist/world.hpp"

namespace c10d {
class Store;
}

namespace lathe::dist {

enum class ReduceOp { Sum, Max };

/// One collective in flight.
class Work {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~Work() = default;
  /// Blocks until the collective has completed on this rank (NCCL: until the current stream
  /// waits for it); throws lathe::Error on timeout or failure.
  virtual void wait() = 0;
  /// When the transfer ran, for overlap measurements: MPI records the communicator thread's
  /// start and end; NCCL the launch and the return of wait().
  Clock::time_point started{}, finished{};
};
using WorkPtr = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  int rank() const { return world_.rank; }
  int size() const { return world_.size; }
  const World& world() const { return world_; }
  /// Where the tensors given to the collectives must live (CPU for mpi, the rank's GPU for nccl).
  virtual at::Device device() const = 0;

  /// In place: every rank's `tensor` becomes the element-wise reduction over ranks.
  virtual WorkPtr all_reduce(const at::Tensor& tensor, ReduceOp op, const std::string& what) = 0;
  /// Sum over ranks of `input` (size() * output.numel() elements), of which rank r keeps the
  /// r-th part in `output`.
  virtual WorkPtr reduce_scatter(const at::Tensor& output, const at::Tensor& input, const std::string& what) = 0;
  /// `output` (size() * input.numel() elements) receives every rank's `input`, in rank order.
  virtual WorkPtr all_gather(const at::Tensor& output, const at::Tensor& input, const std::string& what) = 0;
  /// Every rank's `tensor` becomes `root`'s.
  virtual WorkPtr broadcast(const at::Tensor& tensor, int root, const std::string& what) = 0;
  /// Returns when every rank has reached it (or throws after the timeout).
  void barrier(const std::string& what);

  /// The step this rank is at, which its heartbeat reports to the others.
  void set_step(int64_t step);
  /// After a timeout: "rank 1 (last heartbeat at step 4)" for every rank whose heartbeat has
  /// stopped, or why none could be named. Takes a few seconds (it watches the heartbeats).
  std::string unresponsive_ranks();
  std::chrono::milliseconds timeout() const { return timeout_; }
  /// A collective timed out or failed: the communicator must not be used again.
  bool broken() const { return broken_; }

 protected:
  Communicator(World world, std::chrono::milliseconds timeout);
  /// Starts this rank's heartbeat through the rendezvous store (rank 0 serves it at `where`).
  void start_heartbeat(c10::intrusive_ptr<c10d::Store> store, std::string where);
  /// The error for a collective that did not complete in time; marks the communicator broken.
  [[noreturn]] void fail_timeout(const std::string& what);

  World world_;
  std::chrono::milliseconds timeout_;
  bool broken_ = false;

 private:
  struct Heartbeat;
  std::shared_ptr<Heartbeat> heartbeat_;
};

/// The backend `backend` resolves to in `world` on `device`: a world of one is none (unless a
/// launcher started it and `backend` names nccl or mpi); auto is nccl on CUDA and mpi on the CPU. Throws naming the key when the choice cannot work (nccl on
/// the CPU, mpi in a build without it, nccl in a build without CUDA).
Backend resolve_backend(Backend backend, const World& world, const at::Device& device);

/// The communicator of this process for `world` (one per process: MPI cannot be initialised
/// twice; a second call returns the first communicator). Connects to the other ranks, which
/// must call it too, within options.timeout_s.
std::shared_ptr<Communicator> world_communicator(const DistOptions& options, const World& world,
                                                 const at::Device& device);

/// Runs `work`, a part of the setup that each rank does on its own (rank 0 locking out_dir,
/// choosing the checkpoint...), then meets the other ranks: when any rank's `work` threw, every
/// rank throws at once, the failed rank its own error, the others lathe::Error naming that rank
/// and its message, rather than waiting in the next collective until distributed.timeout_s and
/// blaming a slow rank. `comm` null (one process): just runs `work`. `what` names the meeting.
void together(Communicator* comm, const std::string& what, const std::function<void()>& work);

/// The variables the nccl backend sets in its environment before it creates the c10d process
/// group, as (name, value), given the environment `getenv` reads (std::getenv by default).
/// TORCH_NCCL_ASYNC_ERROR_HANDLING=2 (clean up, keep the process): c10d's default (3) lets its
/// watchdog end the process when a collective times out, before the rank that waits can say
/// which rank stopped responding. A value the user set (TORCH_NCCL_ASYNC_ERROR_HANDLING or its
/// older name NCCL_ASYNC_ERROR_HANDLING) is left as it is.
std::vector<std::pair<std::string, std::string>> nccl_environment(
    const std::function<const char*(const char*)>& getenv = {});

/// The none backend: a world of one (for tests and single-process runs).
std::shared_ptr<Communicator> single_process_communicator();

}  // namespace lathe::dist
