// Low-rank adapters (LoRA, Hu et al. 2021) on a Linear: y = W x + b + s * B A dropout(x), with
// A (r, in) drawn as PEFT draws it (Kaiming-uniform, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))),
// B (out, r) zero, and s = alpha / r (alpha / sqrt(r) with rsLoRA).
//
// A fused Linear (lathe's q / k / v or gate / up rows in one weight) carries one adapter per
// part, as the separate projections of a Hugging Face model carry theirs: part p has its own
// A_p (r, in) and B_p (rows_p, r). A holds the parts' A_p one under another (P r, in); B holds
// the adapted parts' rows in order (their rows summed, r). Rows of a part without an adapter
// get no update.
#pragma once

#include <cstdint>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/pimpl.h>

#include "lathe/nn/roles.hpp"

namespace lathe::nn {

/// Rows [begin, begin + rows) of the weight, adapted as one Hugging Face module.
struct LoraPart {
  int64_t begin = 0;
  int64_t rows = 0;
};

struct LoraOptions {
  int64_t in = 0;                 // the layer's input features; required
  int64_t out = 0;                // the layer's output features; required
  int64_t rank = 8;               // r: the inner width of each part's update
  double alpha = 16;              // the update is scaled by alpha / r
  double dropout = 0;             // dropout on the adapter's input (training only)
  bool rslora = false;            // scale by alpha / sqrt(r) instead (rank-stabilised LoRA)
  std::vector<LoraPart> parts;    // the adapted parts, in row order; empty: one part of all rows
  c10::Device device = c10::kCPU; // where A and B are created (float32)

  double scaling() const;
};

/// The adapter of one Linear: `forward` gives the update s * B A dropout(x) (..., out) that the
/// layer adds to its own product. Parameters `A` and `B` have Role::Adapter.
class LoraImpl : public torch::nn::Module, public ParameterRoles {
 public:
  /// Throws std::invalid_argument for a rank < 1 or parts that overlap, are out of order or out
  /// of the layer's rows.
  explicit LoraImpl(LoraOptions options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., in) -> (..., out)
  /// s * B A as a float32 (out, in) weight: what merging adds to the layer's weight.
  torch::Tensor delta_weight() const;
  /// Draws A as PEFT does and sets B to zero.
  void reset_parameters();

  LoraOptions options;
  torch::Tensor A;  // (P r, in)
  torch::Tensor B;  // (adapted rows, r)

 private:
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(Lora);

/// While one lives, this thread's Linear layers compute without their adapters (the base model:
/// DPO's reference with LoRA on).
class AdaptersDisabledGuard {
 public:
  AdaptersDisabledGuard();
  ~AdaptersDisabledGuard();
  AdaptersDisabledGuard(const AdaptersDisabledGuard&) = delete;
  AdaptersDisabledGuard& operator=(const AdaptersDisabledGuard&) = delete;

 private:
  bool previous_;
};
bool adapters_disabled();

}  // namespace lathe::nn
