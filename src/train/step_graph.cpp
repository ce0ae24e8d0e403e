#include "lathe/train/step_graph.hpp"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"

#ifdef LATHE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/core/StreamGuard.h>
#endif

namespace lathe::train {

namespace {

/// What a replay needs to equal the capture: the tag, and each batch field's presence,
/// dtype and shape.
std::vector<int64_t> shape_key(const Batch& b, int64_t tag) {
  std::vector<int64_t> key{tag};
  for (const auto* t : b.tensors()) {
    key.push_back(t->defined() ? static_cast<int64_t>(t->scalar_type()) : -1);
    if (!t->defined()) continue;
    key.push_back(t->dim());
    for (const auto s : t->sizes()) key.push_back(s);
  }
  return key;
}

/// Copies a new batch into the graph's static inputs (asynchronously from pinned memory).
void copy_into(Batch& to, const Batch& from) {
  const auto src = from.tensors();
  const auto dst = to.tensors();
  for (std::size_t i = 0; i < dst.size(); ++i)
    if (dst[i]->defined()) dst[i]->copy_(*src[i], /*non_blocking=*/true);
}

}  // namespace

struct MicroStepGraph::State {
  int64_t warmup = 0;
  int64_t calls = 0;
  int64_t eager_after = 0;
  bool told_captured = false, told_eager = false;  // news() said so
#ifdef LATHE_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;  // declared first: destroyed after its tensors
#endif
  std::vector<int64_t> key;
  Batch inputs;     // the graph's static inputs
  at::Tensor loss;  // the graph's output
};

MicroStepGraph::MicroStepGraph(int64_t warmup) : s_(std::make_unique<State>()) {
#ifndef LATHE_WITH_CUDA
  throw Error("train.cuda_graphs: this lathe was built without CUDA");
#endif
  s_->warmup = warmup;
}

MicroStepGraph::~MicroStepGraph() = default;

bool MicroStepGraph::captured() const {
#ifdef LATHE_WITH_CUDA
  return s_->graph != nullptr;
#else
  return false;
#endif
}

int64_t MicroStepGraph::eager_after_capture() const { return s_->eager_after; }

std::vector<std::string> MicroStepGraph::news(int64_t step) {
  std::vector<std::string> out;
  if (captured() && !s_->told_captured)
    out.push_back(fmt::format("step {}: the micro-step is captured as a CUDA graph (train.cuda_graphs) and replayed "
                              "from here on",
                              step));
  if (s_->eager_after > 0 && !s_->told_eager)
    out.push_back(
        fmt::format("step {}: a micro-batch of other shapes than the captured one ran without the graph", step));
  s_->told_captured = captured();
  s_->told_eager = s_->eager_after > 0;
  return out;
}

at::Tensor MicroStepGraph::run(const Batch& batch, int64_t tag, const at::Device& device, const Body& body) {
#ifdef LATHE_WITH_CUDA
  auto& s = *s_;
  ++s.calls;
  if (s.graph) {
    if (shape_key(batch, tag) != s.key) {
      ++s.eager_after;
      return body(to_device(batch, device));
    }
    copy_into(s.inputs, batch);
    s.graph->replay();
    return s.loss;
  }
  if (s.calls <= s.warmup) return body(to_device(batch, device));

  // Capture. The static inputs are this batch on the device; the capture records work
  // without running it, so the graph is replayed once at the end for this micro-batch.
  s.inputs = to_device(batch, device);
  s.key = shape_key(batch, tag);
  c10::cuda::device_synchronize();  // the warm-up's work and the copies are done
  s.graph = std::make_unique<at::cuda::CUDAGraph>();
  {
    // A side stream: capturing the legacy default stream is not allowed. Autocast's cache of
    // cast weights is off while capturing, so that every cast is recorded in the graph rather
    // than a copy made outside it that the optimizer's updates would leave stale.
    // (c10's generic guard: CUDA's inline one would call the CUDA runtime from lathe's code.)
    c10::StreamGuard stream(at::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()).unwrap());
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    try {
      s.graph->capture_begin();
      s.loss = body(s.inputs);
      s.graph->capture_end();
    } catch (const std::exception& e) {
      at::autocast::set_autocast_cache_enabled(cache);
      try {
        s.graph->capture_end();  // leaves the stream's capture mode; the partial graph is dropped
      } catch (...) {
      }
      s.graph.reset();
      s.loss = at::Tensor();
      throw Error(fmt::format("train.cuda_graphs: capturing the training micro-step failed ({}); set "
                              "train.cuda_graphs: false to train without graphs",
                              e.what()));
    }
    at::autocast::set_autocast_cache_enabled(cache);
  }
  c10::cuda::device_synchronize();
  s.graph->replay();
  return s.loss;
#else
  (void)batch, (void)tag, (void)device, (void)body;
  throw Error("train.cuda_graphs: this lathe was built without CUDA");
#endif
}

}  // namespace lathe::train
