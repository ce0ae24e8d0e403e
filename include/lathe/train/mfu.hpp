// Model FLOPs utilisation: the FLOPs a training token costs and the device's measured peak,
// for the progress line's and metrics' MFU.
#pragma once

#include <cstdint>

#include <c10/core/Device.h>

#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::train {

/// Dense matmul throughput of `device` in the training dtype of `precision` (FLOP/s): the
/// denominator of the MFU estimate, measured rather than looked up so that it is honest on any
/// CPU. The best of the kernels a step uses (at::linear, and at::mm where it is a fast path), at
/// a size on the kernels' plateau, best repetition: a smaller product under-measures the peak
/// and the MFU then reads above 100%. The global random streams are left untouched.
double measure_peak_flops(const at::Device& device, recipe::Precision precision);

/// Non-embedding parameters and the attention term: 6 N + 12 L T d FLOPs per token
/// (forward + backward), the usual estimate; a frozen weight (a base under adapters, a
/// quantized one) counts 4 (no gradient of its own).
double flops_per_token(const models::AnyModel& model, int64_t seq_len);

}  // namespace lathe::train
