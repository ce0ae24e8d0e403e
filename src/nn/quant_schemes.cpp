// The quantization schemes: one row of traits per scheme, and the grids, packings and kernels
// the rows point to. Nothing outside this file tests for a particular scheme.

#include <array>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include "lathe/nn/gemv.hpp"
#include "lathe/nn/quantized.hpp"

namespace lathe::nn {

namespace {

/// Weights in float64 stay float64 (GPTQ's arithmetic); any other dtype becomes float32.
at::Tensor as_real(const at::Tensor& w) { return w.scalar_type() == at::kDouble ? w : w.to(at::kFloat); }

/// Smallest scale a grid uses: an all-zero row (a pruned neuron) keeps finite codes of 0.
constexpr double kMinScale = 1e-10;

bool bf16(const QuantizedWeight& w) { return w.activations() == QuantActivations::BFloat16; }

// --- int8: symmetric per output channel, q in [-127, 127], stored one code a byte ----------

std::pair<at::Tensor, at::Tensor> int8_params(const at::Tensor& w) {
  return {as_real(w).abs().amax(-1).div(127.0).clamp_min(kMinScale), at::Tensor()};
}

at::Tensor int8_codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor&) {
  return (as_real(w) / scale.unsqueeze(-1)).round_().clamp_(-127, 127).to(at::kChar);
}

at::Tensor int8_values(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor&) {
  return codes.to(scale.scalar_type()) * scale.unsqueeze(-1);
}

at::Tensor codes_as_stored(const at::Tensor& codes) { return codes; }
at::Tensor stored_as_codes(const at::Tensor& qweight, int64_t) { return qweight; }

// --- int4: asymmetric per group, w = (q - 8) * scale + zero, q in [0, 15] (ATen's int4
// convention), stored two codes a byte with the even input in the low nibble ----------------

std::pair<at::Tensor, at::Tensor> int4_params(const at::Tensor& w) {
  // The row's range onto [0, 15]; zero is the value of code 8.
  const auto x = as_real(w);
  const auto lo = x.amin(-1), hi = x.amax(-1);
  const auto scale = (hi - lo).div(15.0).clamp_min(kMinScale);
  return {scale, lo + scale * 8.0};
}

at::Tensor int4_codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero) {
  return ((as_real(w) - zero.unsqueeze(-1)) / scale.unsqueeze(-1)).round_().add_(8).clamp_(0, 15).to(at::kByte);
}

at::Tensor int4_values(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero) {
  return (codes.to(scale.scalar_type()) - 8.0) * scale.unsqueeze(-1) + zero.unsqueeze(-1);
}

at::Tensor nibbles_packed(const at::Tensor& codes) {
  using namespace at::indexing;
  const auto lo = codes.index({Slice(), Slice(0, None, 2)});
  const auto hi = codes.index({Slice(), Slice(1, None, 2)});
  return lo.bitwise_or(hi.bitwise_left_shift(4)).contiguous();
}

at::Tensor nibbles_unpacked(const at::Tensor& qweight, int64_t in) {
  return at::stack({qweight.bitwise_and(15), qweight.bitwise_right_shift(4)}, -1).view({qweight.size(0), in});
}

// --- kernels -------------------------------------------------------------------------------

/// int8_dynamic's largest activation code (see int8_dynamic_linear).
constexpr int64_t kActivationMax = 63;

struct FbgemmPacked {
  c10::intrusive_ptr<LinearPackedParamsBase> weight;
};

/// fbgemm's packed form of int8 codes (out, in) with per-channel `scales`, or null where this
/// CPU's quantized engine is not fbgemm's.
c10::intrusive_ptr<LinearPackedParamsBase> fbgemm_pack(const at::Tensor& codes, const at::Tensor& scales) {
  const auto engine = at::globalContext().qEngine();
  if (engine != at::QEngine::FBGEMM && engine != at::QEngine::X86) return {};
  static const auto prepack =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("quantized::linear_prepack", "")
          .typed<c10::intrusive_ptr<LinearPackedParamsBase>(at::Tensor, std::optional<at::Tensor>)>();
  const int64_t out = codes.size(0);
  // The kernel's float output is each exact int32 accumulator times its channel's scale.
  const auto q = at::_make_per_channel_quantized_tensor(codes, scales.to(at::kDouble),
                                                        at::zeros({out}, at::kLong), /*axis=*/0);
  return prepack.call(q, std::nullopt);
}

QuantKernelForms int8_dynamic_prepare(const QuantizedWeight& w) {
  QuantKernelForms forms;
  if (auto packed = fbgemm_pack(w.codes(), w.scales()))
    forms.packed = std::make_shared<const FbgemmPacked>(FbgemmPacked{std::move(packed)});
  return forms;
}

