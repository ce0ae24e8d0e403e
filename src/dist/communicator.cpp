// The communicator base (barrier, heartbeat, timeout messages), the none backend and the factory.

#include "lathe/dist/communicator.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backends.hpp"
#include "lathe/core/error.hpp"

namespace lathe::dist {

namespace {

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }
std::string beat_key(int rank) { return "lathe/beat/" + std::to_string(rank); }

}  // namespace

/// Every second, this rank writes "<count> <step>" under lathe/beat/<rank> in the rendezvous
/// store. A rank that died, stalled (SIGSTOP, a hung kernel) or lost its network stops beating.
struct Communicator::Heartbeat {
  c10::intrusive_ptr<c10d::Store> store;
  std::string where;
  int rank = 0;
  std::atomic<int64_t> step{0};
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;

  void run() {
    try {
      for (int64_t n = 1;; ++n) {
        store->set(beat_key(rank), bytes(fmt::format("{} {}", n, step.load())));
        std::unique_lock lock(mu);
        if (cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop; })) return;
      }
    } catch (const std::exception&) {
      // The store is gone (rank 0 ended): the next collective's timeout says so.
    }
  }
  ~Heartbeat() {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (thread.joinable()) thread.join();
  }
};

Communicator::Communicator(World world, std::chrono::milliseconds timeout)
    : world_(std::move(world)), timeout_(timeout) {}

void Communicator::start_heartbeat(c10::intrusive_ptr<c10d::Store> store, std::string where) {
  auto hb = std::make_shared<Heartbeat>();
  hb->store = std::move(store);
  hb->where = std::move(where);
  hb->rank = rank();
  hb->thread = std::thread([raw = hb.get()] { raw->run(); });
  heartbeat_ = std::move(hb);
}

void Communicator::set_step(int64_t step) {
  if (heartbeat_) heartbeat_->step.store(step);
}

std::string Communicator::unresponsive_ranks() {
  if (!heartbeat_) return "no heartbeat to tell which rank";
  try {
    // A connection of our own: the heartbeat thread's may be busy or broken.
    auto store = heartbeat_->store->clone();
    store->setTimeout(std::chrono::seconds(5));
    auto read = [&] {
      std::map<int, std::string> beats;
      for (int r = 0; r < size(); ++r)
        if (r != rank() && store->check({beat_key(r)})) beats[r] = text(store->get(beat_key(r)));
      return beats;
    };
    const auto before = read();
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
    const auto after = read();
    std::vector<std::string> gone;
    for (int r = 0; r < size(); ++r) {
      if (r == rank()) continue;
      auto b = before.find(r), a = after.find(r);
      if (a == after.end()) gone.push_back(fmt::format("rank {} (never joined)", r));
      else if (b != before.end() && b->second == a->second)
        gone.push_back(fmt::format("rank {} (no heartbeat for 3 s; last at step {})", r,
                                   a->second.substr(a->second.find(' ') + 1)));
    }
    if (gone.empty()) return "every rank's heartbeat is alive: one is slower than the timeout allows (raise "
                            "distributed.timeout_s)";
    return fmt::format("{} stopped responding", fmt::join(gone, ", "));
  } catch (const std::exception&) {
    return rank() == 0 ? "the rendezvous store does not answer"
                       : fmt::format("rank 0 stopped responding (the rendezvous store it serves at {} is gone)",
                                     heartbeat_->where);
  }
}

void Communicator::fail_timeout(const std::string& what) {
  broken_ = true;
  const auto who = unresponsive_ranks();
  throw Error(fmt::format("rank {}: {} did not complete within {} s (distributed.timeout_s): {}", rank(), what,
                          timeout_.count() / 1000, who));
}

void Communicator::barrier(const std::string& what) {
  auto t = at::zeros({1}, at::TensorOptions(device()).dtype(at::kFloat));
  all_reduce(t, ReduceOp::Sum, what)->wait();
}

namespace {

class DoneWork final : public Work {
 public:
  DoneWork() { started = finished = Clock::now(); }
  void wait() override {}
};

/// A world of one: every collective is the identity (or a copy).
class NoneCommunicator final : public Communicator {
 public:
  NoneCommunicator() : Communicator(World{}, std::chrono::hours(1)) {}
  std::string backend() const override { return "none"; }
  at::Device device() const override { return at::kCPU; }
  WorkPtr all_reduce(const at::Tensor&, ReduceOp, const std::string&) override { return done(); }
  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, const std::string&) override {
    out.copy_(in.view_as(out));
    return done();
  }
  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in, const std::string&) override {
    out.copy_(in.view_as(out));
    return done();
  }
  WorkPtr broadcast(const at::Tensor&, int, const std::string&) override { return done(); }

 private:
  static WorkPtr done() { return std::make_shared<DoneWork>(); }
};

}  // namespace

