// Quantization grids and the quantized Linear product.

#include "lathe/nn/quantized.hpp"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include "lathe/nn/gemv.hpp"

namespace lathe::nn {

namespace {

std::string s(int64_t v) { return std::to_string(v); }

bool is_int4(const QuantGrid& g) { return g.scheme == QuantScheme::Int4WeightOnly; }

/// Weights in float64 stay float64 (GPTQ's arithmetic); any other dtype becomes float32.
at::Tensor as_real(const at::Tensor& w) { return w.scalar_type() == at::kDouble ? w : w.to(at::kFloat); }

/// Smallest scale a grid uses: an all-zero row (a pruned neuron) keeps finite codes of 0.
constexpr double kMinScale = 1e-10;

/// int8_dynamic's largest activation code (see QuantizedWeight::linear).
constexpr int64_t kActivationMax = 63;

}  // namespace

std::pair<at::Tensor, at::Tensor> QuantGrid::params(const at::Tensor& w) const {
  const auto x = as_real(w);
  if (!is_int4(*this)) return {x.abs().amax(-1).div(127.0).clamp_min(kMinScale), at::Tensor()};
  // Asymmetric: the row's range onto [0, 15]; zero is the value of code 8.
  const auto lo = x.amin(-1), hi = x.amax(-1);
  const auto scale = (hi - lo).div(15.0).clamp_min(kMinScale);
  return {scale, lo + scale * 8.0};
}

at::Tensor QuantGrid::codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero) const {
  const auto x = as_real(w);
  if (!is_int4(*this)) return (x / scale.unsqueeze(-1)).round_().clamp_(-127, 127).to(at::kChar);
  return ((x - zero.unsqueeze(-1)) / scale.unsqueeze(-1)).round_().add_(8).clamp_(0, 15).to(at::kByte);
}

at::Tensor QuantGrid::values(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero) const {
  const auto c = codes.to(scale.scalar_type());
  if (!is_int4(*this)) return c * scale.unsqueeze(-1);
  return (c - 8.0) * scale.unsqueeze(-1) + zero.unsqueeze(-1);
}

struct QuantizedWeight::Packed {
  c10::intrusive_ptr<LinearPackedParamsBase> weight;
};

namespace {

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

}  // namespace

QuantizedWeight::QuantizedWeight(QuantGrid grid, QuantActivations activations, at::Tensor codes, at::Tensor scales,
                                 at::Tensor zeros)
    : grid_(grid), activations_(activations), codes_(std::move(codes)), scales_(std::move(scales)),
      zeros_(std::move(zeros)) {
  if (codes_.dim() != 2) throw std::invalid_argument("quantized weight: codes must be (out, in)");
  const int64_t out = codes_.size(0), in = codes_.size(1);
  if (is_int4(grid_)) {
    const int64_t g = grid_.group_size;
    if (g <= 0 || in % g != 0)
      throw std::invalid_argument("int4 groups of " + s(g) + " inputs do not tile the " + s(in) + " inputs of the layer");
    if (codes_.scalar_type() != at::kByte || scales_.sizes() != at::IntArrayRef{out, in / g} || !zeros_.defined() ||
        zeros_.sizes() != scales_.sizes())
      throw std::invalid_argument("int4 weight: codes (" + s(out) + ", " + s(in) + ") uint8 need scales and zeros (" +
                                  s(out) + ", " + s(in / g) + ")");
    if (in % 2 != 0) throw std::invalid_argument("int4 weight: an odd number of inputs (" + s(in) + ")");
  } else {
    if (codes_.scalar_type() != at::kChar || scales_.sizes() != at::IntArrayRef{out})
      throw std::invalid_argument("int8 weight: codes (" + s(out) + ", " + s(in) + ") int8 need scales (" + s(out) + ")");
  }
  codes_ = codes_.contiguous();
  scales_ = scales_.to(at::kFloat).contiguous();
  if (zeros_.defined()) zeros_ = zeros_.to(at::kFloat).contiguous();
  if (grid_.scheme == QuantScheme::Int8Dynamic) {
    // scales_ is float32 from here on; the kernel takes the same values.
    if (auto w = fbgemm_pack(codes_, scales_)) packed_ = std::make_shared<const Packed>(Packed{std::move(w)});
  } else if (activations_ == QuantActivations::BFloat16 && grid_.scheme == QuantScheme::Int8WeightOnly) {
    kernel_scales_ = scales_.to(at::kBFloat16);
  } else if (activations_ == QuantActivations::BFloat16 && is_int4(grid_)) {
    kernel_weight_ = at::_convert_weight_to_int4pack_for_cpu(codes_.to(at::kInt), /*innerKTiles=*/2);
    // (in / group, out, 2): scale and zero of each group.
    kernel_scales_ = at::stack({scales_, zeros_}, -1).transpose(0, 1).contiguous().to(at::kBFloat16);
  }
}

at::Tensor QuantizedWeight::dequantize() const {
  if (!is_int4(grid_)) return grid_.values(codes_, scales_, zeros_);
  const int64_t out = this->out(), in = this->in(), g = grid_.group_size;
  return grid_.values(codes_.view({out * (in / g), g}), scales_.reshape(-1), zeros_.reshape(-1)).view({out, in});
}