at::Tensor int8_dynamic_linear(const QuantizedWeight& w, const at::Tensor& x, const at::Tensor& bias) {
  // Per token: codes round(x / s) in [-63, 63], s = max|x| / 63. Seven bits, as PyTorch's
  // reduce_range: fbgemm's u8 x s8 kernel on x86 without VNNI adds pairs of products in
  // int16 with saturation (vpmaddubsw), and 2 * 127 * 127 fits where 2 * 255 * 127 does
  // not, so every CPU accumulates the same exact int32.
  const auto xf = x.to(at::kFloat);
  // max |x| from the row's max and min: two reductions without an |x| temporary.
  const auto x_scale = at::maximum(xf.amax(-1, /*keepdim=*/true), xf.amin(-1, /*keepdim=*/true).neg_())
                           .div_(kActivationMax)
                           .clamp_min_(kMinScale);
  at::Tensor y;
  if (const auto* packed = static_cast<const FbgemmPacked*>(w.kernel_forms().packed.get())) {
    // fbgemm rounds x / s itself and shifts by the zero point 64 into u8 [1, 127]: exact codes.
    y = packed->weight->apply_with_input_q_dq_qweight_dq_output_fp32(xf / x_scale, /*input_scale=*/1.0,
                                                                      /*input_zero_point=*/64);
  } else {
    const auto q = (xf / x_scale).round_().clamp_(-kActivationMax, kActivationMax).to(at::kChar);
    y = at::_int_mm(q, w.codes().t()).to(at::kFloat).mul_(w.scales());
  }
  // In place: a fresh (M, out) result would cost as much as the product for wide layers.
  if (bias.defined()) at::addcmul_out(y, bias.to(at::kFloat), y, x_scale);
  else y.mul_(x_scale);
  return y.to(x.scalar_type());
}

QuantKernelForms int8_weight_only_prepare(const QuantizedWeight& w) {
  QuantKernelForms forms;
  if (bf16(w)) forms.scales = w.scales().to(at::kBFloat16);
  return forms;
}

at::Tensor int8_weight_only_linear(const QuantizedWeight& w, const at::Tensor& x, const at::Tensor& bias) {
  if (x.numel() <= kSmallRowsMax * w.in()) {
    // A few rows (decoding): the codes streamed once by lathe's product, in float, from x as
    // the scheme's activations hold it. (More rows skip the conversion: ATen's kernels below.)
    // In bfloat16, with ATen's bfloat16 scales: a prompt and the tokens after it compute with
    // the same weights.
    const auto scales = bf16(w) ? w.kernel_forms().scales.to(at::kFloat) : w.scales();
    if (auto y = small_rows_linear_int8(x.to(bf16(w) ? at::kBFloat16 : at::kFloat), w.codes(), scales, bias);
        y.defined())
      return y.to(x.scalar_type());
  }
  auto y = bf16(w) ? at::_weight_int8pack_mm(x.to(at::kBFloat16).contiguous(), w.codes(), w.kernel_forms().scales)
                   : at::linear(x.to(at::kFloat), w.codes().to(at::kFloat)).mul_(w.scales());
  if (bias.defined()) y = y + bias.to(y.scalar_type());
  return y.to(x.scalar_type());
}

QuantKernelForms int4_weight_only_prepare(const QuantizedWeight& w) {
  QuantKernelForms forms;
  if (!bf16(w)) return forms;
  forms.weight = at::_convert_weight_to_int4pack_for_cpu(w.codes().to(at::kInt), /*innerKTiles=*/2);
  // lathe's own form for a few rows (decoding), where this CPU and the layer's shape allow it,
  // from the same bfloat16 scales and zeros as ATen's form: a prompt and the tokens after it
  // compute with the same weights.
  const auto rounded = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  if (auto rows = small_rows_int4_pack(w.codes(), rounded(w.scales()), rounded(w.zeros()), w.grid().group(w.in()));
      rows.codes.defined())
    forms.packed = std::make_shared<const SmallRowsInt4>(std::move(rows));
  // (in / group, out, 2): scale and zero of each group.
  forms.scales = at::stack({w.scales(), w.zeros()}, -1).transpose(0, 1).contiguous().to(at::kBFloat16);
  return forms;
}

