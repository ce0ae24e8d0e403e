// What this lathe build and the machine it runs on offer: versions, devices, backends, threads.
#pragma once

#include <string>
#include <string_view>

namespace lathe {

/// The lines `lathe env` prints: lathe, LibTorch, CUDA (compiled / available, devices), cuDNN,
/// NCCL, MPI, ONNX and CPU threads (`lathe env` adds the data-parallel world it would join).
std::string environment_report();

/// One line of that report: `key` in a column of fixed width, then `value` and a newline (what
/// `lathe env` adds uses it too, so its values line up with the report's).
std::string environment_line(std::string_view key, const std::string& value);

/// LibTorch's version, "2.11.0".
std::string torch_version();

}  // namespace lathe
