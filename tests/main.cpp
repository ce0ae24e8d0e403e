// Test runner. Without a CUDA device, [gpu] cases are never run as passing: a case run alone
// (as CTest runs each case) exits with code 77, which CTest reports as "skipped"; in a bulk run
// the [gpu] cases are taken out of the selection and listed as skipped. Inside a case,
// LATHE_REQUIRE_GPU (tests/gpu.hpp) stays as the guard of last resort.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <iostream>
#include <string>

#include "lathe/core/denormals.hpp"

namespace {

/// A test name as a Catch test spec that matches exactly it.
std::string exact(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (std::string_view("\\,[]\"~*").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

bool is_gpu(const Catch::TestCase& tc) {
  const auto& tags = tc.getTestCaseInfo().tags;
  return std::find(tags.begin(), tags.end(), "gpu") != tags.end();
}

}  // namespace

int main(int argc, char* argv[]) {
  lathe::core::flush_denormals_by_default();  // as the lathe command does, so both compute alike
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const auto& cfg = session.config();
  const bool listing = cfg.listTests() || cfg.listTestNamesOnly() || cfg.listTags() || cfg.listReporters();
  if (!listing && !torch::cuda::is_available()) {
    auto selected = Catch::filterTests(Catch::getAllTestCasesSorted(cfg), cfg.testSpec(), cfg);
    const auto gpu = std::count_if(selected.begin(), selected.end(), is_gpu);
    if (gpu > 0 && gpu == static_cast<long>(selected.size())) {
      std::cout << "skipped: no CUDA device on this machine\n";
      return 77;
    }
    if (gpu > 0) {
      std::string spec;
      for (const auto& tc : selected) {
        if (is_gpu(tc)) std::cout << "skipped (no CUDA device): " << tc.getTestCaseInfo().name << "\n";
        else spec += (spec.empty() ? "" : ",") + exact(tc.getTestCaseInfo().name);
      }
      std::cout << gpu << " [gpu] case(s) skipped: no CUDA device on this machine\n";
      auto data = session.configData();
      data.testsOrTags = {spec};
      session.useConfigData(data);
    }
  }
  return session.run();
}
