#pragma once

#include <catch2/catch.hpp>
#include <torch/cuda.h>

/// First statement of a [gpu] test case: without a CUDA device the case ends here, passing
/// with a warning (CTest runs such cases alone and reports them skipped, see tests/main.cpp).
#define LATHE_REQUIRE_GPU()                             \
  do {                                                  \
    if (!torch::cuda::is_available()) {                 \
      WARN("skipped: no CUDA device on this machine");  \
      return;                                           \
    }                                                   \
  } while (0)
