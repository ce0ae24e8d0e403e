// Training-step speed of a lathe GPT, for scripts/bench/train_bench.py (which runs the same
// shape in PyTorch side by side). Prints one JSON line.
//
//   lathe_bench_train --layers 6 --width 384 --heads 6 --seq 256 --batch 8 --vocab 8192
//                     --steps 10 --warmup 3 --mode step|train [--bf16] [--device cpu|cuda]
//                     [--cuda-graphs] [--profile trace.json]
//
// mode step: forward + backward only; mode train: + clipping and fused AdamW. The loss is the
// trainer's (train::task_loss: the blockwise cross-entropy for a GPT). On cuda each timed step
// ends with the loss read back (a device synchronisation), as on the CPU; --cuda-graphs runs the
// forward and backward as the trainer does with train.cuda_graphs (captured after the warm-up
// steps' first 3, then replayed; the batch is copied in from pinned memory). --profile records
// the timed steps with LibTorch's profiler into a Chrome trace (scripts/bench/profile_step.py
// reads it).

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "lathe/core/denormals.hpp"
#include "lathe/core/host_memory.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/store.hpp"
#include "lathe/train/optimizer.hpp"
#include "lathe/train/step_graph.hpp"
#include "lathe/train/task.hpp"

#ifdef LATHE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
  // As the lathe command starts: freed activations stay in the heap, denormals are flushed.
  lathe::core::keep_freed_host_memory();
  lathe::core::flush_denormals_by_default();
  int64_t layers = 6, width = 384, heads = 6, seq = 256, batch = 8, vocab = 8192, steps = 10, warmup = 3;
  std::string mode = "train";
  bool bf16 = false, cuda_graphs = false;
  std::string device_name = "cpu";
  std::string profile;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(argv[++i]); };
    if (a == "--layers") layers = std::stoll(next());
    else if (a == "--width") width = std::stoll(next());
    else if (a == "--heads") heads = std::stoll(next());
    else if (a == "--seq") seq = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--vocab") vocab = std::stoll(next());
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--warmup") warmup = std::stoll(next());
    else if (a == "--mode") mode = next();
    else if (a == "--bf16") bf16 = true;
    else if (a == "--cuda-graphs") cuda_graphs = true;
    else if (a == "--device") device_name = next();
    else if (a == "--profile") profile = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const long base_kb = peak_rss_kb();
  torch::manual_seed(0);
  lathe::models::ModelOptions o;
  o.vocab_size = vocab;
  o.max_seq_len = seq;
  o.n_layer = layers;
  o.n_head = heads;
  o.d_model = width;
  const at::Device device(device_name);
  const auto autocast_device = device.is_cuda() ? at::kCUDA : at::kCPU;
  lathe::models::Gpt model(o);
  model->to(device);
  model->train();
  lathe::recipe::OptimConfig oc;  // AdamW, fused, lr 3e-4, wd 0.1, betas (0.9, 0.95), clip 1.0
  lathe::train::Optimizer opt(*model, oc);
  const lathe::train::Batch host{at::randint(0, vocab, {batch, seq}, at::kLong),
                                  at::randint(0, vocab, {batch, seq}, at::kLong), {}, {}, batch * seq};
  const auto on_device = lathe::train::to_device(host, device);
  lathe::models::AnyModel any(model);
  if (cuda_graphs && !device.is_cuda()) {
    std::fprintf(stderr, "--cuda-graphs needs --device cuda\n");
    return 2;
  }
  std::unique_ptr<lathe::train::MicroStepGraph> graph;
  if (cuda_graphs) graph = std::make_unique<lathe::train::MicroStepGraph>();
  const auto pinned = cuda_graphs ? lathe::train::pin(host) : host;
  auto micro_step = [&](const lathe::train::Batch& b) {
    at::Tensor loss;
    if (bf16) {
      at::autocast::set_autocast_enabled(autocast_device, true);
      at::autocast::set_autocast_dtype(autocast_device, at::kBFloat16);
    }
    loss = lathe::train::task_loss(any, b);
    if (bf16) {
      at::autocast::set_autocast_enabled(autocast_device, false);
      at::autocast::clear_cache();
    }
    loss.backward();
    return loss.detach();
  };
  double seconds = 0, clip_s = 0, step_s = 0;  // whole steps; clipping and the update alone
  std::unique_ptr<torch::autograd::profiler::RecordProfile> recording;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup && !profile.empty()) recording = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
    const auto t0 = std::chrono::steady_clock::now();
    const auto loss = graph ? graph->run(pinned, /*tag=*/1, device, micro_step) : micro_step(on_device);
    if (mode == "train") {
      const auto o0 = std::chrono::steady_clock::now();
      opt.clip_grad_norm(oc.grad_clip);
      const auto o1 = std::chrono::steady_clock::now();
      opt.step(oc.lr);
      const auto o2 = std::chrono::steady_clock::now();
      if (s >= warmup) {
        clip_s += std::chrono::duration<double>(o1 - o0).count();
        step_s += std::chrono::duration<double>(o2 - o1).count();
      }
    }
    opt.zero_grad(/*keep=*/cuda_graphs);
    (void)loss.item<float>();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) seconds += dt;
  }
  recording.reset();  // writes the trace
  std::string gpu;  // what torch.cuda.max_memory_allocated() reports on the PyTorch side
#ifdef LATHE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    gpu = ", \"peak_gpu_mb\": " + std::to_string(static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20));
  }
#endif
  std::printf("{\"tokens_per_s\": %.1f, \"step_ms\": %.2f, \"clip_ms\": %.2f, \"update_ms\": %.2f, "
              "\"peak_rss_mb\": %.1f, \"delta_rss_mb\": %.1f, \"params\": %lld%s}\n",
              static_cast<double>(batch * seq * steps) / seconds, 1000.0 * seconds / static_cast<double>(steps),
              1000.0 * clip_s / static_cast<double>(steps), 1000.0 * step_s / static_cast<double>(steps),
              peak_rss_kb() / 1024.0, (peak_rss_kb() - base_kb) / 1024.0,
              static_cast<long long>(lathe::models::parameter_count(*model)), gpu.c_str());
  return 0;
}