at::Tensor int4_weight_only_linear(const QuantizedWeight& w, const at::Tensor& x, const at::Tensor& bias) {
  const auto& k = w.kernel_forms();
  if (k.packed && x.numel() <= kSmallRowsMax * w.in()) {
    // A few rows (decoding): lathe's product, which reads each packed code once.
    if (auto y = small_rows_linear_int4(x.to(at::kBFloat16), *static_cast<const SmallRowsInt4*>(k.packed.get()), bias);
        y.defined())
      return y.to(x.scalar_type());
  }
  auto y = bf16(w) ? at::_weight_int4pack_mm_for_cpu(x.to(at::kBFloat16).contiguous(), k.weight, w.grid().group_size,
                                                     k.scales)
                   : at::linear(x.to(at::kFloat), w.dequantize());
  if (bias.defined()) y = y + bias.to(y.scalar_type());
  return y.to(x.scalar_type());
}

// --- the table -----------------------------------------------------------------------------

constexpr std::array<int64_t, 4> kAtenInt4Groups{32, 64, 128, 256};

constexpr std::array kSchemes{
    QuantSchemeTraits{.scheme = QuantScheme::Int8Dynamic,
                      .name = "int8_dynamic",
                      .family = "int8",
                      .bits = 8,
                      .symmetric = true,
                      .group_rule = QuantGroupRule::PerRow,
                      .group_sizes = {},
                      .kernels = "fbgemm's u8 x s8 kernel (at::_int_mm without fbgemm)",
                      .code_dtype = at::kChar,
                      .storage_dtype = at::kChar,
                      .quantizes_activations = true,
                      .default_activations = QuantActivations::Float32,
                      .params = int8_params,
                      .codes = int8_codes,
                      .values = int8_values,
                      .pack = codes_as_stored,
                      .unpack = stored_as_codes,
                      .prepare = int8_dynamic_prepare,
                      .linear = int8_dynamic_linear},
    QuantSchemeTraits{.scheme = QuantScheme::Int8WeightOnly,
                      .name = "int8_weight_only",
                      .family = "int8",
                      .bits = 8,
                      .symmetric = true,
                      .group_rule = QuantGroupRule::PerRow,
                      .group_sizes = {},
                      .kernels = "ATen's int8 weight-only kernel",
                      .code_dtype = at::kChar,
                      .storage_dtype = at::kChar,
                      .quantizes_activations = false,
                      .default_activations = QuantActivations::Float32,
                      .params = int8_params,
                      .codes = int8_codes,
                      .values = int8_values,
                      .pack = codes_as_stored,
                      .unpack = stored_as_codes,
                      .prepare = int8_weight_only_prepare,
                      .linear = int8_weight_only_linear},
    // auto activations: bfloat16, the dtype ATen's fast int4 kernel takes.
    QuantSchemeTraits{.scheme = QuantScheme::Int4WeightOnly,
                      .name = "int4_weight_only",
                      .family = "int4",
                      .bits = 4,
                      .symmetric = false,
                      .group_rule = QuantGroupRule::PerGroup,
                      .group_sizes = kAtenInt4Groups,
                      .kernels = "ATen's int4 kernels",
                      .code_dtype = at::kByte,
                      .storage_dtype = at::kByte,
                      .quantizes_activations = false,
                      .default_activations = QuantActivations::BFloat16,
                      .params = int4_params,
                      .codes = int4_codes,
                      .values = int4_values,
                      .pack = nibbles_packed,
                      .unpack = nibbles_unpacked,
                      .prepare = int4_weight_only_prepare,
                      .linear = int4_weight_only_linear},
};

constexpr bool rows_complete() {
  for (const auto& row : kSchemes) {
    if (row.name != enum_name(row.scheme) || row.family.empty() || row.kernels.empty()) return false;
    if (row.bits < 1 || row.bits > 8 || 8 % row.bits != 0) return false;
    if ((row.group_rule == QuantGroupRule::PerGroup) == row.group_sizes.empty()) return false;
    if (!row.params || !row.codes || !row.values || !row.pack || !row.unpack || !row.prepare || !row.linear)
      return false;
  }
  return true;
}

static_assert(covers_every_scheme(kSchemes),
              "src/nn/quant_schemes.cpp: kSchemes needs one row per nn::QuantScheme, in the order of its spelling "
              "table (include/lathe/nn/quant_scheme.hpp)");
static_assert(rows_complete(),
              "src/nn/quant_schemes.cpp: a row's name is not its scheme's spelling, its bits do not divide a byte, a "
              "per-group row names no group sizes (or a per-row one does), or a function is missing");

}  // namespace

std::span<const QuantSchemeTraits> quant_schemes() { return kSchemes; }

const QuantSchemeTraits& quant_scheme(QuantScheme scheme) {
  for (const auto& row : kSchemes)
    if (row.scheme == scheme) return row;
  throw std::logic_error("quantization scheme " + std::to_string(static_cast<int>(scheme)) + " has no row");
}

}  // namespace lathe::nn
