// Skipping the initial values of parameters that are about to be loaded.
#pragma once

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

}  // namespace lathe::nn
