// The device of run.device.

#include "lathe/train/device.hpp"

#include <ATen/Context.h>

#include "lathe/core/error.hpp"

namespace lathe::train {

at::Device resolve_device(recipe::Device d) {
  switch (d) {
    case recipe::Device::Cpu: return at::kCPU;
    case recipe::Device::Cuda:
      if (!at::hasCUDA()) throw Error("run.device is cuda but no CUDA device is visible (use auto or cpu)");
      return at::Device(at::kCUDA, 0);
    case recipe::Device::Auto: return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  }
  return at::kCPU;
}

at::Device model_device(const models::AnyModel& model, recipe::Device d) {
  return models::quantized_layers(model).empty() ? resolve_device(d) : at::Device(at::kCPU);
}

}  // namespace lathe::train
