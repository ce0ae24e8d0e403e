// The mpi backend: Open MPI collectives on CPU tensors, run by one communication thread in the
// order they were issued (so they overlap the caller's computation), with the wait timeout and
// heartbeat of the Communicator base.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include <unistd.h>

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <fmt/format.h>

#include "backends.hpp"
#include "lathe/core/error.hpp"

#ifdef LATHE_WITH_MPI
#include <mpi.h>
#endif

namespace lathe::dist::detail {

#ifndef LATHE_WITH_MPI

std::shared_ptr<Communicator> make_mpi(const DistOptions&, const World&) {
  throw Error("distributed.backend mpi: this lathe was built without MPI (-DLATHE_WITH_MPI=OFF)");
}

#else

namespace {

extern "C" void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = static_cast<c10::BFloat16>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

class MpiCommunicator;

class MpiWork final : public Work {
 public:
  MpiWork(MpiCommunicator* comm, std::string what) : comm_(comm), what_(std::move(what)) {}
  void wait() override;
  void finish(std::string error) {
    {
      std::lock_guard lock(mu_);
      finished = Clock::now();
      error_ = std::move(error);
      done_ = true;
    }
    cv_.notify_all();
  }

 private:
  MpiCommunicator* comm_;
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const DistOptions& options, const World& world)
      : Communicator(world, std::chrono::seconds(options.timeout_s)) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      owns_mpi_ = true;
      if (provided < MPI_THREAD_SERIALIZED)
        throw Error("distributed.backend mpi: this MPI library does not support calls from a communication thread "
                    "(MPI_THREAD_SERIALIZED)");
    }
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank != world.rank || size != world.size)
      throw Error(fmt::format("distributed.backend mpi: MPI sees rank {} of {}, the {} environment rank {} of {}; the "
                              "mpi backend needs processes started by mpirun or srun --mpi=pmix (a torchrun launch "
                              "on the CPU has no MPI world)",
                              rank, size, world.launcher, world.rank, world.size));
    MPI_Op_create(&bf16_sum, /*commute=*/1, &bf16_sum_);

    // The heartbeat store: rank 0 serves it on a free port (or MASTER_PORT) and tells the others.
    char where[256] = {};
    c10::intrusive_ptr<c10d::TCPStore> store;
    if (rank == 0) {
      char host[200] = {};
      gethostname(host, sizeof(host) - 1);
      const std::string addr = world.master_addr.empty() ? host : world.master_addr;
      store = connect_store(world, addr, world.master_port, timeout_);
      fmt::format_to_n(where, sizeof(where) - 1, "{}:{}", addr, store->getPort());
    }
    MPI_Bcast(where, sizeof(where), MPI_CHAR, 0, MPI_COMM_WORLD);
    const std::string w = where;
    if (rank != 0) store = connect_store(world, w.substr(0, w.rfind(':')), std::stoi(w.substr(w.rfind(':') + 1)), timeout_);
    start_heartbeat(store, w);
    thread_ = std::thread([this] { loop(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (broken()) {
      // The thread is stuck in a collective that will never complete: leave it (and MPI) to
      // the process exit; the launcher ends the other ranks.
      thread_.detach();
      return;
    }
    thread_.join();
    MPI_Op_free(&bf16_sum_);
    if (owns_mpi_) MPI_Finalize();
  }

  std::string backend() const override { return "mpi"; }
  at::Device device() const override { return at::kCPU; }

  WorkPtr all_reduce(const at::Tensor& t, ReduceOp op, const std::string& what) override {
    check(t, what);
    const auto type = datatype(t, what);
    MPI_Op mop = op == ReduceOp::Max ? MPI_MAX : (t.scalar_type() == at::kBFloat16 ? bf16_sum_ : MPI_SUM);
    if (op == ReduceOp::Max && t.scalar_type() == at::kBFloat16)
      throw std::invalid_argument("mpi: max of bfloat16 tensors is not supported (" + what + ")");
    return submit(what, [t, type, mop] {
      return MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), type, mop, MPI_COMM_WORLD);
    });
  }

  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, const std::string& what) override {
    check(out, what);
    check(in, what);
    if (in.numel() != out.numel() * size())
      throw std::invalid_argument(fmt::format("reduce_scatter ({}): input of {} elements for {} ranks of {}", what,
                                              in.numel(), size(), out.numel()));
    const auto type = datatype(in, what);
    MPI_Op mop = in.scalar_type() == at::kBFloat16 ? bf16_sum_ : MPI_SUM;
    return submit(what, [out, in, type, mop] {
      return MPI_Reduce_scatter_block(in.data_ptr(), out.data_ptr(), static_cast<int>(out.numel()), type, mop,
                                      MPI_COMM_WORLD);
    });
  }

  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in, const std::string& what) override {
    check(out, what);
    check(in, what);
    if (out.numel() != in.numel() * size())
      throw std::invalid_argument(fmt::format("all_gather ({}): output of {} elements for {} ranks of {}", what,
                                              out.numel(), size(), in.numel()));
    const auto type = datatype(in, what);
    return submit(what, [out, in, type] {
      return MPI_Allgather(in.data_ptr(), static_cast<int>(in.numel()), type, out.data_ptr(),
                           static_cast<int>(in.numel()), type, MPI_COMM_WORLD);
    });
  }

  WorkPtr broadcast(const at::Tensor& t, int root, const std::string& what) override {
    check(t, what);
    const auto type = datatype(t, what);
    return submit(what, [t, type, root] {
      return MPI_Bcast(t.data_ptr(), static_cast<int>(t.numel()), type, root, MPI_COMM_WORLD);
    });
  }

  [[noreturn]] void timed_out(const std::string& what) { fail_timeout(what); }

 private:
  static void check(const at::Tensor& t, const std::string& what) {
    if (!t.device().is_cpu() || !t.is_contiguous())
      throw std::invalid_argument("mpi: " + what + " needs a contiguous CPU tensor");
    if (t.numel() > std::numeric_limits<int>::max())
      throw std::invalid_argument("mpi: " + what + " is larger than MPI's int count");
  }
  static MPI_Datatype datatype(const at::Tensor& t, const std::string& what) {
    switch (t.scalar_type()) {
      case at::kFloat: return MPI_FLOAT;
      case at::kDouble: return MPI_DOUBLE;
      case at::kLong: return MPI_INT64_T;
      case at::kInt: return MPI_INT32_T;
      case at::kBFloat16: return MPI_UINT16_T;  // summed by bf16_sum
      case at::kByte: return MPI_UINT8_T;
      default: throw std::invalid_argument("mpi: " + what + " has an unsupported dtype");
    }
  }

  WorkPtr submit(const std::string& what, std::function<int()> call) {
    if (broken()) throw Error(fmt::format("rank {}: the communicator failed earlier; {} cannot run", rank(), what));
    auto work = std::make_shared<MpiWork>(this, what);
    {
      std::lock_guard lock(mu_);
      queue_.emplace_back([work, call = std::move(call), what] {
        work->started = Work::Clock::now();
        const int rc = call();
        std::string error;
        if (rc != MPI_SUCCESS) {
          char msg[MPI_MAX_ERROR_STRING];
          int len = 0;
          MPI_Error_string(rc, msg, &len);
          error = fmt::format("mpi: {} failed: {}", what, std::string(msg, static_cast<std::size_t>(len)));
        }
        work->finish(std::move(error));
      });
    }
    cv_.notify_all();
    return work;
  }

  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left to run
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();
    }
  }

  bool owns_mpi_ = false;
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

void MpiWork::wait() {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, comm_->timeout(), [&] { return done_; })) {
    lock.unlock();
    comm_->timed_out(what_);
  }
  if (!error_.empty()) throw Error(error_);
}

}  // namespace

std::shared_ptr<Communicator> make_mpi(const DistOptions& options, const World& world) {
  return std::make_shared<MpiCommunicator>(options, world);
}

#endif

}  // namespace lathe::dist::detail
