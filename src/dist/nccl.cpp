// The nccl backend: c10d's ProcessGroupNCCL from the torch library, rendezvous through the c10d
// TCPStore that rank 0 serves at MASTER_ADDR:MASTER_PORT (torchrun and scripts/launch_local.sh
// set them; scripts/slurm/train.sbatch derives them from the allocation).

#include <cstdlib>

#include <ATen/Context.h>
#include <fmt/format.h>

#include "backends.hpp"
#include "lathe/core/error.hpp"

#ifdef LATHE_WITH_CUDA
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace lathe::dist::detail {

#ifndef LATHE_WITH_CUDA

std::shared_ptr<Communicator> make_nccl(const DistOptions&, const World&, const at::Device&) {
  throw Error("distributed.backend nccl: this lathe was built without CUDA");
}

#else

namespace {

// nccl_environment's value is c10d's CleanUpOnly mode.
static_assert(c10d::ErrorHandlingMode::CleanUpOnly == 2);

class NcclCommunicator;

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator* comm, c10::intrusive_ptr<c10d::Work> work, std::string what)
      : comm_(comm), work_(std::move(work)), what_(std::move(what)) {
    started = Clock::now();
  }
  void wait() override;

 private:
  NcclCommunicator* comm_;
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
};

class NcclCommunicator final : public Communicator {
 public:
  // One GPU per rank: the local rank picks it among the GPUs this task sees, whatever index
  // `device` carries.
  NcclCommunicator(const DistOptions& options, const World& world, const at::Device& device)
      : Communicator(world, std::chrono::seconds(options.timeout_s)),
        device_(device.type(),
                static_cast<at::DeviceIndex>(local_device(world, static_cast<int>(at::getNumGPUs())))) {
    if (world.master_addr.empty() || world.master_port == 0)
      throw Error(fmt::format("distributed.backend nccl: MASTER_ADDR and MASTER_PORT must name the rendezvous (rank "
                              "0's host and a free port); torchrun and scripts/launch_local.sh set them, "
                              "scripts/slurm/train.sbatch derives them (rank {} of {}, {})",
                              world.rank, world.size, world.launcher));
    auto store = connect_store(world, world.master_addr, world.master_port, timeout_);
    // Read by the process group's constructor: its watchdog must leave a timed-out collective
    // to wait(), which names the rank that stopped responding.
    for (const auto& [name, value] : nccl_environment()) setenv(name.c_str(), value.c_str(), /*overwrite=*/0);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout_;
    pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store),
                                                      world.rank, world.size, opts);
    start_heartbeat(store, fmt::format("{}:{}", world.master_addr, world.master_port));
  }
  std::string backend() const override { return "nccl"; }
  at::Device device() const override { return device_; }

  WorkPtr all_reduce(const at::Tensor& t, ReduceOp op, const std::string& what) override {
    std::vector<at::Tensor> ts{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == ReduceOp::Max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    return wrap(pg_->allreduce(ts, o), what);
  }
  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, const std::string& what) override {
    at::Tensor o = out, i = in;
    return wrap(pg_->_reduce_scatter_base(o, i), what);
  }
  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in, const std::string& what) override {
    at::Tensor o = out, i = in;
    return wrap(pg_->_allgather_base(o, i), what);
  }
  WorkPtr broadcast(const at::Tensor& t, int root, const std::string& what) override {
    std::vector<at::Tensor> ts{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    return wrap(pg_->broadcast(ts, o), what);
  }
  [[noreturn]] void timed_out(const std::string& what) { fail_timeout(what); }

 private:
  WorkPtr wrap(c10::intrusive_ptr<c10d::Work> w, const std::string& what) {
    return std::make_shared<NcclWork>(this, std::move(w), what);
  }
  at::Device device_;
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
};

void NcclWork::wait() {
  bool ok = false;
  try {
    ok = work_->wait(comm_->timeout());
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (msg.find("imeout") == std::string::npos) throw Error("nccl: " + what_ + " failed: " + msg.substr(0, msg.find('\n')));
  }
  if (!ok) comm_->timed_out(what_);
  finished = Clock::now();
}

}  // namespace

std::shared_ptr<Communicator> make_nccl(const DistOptions& options, const World& world, const at::Device& device) {
  return std::make_shared<NcclCommunicator>(options, world, device);
}

#endif

}  // namespace lathe::dist::detail
