// Initial values: skipping them for parameters about to be loaded, and drawing them one
// parameter at a time for a model that is not materialised (parameters on the meta device).
#pragma once

#include <functional>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "lathe/core/tensor_values.hpp"
#include "lathe/nn/roles.hpp"

namespace lathe::nn {

/// While one lives (on this thread), layers and models allocate their parameters without
/// drawing initial values (the memory is left as allocated): for a caller that assigns every
/// parameter next, e.g. a model file loader. Drawing 124M normal values costs about a second
/// on a 2-core CPU; a skipped one costs nothing, and its pages are never touched.
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};

/// Whether a SkipInitGuard is alive on this thread.
bool init_skipped();

/// Modules built while a BuildDtypeGuard lives create their floating parameters in `dtype`
/// (LibTorch's default dtype, restored when the guard goes): a model that runs in bfloat16 is
/// read into bfloat16 parameters without first being built in float32. The default dtype is
/// process-wide, not per thread: hold the guard only where no other thread creates tensors of
/// the default dtype meanwhile, and never two guards at once.
class BuildDtypeGuard {
 public:
  explicit BuildDtypeGuard(at::ScalarType dtype);
  ~BuildDtypeGuard();
  BuildDtypeGuard(const BuildDtypeGuard&) = delete;
  BuildDtypeGuard& operator=(const BuildDtypeGuard&) = delete;

 private:
  caffe2::TypeMeta previous_;
};

using lathe::ValueSink;
using lathe::ValueSource;

/// How a model draws one parameter's initial values into `values` (a tensor of the parameter's
/// shape, dtype and device, or the parameter itself).
using InitRule = std::function<void(const RoledParameter& p, at::Tensor& values)>;

/// A model's initialisation: every parameter drawn once by `rule`, in roles_of order. Without
/// `sink` the parameters are drawn in place (nothing when a SkipInitGuard lives). With one, each
/// parameter is drawn into a new CPU tensor of its shape (float32, as models are built) that is
/// then handed to `sink`
/// (one such tensor alive at a time; the model itself, e.g. on the meta device, is not touched):
/// the same generator draws give the same values either way.
void initialise(const torch::nn::Module& model, const InitRule& rule, const ValueSink& sink = {});

}  // namespace lathe::nn
