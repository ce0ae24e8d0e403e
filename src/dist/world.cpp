// The world from the launcher's environment.

#include "lathe/dist/world.hpp"

#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "lathe/core/error.hpp"

namespace lathe::dist {

namespace {

std::optional<int> read_int(const std::function<const char*(const char*)>& env, const char* name, int lo) {
  const char* v = env(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > 1'000'000)
    throw Error(fmt::format("{}='{}' is not {}", name, v, lo == 0 ? "a rank (an integer >= 0)" : "a count (>= 1)"));
  return static_cast<int>(x);
}

}  // namespace

std::string World::describe() const {
  std::string s = fmt::format("rank {} of {} (local {} of {}, {})", rank, size, local_rank, local_size, launcher);
  if (!master_addr.empty()) s += fmt::format(", rendezvous {}:{}", master_addr, master_port);
  return s;
}

World detect_world(const std::function<const char*(const char*)>& getenv_fn) {
  const auto env = getenv_fn ? getenv_fn : [](const char* n) -> const char* { return std::getenv(n); };
  struct Names {
    const char* launcher;
    const char *rank, *size, *local_rank, *local_size;
  };
  // torchrun first: it may itself run inside an allocation whose SLURM_* describe the job.
  static const Names kLaunchers[] = {
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE"},
  };
  World w;
  for (const auto& n : kLaunchers) {
    const auto size = read_int(env, n.size, 1);
    if (!size) continue;
    const auto rank = read_int(env, n.rank, 0);
    if (!rank) throw Error(fmt::format("{} is set but {} is not", n.size, n.rank));
    if (*rank >= *size) throw Error(fmt::format("{}={} is outside {}={}", n.rank, *rank, n.size, *size));
    w.launcher = n.launcher;
    w.size = *size;
    w.rank = *rank;
    w.local_rank = read_int(env, n.local_rank, 0).value_or(0);
    // SLURM_STEP_TASKS_PER_NODE reads "2" or "2(x3)" or "2,1": the count on the first node.
    if (const char* v = env(n.local_size); v && *v) w.local_size = std::max(1, std::atoi(v));
    else w.local_size = w.size;
    break;
  }
  if (const char* a = env("MASTER_ADDR"); a && *a) w.master_addr = a;
  if (auto p = read_int(env, "MASTER_PORT", 1)) {
    if (*p > 65535) throw Error(fmt::format("MASTER_PORT={} is not a port (1..65535)", *p));
    w.master_port = *p;
  }
  return w;
}

int local_device(const World& world, int device_count) {
  if (device_count < 1)
    throw Error(fmt::format("rank {} (local rank {}, {}) sees no CUDA device; check CUDA_VISIBLE_DEVICES and the "
                            "GPUs the launcher gives each task, or train on the CPU (run.device: cpu)",
                            world.rank, world.local_rank, world.launcher));
  return world.local_rank % device_count;
}

}  // namespace lathe::dist
