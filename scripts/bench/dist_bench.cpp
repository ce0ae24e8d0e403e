// All-reduce bus bandwidth of lathe's mpi communicator against MPI_Allreduce called directly on
// the same buffers (what an OSU-style allreduce benchmark measures), side by side, per size.
// Run under mpirun:  mpirun -n 2 build/lathe_bench_dist [REPS]
//
// busbw = 2 (n - 1) / n * bytes / time, the figure nccl-tests and OSU report: the bandwidth
// each rank's link must carry in a ring all-reduce.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/dist/communicator.hpp"
#include "lathe/dist/world.hpp"

#ifdef LATHE_WITH_MPI
#include <mpi.h>
#endif

int main(int argc, char** argv) {
#ifndef LATHE_WITH_MPI
  std::puts("lathe_bench_dist: built without MPI");
  return 0;
#else
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  const auto world = lathe::dist::detect_world();
  if (!world.distributed()) {
    std::puts("run under mpirun: mpirun -n 2 build/lathe_bench_dist");
    return 2;
  }
  lathe::dist::DistOptions o;
  o.backend = lathe::dist::Backend::Mpi;
  auto comm = lathe::dist::world_communicator(o, world, at::kCPU);
  using Clock = std::chrono::steady_clock;
  const double n = comm->size();
  if (comm->rank() == 0)
    std::puts("size_MiB  lathe_busbw_GBs  mpi_busbw_GBs  ratio");
  for (int64_t mib : {1, 4, 16, 64}) {
    auto t = at::ones({mib * 1024 * 1024 / 4});
    const double bytes = static_cast<double>(t.numel()) * 4;
    auto time = [&](auto&& op) {
      op();  // warm-up
      comm->barrier("bench");
      double best = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = Clock::now();
        op();
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
      }
      // The slowest rank's best time is the collective's.
      auto b = at::full({1}, best, at::kDouble);
      comm->all_reduce(b, lathe::dist::ReduceOp::Max, "bench")->wait();
      return b.item<double>();
    };
    const double ours = time([&] { comm->all_reduce(t, lathe::dist::ReduceOp::Sum, "bench")->wait(); });
    // Raw MPI on this thread while the communicator's thread is idle (its queue is empty after
    // the wait): the two never call MPI at the same time.
    const double raw = time([&] {
      MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
    const double f = 2 * (n - 1) / n * bytes / 1e9;
    if (comm->rank() == 0)
      std::printf("%8lld  %15.2f  %13.2f  %5.2fx\n", static_cast<long long>(mib), f / ours, f / raw, raw / ours);
  }
  return 0;
#endif
}
