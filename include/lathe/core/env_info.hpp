// What this lathe build and the machine it runs on offer: versions, devices, backends, threads.
#pragma once

#include <string>

namespace lathe {

/// The lines `lathe env` prints: lathe, LibTorch, CUDA (compiled / available, devices), cuDNN,
/// NCCL, MPI, ONNX and CPU threads (`lathe env` adds the data-parallel world it would join).
std::string environment_report();

/// LibTorch's version, "2.11.0".
std::string torch_version();

}  // namespace lathe
