// One micro-batch's forward and backward as a CUDA graph (train.cuda_graphs).
//
// A training micro-step launches hundreds of small kernels; on a fast GPU the host's launch
// time, not the kernels, sets the pace. Captured once into a CUDA graph, the micro-step is
// one launch: the graph reads its batch from static input tensors (each new batch is copied
// into them), accumulates into the parameters' gradient tensors in place, and leaves the
// loss in a static output tensor. What varies between steps stays outside the graph and
// eager: the learning rate, clipping, the optimizer update, fp16 unscaling, masks.
//
// Capture needs: the same shapes every micro-step (a batch of other shapes runs eagerly),
// no host synchronisation inside the micro-step (the causal-LM loss has none), gradients
// zeroed in place rather than dropped (Optimizer::zero_grad(/*keep=*/true)), parameters
// updated in place (the fused AdamW and the masks are), and a warm-up of eager calls first
// so that lazily created state (gradient tensors, library handles) exists before capture.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "lathe/train/task.hpp"

namespace lathe::train {

class MicroStepGraph {
 public:
  /// The micro-step: forward and backward of a batch already on the device; returns the
  /// detached loss. Called eagerly during warm-up, once under capture, and eagerly for a
  /// batch whose shapes differ from the captured one.
  using Body = std::function<at::Tensor(const Batch&)>;

  /// `warmup`: eager calls before the capture.
  explicit MicroStepGraph(int64_t warmup = 3);
  ~MicroStepGraph();
  MicroStepGraph(const MicroStepGraph&) = delete;
  MicroStepGraph& operator=(const MicroStepGraph&) = delete;

  /// Runs `body` on `batch` (host memory, pinned for an asynchronous copy): eagerly while
  /// warming up, then captured and replayed. `tag` is part of what must match for a replay
  /// (the trainer passes the number of micro-batches, which scales the loss). Returns the
  /// loss; a replayed loss is the graph's output tensor, valid until the next call.
  at::Tensor run(const Batch& batch, int64_t tag, const at::Device& device, const Body& body);

  bool captured() const;
  /// Micro-batches that ran eagerly after the capture because their shapes differed.
  int64_t eager_after_capture() const;
  /// What the console should hear after step `step`: the capture, and the first micro-batch
  /// that ran without the graph; each said once.
  std::vector<std::string> news(int64_t step);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace lathe::train
