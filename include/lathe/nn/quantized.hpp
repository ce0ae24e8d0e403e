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
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "lathe/core/enum_table.hpp"

namespace lathe::nn {

using lathe::operator<<;

enum class QuantScheme { Int8Dynamic, Int8WeightOnly, Int4WeightOnly };
enum class QuantActivations { Float32, BFloat16 };

/// The quantization grid of one scheme: scale (and zero) of a row or group, and the codes of
/// weights on it. GPTQ quantizes column by column on the same grid as round-to-nearest.
struct QuantGrid {
  QuantScheme scheme = QuantScheme::Int8Dynamic;
  int64_t group_size = 0;  // int4: inputs per group; int8: unused (one group per row)

  int64_t bits() const { return scheme == QuantScheme::Int4WeightOnly ? 4 : 8; }
  /// Inputs that share a scale for a layer of `in` inputs.
  int64_t group(int64_t in) const { return scheme == QuantScheme::Int4WeightOnly ? group_size : in; }
  /// Scale and zero of each row of `w` (rows, n), float32 (rows); zero is undefined for the
  /// symmetric int8 grid.
  std::pair<at::Tensor, at::Tensor> params(const at::Tensor& w) const;
  /// Codes of `w` (rows, n) under per-row `scale` / `zero`: int8 for int8 (in [-127, 127]),
  /// uint8 for int4 (in [0, 15]).
  at::Tensor codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero) const;
  /// The float32 weights that `codes` stand for.
  at::Tensor values(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero) const;
};

/// One Linear weight in quantized form, ready for its kernel.
class QuantizedWeight {
 public:
  /// From codes (out, in) int8 or uint8 as QuantGrid::codes gives them, and scales (and, for
  /// int4, zeros) of shape (out) for int8 or (out, in / group_size) for int4. Throws
  /// std::invalid_argument when the shapes do not fit the scheme.
  QuantizedWeight(QuantGrid grid, QuantActivations activations, at::Tensor codes, at::Tensor scales,
                  at::Tensor zeros);

  const QuantGrid& grid() const { return grid_; }
  QuantActivations activations() const { return activations_; }
  int64_t out() const { return codes_.size(0); }
  int64_t in() const { return codes_.size(1); }
  const at::Tensor& codes() const { return codes_; }
  const at::Tensor& scales() const { return scales_; }
  const at::Tensor& zeros() const { return zeros_; }

  /// y = x W^T + b on the scheme's kernel; x (..., in) float32 or bfloat16, y in x's dtype.
  at::Tensor linear(const at::Tensor& x, const at::Tensor& bias) const;
  /// The float32 weight (out, in) the codes stand for.
  at::Tensor dequantize() const;

  /// The stored form: codes (int8, or int4 two per byte, the even input in the low nibble),
  /// scales and zeros; bytes() is their size.
  std::map<std::string, at::Tensor> stored() const;
  int64_t bytes() const;
  /// Rebuilds a weight from stored() tensors.
  static QuantizedWeight from_stored(QuantGrid grid, QuantActivations activations,
                                     const std::map<std::string, at::Tensor>& tensors, int64_t in);

 private:
  QuantGrid grid_;
  QuantActivations activations_;
  at::Tensor codes_, scales_, zeros_;  // as given (codes unpacked, one per byte)
  at::Tensor kernel_weight_, kernel_scales_;  // the forms the kernel takes
  struct Packed;                              // int8_dynamic: fbgemm's packed weight
  std::shared_ptr<const Packed> packed_;
};

/// Round-to-nearest quantization of a float weight (out, in).
QuantizedWeight quantize_rtn(const at::Tensor& weight, QuantGrid grid, QuantActivations activations);

}  // namespace lathe::nn

LATHE_ENUM_TABLE(lathe::nn::QuantScheme, {lathe::nn::QuantScheme::Int8Dynamic, "int8_dynamic"},
                 {lathe::nn::QuantScheme::Int8WeightOnly, "int8_weight_only"},
                 {lathe::nn::QuantScheme::Int4WeightOnly, "int4_weight_only"});
LATHE_ENUM_TABLE(lathe::nn::QuantActivations, {lathe::nn::QuantActivations::Float32, "float32"},
                 {lathe::nn::QuantActivations::BFloat16, "bfloat16"});
