// The backends behind world_communicator (private to the dist area).
#pragma once

#include <memory>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "lathe/dist/communicator.hpp"

namespace lathe::dist::detail {

/// The rendezvous store: rank 0 serves it at host:port (port 0: any free port), the others
/// connect, retrying until `timeout`. Errors name the address and the variables that set it.
c10::intrusive_ptr<c10d::TCPStore> connect_store(const World& world, const std::string& host, int port,
                                                 std::chrono::milliseconds timeout);

std::shared_ptr<Communicator> make_mpi(const DistOptions& options, const World& world);
std::shared_ptr<Communicator> make_nccl(const DistOptions& options, const World& world, const at::Device& device);

}  // namespace lathe::dist::detail
