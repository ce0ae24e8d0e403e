// The device a stage runs a model on, from the recipe's run.device.
#pragma once

#include <c10/core/Device.h>

#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::train {

/// The device a recipe asks for: auto is CUDA when available.
at::Device resolve_device(recipe::Device device);
/// The device `model` runs on: the CPU for a quantized model (its kernels are CPU kernels),
/// else resolve_device(device).
at::Device model_device(const models::AnyModel& model, recipe::Device device);

}  // namespace lathe::train
