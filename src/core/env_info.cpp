#include "lathe/core/env_info.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/Version.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>

#include <cstdlib>
#include <thread>

#include "lathe/core/build_info.hpp"

#ifdef LATHE_WITH_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <nccl.h>
#include <torch/csrc/cuda/nccl.h>
#endif
#ifdef LATHE_WITH_MPI
#include <mpi.h>
#endif
#include <onnx/onnx_pb.h>

namespace lathe {
namespace {

/// The vectorised kernel set ATen dispatches to, from its build summary.
std::string cpu_capability() {
  const std::string config = at::show_config();
  const std::string_view tag = "CPU capability usage: ";
  auto pos = config.find(tag);
  if (pos == std::string::npos) return "unknown";
  pos += tag.size();
  return config.substr(pos, config.find('\n', pos) - pos);
}

std::string version_of(long v, long major_div, long minor_div) {
  return fmt::format("{}.{}.{}", v / major_div, (v % major_div) / minor_div, v % minor_div);
}

}  // namespace

std::string torch_version() {
  return fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
}

std::string environment_line(std::string_view key, const std::string& value) {
  return fmt::format("{:<14}{}\n", key, value);
}

std::string environment_report() {
  std::string out;
  auto line = [&](std::string_view key, const std::string& value) { out += environment_line(key, value); };

  line("lathe", fmt::format("{} ({}, {})", build::kVersion, build::kBuildType, build::kCompiler));
  line("LibTorch", torch_version());

#ifdef LATHE_WITH_CUDA
  const auto& hooks = at::detail::getCUDAHooks();
  const bool cuda = torch::cuda::is_available();
  line("CUDA", fmt::format("built (runtime {}, arch {}); {}", version_of(hooks.versionCUDART(), 1000, 10),
                           build::kTorchCudaArchList,
                           cuda ? fmt::format("available, {} device(s)", torch::cuda::device_count())
                                : "not available (no GPU or driver)"));
  if (cuda) {
    for (c10::DeviceIndex i = 0; i < static_cast<c10::DeviceIndex>(torch::cuda::device_count()); ++i) {
      const auto* p = at::cuda::getDeviceProperties(i);
      line(fmt::format("  cuda:{}", i), fmt::format("{} (sm_{}{}, {:.1f} GiB)", p->name, p->major, p->minor,
                                                    static_cast<double>(p->totalGlobalMem) / (1ull << 30)));
    }
  }
  line("cuDNN", hooks.compiledWithCuDNN() ? version_of(hooks.versionCuDNN(), 10000, 100) : "no");
  const auto nccl = torch::cuda::nccl::version();
  line("NCCL", fmt::format("{}.{}.{} (headers {}.{}.{})", (nccl >> 32) & 0xffff, (nccl >> 16) & 0xffff, nccl & 0xffff,
                           NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH));
#else
  line("CUDA", "not built (LibTorch without CUDA, or LATHE_WITH_CUDA=OFF)");
  line("NCCL", "not built");
#endif

#ifdef LATHE_WITH_MPI
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  std::string mpi_text(mpi, static_cast<std::size_t>(len));
  line("MPI", mpi_text.substr(0, mpi_text.find_first_of(",\n")));
#else
  line("MPI", "not built (LATHE_WITH_MPI=OFF)");
#endif

  line("ONNX", fmt::format("libonnx linked (IR version {})", static_cast<int>(onnx::IR_VERSION)));

  const char* omp = std::getenv("OMP_NUM_THREADS");
  line("threads", fmt::format("intra-op {}, inter-op {}, hardware {}, OMP_NUM_THREADS={}", at::get_num_threads(),
                              at::get_num_interop_threads(), std::thread::hardware_concurrency(), omp ? omp : "unset"));
  line("CPU kernels", cpu_capability());

  return out;
}

}  // namespace lathe
