// Quantization schemes as one table of traits, as ggml keeps its type_traits: a row per scheme
// says what the scheme is (bits, symmetry, group rule, dtypes, whether activations are
// quantized) and holds its functions (grid, packing, kernel). Code outside a scheme's row and
// kernels asks the row; it never tests for a particular scheme. Tables of other areas keyed
// by scheme (the ONNX emitters in export) check with covers_every_scheme that they have a row
// for each one, so a new scheme does not build until every one of them has its row.
//
// Adding a scheme: its enumerator and spelling below, its row and kernels in
// src/nn/quant_schemes.cpp, its ONNX row in src/export/modules.cpp (an emitter, or none: the
// export then refuses its layers by name). docs/ARCHITECTURE.md lists the steps.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include <ATen/core/Tensor.h>

#include "lathe/core/enum_table.hpp"

namespace lathe::nn {

using lathe::operator<<;

enum class QuantScheme { Int8Dynamic, Int8WeightOnly, Int4WeightOnly };
enum class QuantActivations { Float32, BFloat16 };

class QuantizedWeight;

/// Which inputs of a row share a scale (and zero).
enum class QuantGroupRule {
  PerRow,    // one scale per output channel: all inputs of the row
  PerGroup,  // one per `group_size` consecutive inputs of a row
};

/// What a scheme's kernel keeps beside the codes, made once per weight by the row's `prepare`:
/// repacked weights, scales in the kernel's dtype, or a library's own packed form.
struct QuantKernelForms {
  at::Tensor weight, scales;
  std::shared_ptr<const void> packed;
};

/// One scheme. Shapes: `w` (rows, n) float32 or float64, one grid per row; `scale` / `zero`
/// (rows); codes one per element, in `code_dtype`.
struct QuantSchemeTraits {
  QuantScheme scheme;
  std::string_view name;    // its spelling (the recipe's quantize.method, the model file's "scheme")
  std::string_view family;  // the grid's short name in messages: "int8", "int4"
  int bits;                 // per weight code
  bool symmetric;           // w = q * scale (no zero); otherwise the row's `values` uses a zero too
  QuantGroupRule group_rule;
  std::span<const int64_t> group_sizes;  // PerGroup: the group sizes its kernels take
  std::string_view kernels;              // what computes its product, for messages
  at::ScalarType code_dtype;             // codes unpacked, one per element
  at::ScalarType storage_dtype;          // the stored qweight (`pack`'s result)
  bool quantizes_activations;            // the product quantizes its input itself
  QuantActivations default_activations;  // the compute dtype quantize.activations: auto picks

  /// Scale and zero of each row of `w`, float (rows); zero undefined for a symmetric grid.
  std::pair<at::Tensor, at::Tensor> (*params)(const at::Tensor& w);
  /// Codes of `w` under per-row `scale` / `zero`.
  at::Tensor (*codes)(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero);
  /// The real weights that `codes` stand for, in scale's dtype.
  at::Tensor (*values)(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero);
  /// Codes (out, in) to the stored qweight (out, in * bits / 8) and back; unpack throws
  /// std::invalid_argument for a qweight that does not fit.
  at::Tensor (*pack)(const at::Tensor& codes);
  at::Tensor (*unpack)(const at::Tensor& qweight, int64_t in);
  /// The forms its kernel takes, from a weight whose codes, scales and zeros are set.
  QuantKernelForms (*prepare)(const QuantizedWeight& w);
  /// y = x W^T + b: x (rows, in) float32 or bfloat16 on the CPU; y (rows, out) in x's dtype.
  at::Tensor (*linear)(const QuantizedWeight& w, const at::Tensor& x, const at::Tensor& bias);
};

/// Every scheme's row, in the order of QuantScheme's spelling table.
std::span<const QuantSchemeTraits> quant_schemes();
/// The row of `scheme`.
const QuantSchemeTraits& quant_scheme(QuantScheme scheme);

}  // namespace lathe::nn

LATHE_ENUM_TABLE(lathe::nn::QuantScheme, {lathe::nn::QuantScheme::Int8Dynamic, "int8_dynamic"},
                 {lathe::nn::QuantScheme::Int8WeightOnly, "int8_weight_only"},
                 {lathe::nn::QuantScheme::Int4WeightOnly, "int4_weight_only"});
LATHE_ENUM_TABLE(lathe::nn::QuantActivations, {lathe::nn::QuantActivations::Float32, "float32"},
                 {lathe::nn::QuantActivations::BFloat16, "bfloat16"});

namespace lathe::nn {

// An enumerator without a spelling would be missing from the spelling table, and so from every
// table checked against it; -Wswitch, an error here, names it.
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
constexpr bool is_spelled(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::Int8Dynamic:
    case QuantScheme::Int8WeightOnly:
    case QuantScheme::Int4WeightOnly: return enum_name(scheme) != "?";
  }
  return false;
}
#pragma GCC diagnostic pop

/// Whether `rows` (anything with a `scheme` member) has one row per scheme, in the order of
/// QuantScheme's spelling table: what a table keyed by scheme static_asserts.
template <class Rows>
constexpr bool covers_every_scheme(const Rows& rows) {
  constexpr auto& spelled = EnumTable<QuantScheme>::values;
  if (std::size(rows) != spelled.size()) return false;
  std::size_t i = 0;
  for (const auto& row : rows)
    if (row.scheme != spelled[i++].first || !is_spelled(row.scheme)) return false;
  return true;
}

}  // namespace lathe::nn