namespace detail {

c10::intrusive_ptr<c10d::TCPStore> connect_store(const World& world, const std::string& host, int port,
                                                 std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = world.rank == 0;
  o.numWorkers = std::nullopt;
  o.waitWorkers = false;
  o.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, o);
  } catch (const std::exception& e) {
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    throw Error(world.rank == 0
                    ? fmt::format("rank 0: cannot serve the rendezvous store on port {} of {} (MASTER_PORT): {}", port,
                                  host, why)
                    : fmt::format("rank {}: cannot reach the rendezvous store of rank 0 at {}:{} within {} s "
                                  "(MASTER_ADDR / MASTER_PORT; is rank 0 running?): {}",
                                  world.rank, host, port, timeout.count() / 1000, why));
  }
}

}  // namespace detail

Backend resolve_backend(Backend backend, const World& world, const at::Device& device) {
  // One process is none, unless a launcher started it and the recipe names a backend: a
  // one-rank nccl or mpi job runs the data-parallel path on itself (a smoke test of a cluster).
  if (!world.distributed() && (world.launcher == "none" || backend == Backend::Auto)) return Backend::None;
  if (backend == Backend::Auto) backend = device.is_cuda() ? Backend::Nccl : Backend::Mpi;
  if (backend == Backend::None)
    throw Error(fmt::format("distributed.backend is none but the launcher started {} processes ({}); set "
                            "distributed.backend: auto, or launch one process",
                            world.size, world.launcher));
  if (backend == Backend::Nccl && !device.is_cuda())
    throw Error("distributed.backend is nccl, which needs CUDA tensors, but training runs on the CPU; use mpi");
  if (backend == Backend::Mpi && device.is_cuda())
    throw Error("distributed.backend is mpi, which reduces CPU tensors, but training runs on CUDA; use nccl");
#ifndef LATHE_WITH_MPI
  if (backend == Backend::Mpi)
    throw Error("distributed.backend mpi: this lathe was built without MPI (-DLATHE_WITH_MPI=OFF)");
#endif
#ifndef LATHE_WITH_CUDA
  if (backend == Backend::Nccl) throw Error("distributed.backend nccl: this lathe was built without CUDA");
#endif
  return backend;
}

void together(Communicator* comm, const std::string& what, const std::function<void()>& work) {
  if (!comm) return work();
  std::exception_ptr failed;
  std::string error;
  try {
    work();
  } catch (const std::exception& e) {
    failed = std::current_exception();
    error = e.what();
    if (error.empty()) error = "an error without a message";
  }
  // Every rank's message length, then every message padded to the longest.
  const auto n = comm->size();
  auto mine = at::full({1}, static_cast<int64_t>(error.size()), at::kLong).to(comm->device());
  auto lengths = at::empty({n}, mine.options());
  comm->all_gather(lengths, mine, what)->wait();
  const auto len = lengths.cpu();
  const int64_t longest = len.max().item<int64_t>();
  if (longest == 0) return;
  auto bytes = at::zeros({longest}, at::kByte);
  std::memcpy(bytes.data_ptr(), error.data(), error.size());
  auto all = at::empty({n * longest}, at::TensorOptions(comm->device()).dtype(at::kByte));
  comm->all_gather(all, bytes.to(comm->device()), what)->wait();
  if (failed) std::rethrow_exception(failed);
  const auto host = all.cpu();
  for (int r = 0; r < n; ++r)
    if (const int64_t k = len[r].item<int64_t>(); k > 0) {
      const std::string msg(reinterpret_cast<const char*>(host.data_ptr<uint8_t>()) + r * longest,
                            static_cast<std::size_t>(k));
      throw Error(fmt::format("rank {}: rank {} failed at {}, so this rank stops too: {}", comm->rank(), r, what,
                              msg));
    }
}

std::vector<std::pair<std::string, std::string>> nccl_environment(
    const std::function<const char*(const char*)>& getenv_fn) {
  const auto env = getenv_fn ? getenv_fn : [](const char* n) -> const char* { return std::getenv(n); };
  auto set = [&](const char* name) { return env(name) && *env(name); };
  std::vector<std::pair<std::string, std::string>> out;
  if (!set("TORCH_NCCL_ASYNC_ERROR_HANDLING") && !set("NCCL_ASYNC_ERROR_HANDLING"))
    out.emplace_back("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2");
  return out;
}

std::shared_ptr<Communicator> single_process_communicator() { return std::make_shared<NoneCommunicator>(); }

std::shared_ptr<Communicator> world_communicator(const DistOptions& options, const World& world,
                                                 const at::Device& device) {
  static std::mutex mu;
  static std::shared_ptr<Communicator> the;  // one per process, finalised at exit
  std::lock_guard lock(mu);
  const auto backend = resolve_backend(options.backend, world, device);
  if (the) {
    if (the->backend() != enum_name(backend) || the->size() != world.size)
      throw Error(fmt::format("this process already communicates through {} in a world of {}", the->backend(),
                              the->size()));
    return the;
  }
  switch (backend) {
    case Backend::Mpi: the = detail::make_mpi(options, world); break;
    case Backend::Nccl: the = detail::make_nccl(options, world, device); break;
    default: the = single_process_communicator(); break;
  }
  return the;
}

}  // namespace lathe::dist
