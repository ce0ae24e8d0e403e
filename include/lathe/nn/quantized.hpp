// Quantized Linear weights: the integer grids, the stored form, and the products computed on
// the integer kernels LibTorch ships.
//
// Schemes (what a model file records per layer):
//   int8_dynamic      int8 weights, symmetric per output channel (w = q * scale, q in [-127, 127]);
//                     activations quantized per token at run time to 7 bits (x = q * scale, q in
//                     [-63, 63], PyTorch's reduce_range); the product is an exact int32
//                     accumulation of the integer codes on every x86 CPU, VNNI or not (fbgemm's
//                     u8 x s8 kernel, the activation codes shifted by 64; at::_int_mm where the
//                     CPU has no fbgemm), scaled back to float by the token's and the channel's
//                     scales.
//   int8_weight_only  the same weights; activations stay float.
//   int4_weight_only  4-bit weights, asymmetric per group of `group_size` consecutive inputs of a
//                     row: w = (q - 8) * scale + zero, q in [0, 15] (the convention of ATen's int4
//                     kernels); activations stay float.
// Weight-only layers compute in `activations`: float32 (the weight is dequantized for the
// product) or bfloat16 (ATen's packed int8 / int4 kernels; input and output keep their dtype).
// Each scheme's traits, grid, packing and kernels are its row in src/nn/quant_schemes.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "lathe/nn/quant_scheme.hpp"

namespace lathe::nn {

/// The quantization grid of one scheme: scale (and zero) of a row or group, and the codes of
/// weights on it. GPTQ quantizes column by column on the same grid as round-to-nearest.
struct QuantGrid {
  QuantScheme scheme = QuantScheme::Int8Dynamic;
  int64_t group_size = 0;  // per-group schemes: inputs per group; per-row schemes: unused

  const QuantSchemeTraits& traits() const { return quant_scheme(scheme); }
  int64_t bits() const { return traits().bits; }
  /// Inputs that share a scale for a layer of `in` inputs.
  int64_t group(int64_t in) const { return traits().group_rule == QuantGroupRule::PerGroup ? group_size : in; }
  /// Scale and zero of each row of `w` (rows, n), float32 (rows); zero is undefined for a
  /// symmetric grid.
  std::pair<at::Tensor, at::Tensor> params(const at::Tensor& w) const { return traits().params(w); }
  /// Codes of `w` (rows, n) under per-row `scale` / `zero`, in the scheme's code_dtype (int8
  /// in [-127, 127] for int8, uint8 in [0, 15] for int4).
  at::Tensor codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero) const {
    return traits().codes(w, scale, zero);
  }
  /// The float32 weights that `codes` stand for.
  at::Tensor values(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero) const {
    return traits().values(codes, scale, zero);
  }
};

/// One Linear weight in quantized form, ready for its kernel.
class QuantizedWeight {
 public:
  /// From codes (out, in) as QuantGrid::codes gives them, and scales (and, for an asymmetric
  /// scheme, zeros) of shape (out) for a per-row scheme or (out, in / group_size) for a
  /// per-group one. Throws std::invalid_argument when the shapes do not fit the scheme.
  QuantizedWeight(QuantGrid grid, QuantActivations activations, at::Tensor codes, at::Tensor scales,
                  at::Tensor zeros);

  const QuantGrid& grid() const { return grid_; }
  QuantActivations activations() const { return activations_; }
  int64_t out() const { return codes_.size(0); }
  int64_t in() const { return codes_.size(1); }
  const at::Tensor& codes() const { return codes_; }
  const at::Tensor& scales() const { return scales_; }
  const at::Tensor& zeros() const { return zeros_; }
  /// What the scheme's kernel prepared from this weight (its row's `prepare`).
  const QuantKernelForms& kernel_forms() const { return kernel_; }

  /// y = x W^T + b on the scheme's kernel; x (..., in) float32 or bfloat16, y in x's dtype.
  at::Tensor linear(const at::Tensor& x, const at::Tensor& bias) const;
  /// The float32 weight (out, in) the codes stand for.
  at::Tensor dequantize() const;

  /// The stored form: qweight (the scheme's packed codes: int8, or int4 two per byte, the even
  /// input in the low nibble), scales and (asymmetric schemes) zeros; bytes() is their size.
  std::map<std::string, at::Tensor> stored() const;
  int64_t bytes() const;
  /// Rebuilds a weight from stored() tensors.
  static QuantizedWeight from_stored(QuantGrid grid, QuantActivations activations,
                                     const std::map<std::string, at::Tensor>& tensors, int64_t in);

 private:
  QuantGrid grid_;
  QuantActivations activations_;
  at::Tensor codes_, scales_, zeros_;  // as given (codes unpacked, one per byte)
  QuantKernelForms kernel_;            // what the scheme's kernel prepared
};

/// w->linear(x, bias), differentiable in x and the bias (QLoRA trains adapters through frozen
/// quantized layers): the backward multiplies by the dequantized weight.
at::Tensor quantized_product(const std::shared_ptr<const QuantizedWeight>& w, const at::Tensor& x,
                             const at::Tensor& bias);

/// Round-to-nearest quantization of a float weight (out, in).
QuantizedWeight quantize_rtn(const at::Tensor& weight, QuantGrid grid, QuantActivations activations);

}  // namespace lathe::nn