at::Tensor QuantizedWeight::linear(const at::Tensor& x, const at::Tensor& bias) const {
  if (!x.device().is_cpu())
    throw std::invalid_argument("quantized layers run on the CPU; the input is on " + x.device().str());
  if (x.size(-1) != in())
    throw std::invalid_argument("quantized linear: input has " + s(x.size(-1)) + " features, the layer " + s(in()));
  const bool bf16 = activations_ == QuantActivations::BFloat16;
  if (grid_.scheme == QuantScheme::Int8WeightOnly && x.numel() <= kSmallRowsMax * in()) {
    // A few rows (decoding): the codes streamed once by lathe's product, in float, from x as
    // the scheme's activations hold it. (More rows skip the conversion: ATen's kernels below.)
    if (auto y = small_rows_linear_int8(x.to(bf16 ? at::kBFloat16 : at::kFloat), codes_, scales_, bias); y.defined())
      return y.to(x.scalar_type());
  }
  auto shape = x.sizes().vec();
  shape.back() = out();
  const auto x2 = x.reshape({-1, in()});
  at::Tensor y;
  switch (grid_.scheme) {
    case QuantScheme::Int8Dynamic: {
      // Per token: codes round(x / s) in [-63, 63], s = max|x| / 63. Seven bits, as PyTorch's
      // reduce_range: fbgemm's u8 x s8 kernel on x86 without VNNI adds pairs of products in
      // int16 with saturation (vpmaddubsw), and 2 * 127 * 127 fits where 2 * 255 * 127 does
      // not, so every CPU accumulates the same exact int32.
      const auto xf = x2.to(at::kFloat);
      // max |x| from the row's max and min: two reductions without an |x| temporary.
      const auto x_scale = at::maximum(xf.amax(-1, /*keepdim=*/true), xf.amin(-1, /*keepdim=*/true).neg_())
                               .div_(kActivationMax)
                               .clamp_min_(kMinScale);
      if (packed_) {
        // fbgemm rounds x / s itself and shifts by the zero point 64 into u8 [1, 127]: exact codes.
        y = packed_->weight->apply_with_input_q_dq_qweight_dq_output_fp32(xf / x_scale, /*input_scale=*/1.0,
                                                                           /*input_zero_point=*/64);
      } else {
        const auto q = (xf / x_scale).round_().clamp_(-kActivationMax, kActivationMax).to(at::kChar);
        y = at::_int_mm(q, codes_.t()).to(at::kFloat).mul_(scales_);
      }
      // In place: a fresh (M, out) result would cost as much as the product for wide layers.
      if (bias.defined()) at::addcmul_out(y, bias.to(at::kFloat), y, x_scale);
      else y.mul_(x_scale);
      return y.to(x.scalar_type()).view(shape);
    }
    case QuantScheme::Int8WeightOnly:
      y = bf16 ? at::_weight_int8pack_mm(x2.to(at::kBFloat16).contiguous(), codes_, kernel_scales_)
               : at::linear(x2.to(at::kFloat), codes_.to(at::kFloat)).mul_(scales_);
      break;
    case QuantScheme::Int4WeightOnly:
      y = bf16 ? at::_weight_int4pack_mm_for_cpu(x2.to(at::kBFloat16).contiguous(), kernel_weight_, grid_.group_size,
                                                 kernel_scales_)
               : at::linear(x2.to(at::kFloat), dequantize());
      break;
  }
  if (bias.defined()) y = y + bias.to(y.scalar_type());
  return y.to(x.scalar_type()).view(shape);
}

std::map<std::string, at::Tensor> QuantizedWeight::stored() const {
  std::map<std::string, at::Tensor> out{{"scales", scales_}};
  if (is_int4(grid_)) {
    using namespace at::indexing;
    const auto lo = codes_.index({Slice(), Slice(0, None, 2)});
    const auto hi = codes_.index({Slice(), Slice(1, None, 2)});
    out["qweight"] = lo.bitwise_or(hi.bitwise_left_shift(4)).contiguous();
    out["zeros"] = zeros_;
  } else {
    out["qweight"] = codes_;
  }
  return out;
}

int64_t QuantizedWeight::bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : stored()) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}

QuantizedWeight QuantizedWeight::from_stored(QuantGrid grid, QuantActivations activations,
                                             const std::map<std::string, at::Tensor>& tensors, int64_t in) {
  auto get = [&](const char* name) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::invalid_argument(std::string("missing tensor ") + name);
    return it->second;
  };
  auto q = get("qweight");
  if (!is_int4(grid)) return QuantizedWeight(grid, activations, q, get("scales"), at::Tensor());
  if (q.scalar_type() != at::kByte || q.dim() != 2 || q.size(1) * 2 != in)
    throw std::invalid_argument("int4 qweight must be uint8 (out, " + s(in / 2) + ")");
  auto codes = at::stack({q.bitwise_and(15), q.bitwise_right_shift(4)}, -1).view({q.size(0), in});
  return QuantizedWeight(grid, activations, codes, get("scales"), get("zeros"));
}

QuantizedWeight quantize_rtn(const at::Tensor& weight, QuantGrid grid, QuantActivations activations) {
  const auto w = weight.detach().to(at::kFloat);
  const int64_t out = w.size(0), in = w.size(1);
  const int64_t g = grid.group(in);
  if (g <= 0 || in % g != 0)
    throw std::invalid_argument("int4 groups of " + s(g) + " inputs do not tile the " + s(in) + " inputs of the layer");
  const auto groups = w.reshape({out * (in / g), g});
  auto [scale, zero] = grid.params(groups);
  auto codes = grid.codes(groups, scale, zero).view({out, in});
  if (!is_int4(grid)) return QuantizedWeight(grid, activations, codes, scale, at::Tensor());
  return QuantizedWeight(grid, activations, codes, scale.view({out, in / g}), zero.view({out, in / g}));
}

}  // namespace lathe::nn
