// Test runner. A case tagged [gpu] that is run alone (as CTest runs each case) on a machine
// without a CUDA device exits with code 77, which CTest reports as "skipped"; run in bulk, such
// cases skip themselves through LATHE_REQUIRE_GPU (tests/gpu.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <iostream>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const auto& cfg = session.config();
  const bool listing = cfg.listTests() || cfg.listTestNamesOnly() || cfg.listTags() || cfg.listReporters();
  if (!listing && !torch::cuda::is_available()) {
    auto selected = Catch::filterTests(Catch::getAllTestCasesSorted(cfg), cfg.testSpec(), cfg);
    const bool all_gpu = !selected.empty() && std::all_of(selected.begin(), selected.end(), [](const auto& tc) {
      const auto& tags = tc.getTestCaseInfo().tags;
      return std::find(tags.begin(), tags.end(), "gpu") != tags.end();
    });
    if (all_gpu) {
      std::cout << "skipped: no CUDA device on this machine\n";
      return 77;
    }
  }
  return session.run();
}
