// The quantized Linear weight: what every scheme shares (shapes, groups, the stored form); the
// scheme's own grid, packing and kernel come from its row (quant_schemes.cpp).

#include "lathe/nn/quantized.hpp"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

namespace lathe::nn {

namespace {

std::string s(int64_t v) { return std::to_string(v); }

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    default: return c10::toString(t);
  }
}

/// Throws unless groups of `g` inputs tile a layer of `in` inputs.
void check_groups(const QuantSchemeTraits& row, int64_t g, int64_t in) {
  if (g <= 0 || in % g != 0)
    throw std::invalid_argument(std::string(row.family) + " groups of " + s(g) + " inputs do not tile the " + s(in) +
                                " inputs of the layer");
}

}  // namespace

QuantizedWeight::QuantizedWeight(QuantGrid grid, QuantActivations activations, at::Tensor codes, at::Tensor scales,
                                 at::Tensor zeros)
    : grid_(grid), activations_(activations), codes_(std::move(codes)), scales_(std::move(scales)),
      zeros_(std::move(zeros)) {
  const auto& row = grid_.traits();
  if (codes_.dim() != 2) throw std::invalid_argument("quantized weight: codes must be (out, in)");
  const int64_t out = codes_.size(0), in = codes_.size(1);
  const int64_t g = grid_.group(in);
  if (row.group_rule == QuantGroupRule::PerGroup) check_groups(row, g, in);
  const auto scale_shape = row.group_rule == QuantGroupRule::PerGroup ? std::vector<int64_t>{out, in / g}
                                                                       : std::vector<int64_t>{out};
  if (codes_.scalar_type() != row.code_dtype || scales_.sizes() != at::IntArrayRef(scale_shape) ||
      (!row.symmetric && (!zeros_.defined() || zeros_.sizes() != scales_.sizes())))
    throw std::invalid_argument(std::string(row.family) + " weight: codes (" + s(out) + ", " + s(in) + ") " +
                                dtype_name(row.code_dtype) + " need " +
                                (row.symmetric ? "scales (" : "scales and zeros (") + s(out) +
                                (scale_shape.size() == 2 ? ", " + s(scale_shape[1]) : "") + ")");
  if (in * row.bits % 8 != 0)
    throw std::invalid_argument(std::string(row.family) + " weight: " + s(in) + " inputs do not fill whole bytes of " +
                                s(row.bits) + "-bit codes");
  codes_ = codes_.contiguous();
  scales_ = scales_.to(at::kFloat).contiguous();
  if (row.symmetric) zeros_ = at::Tensor();
  else zeros_ = zeros_.to(at::kFloat).contiguous();
  kernel_ = row.prepare(*this);
}

at::Tensor QuantizedWeight::dequantize() const {
  const int64_t out = this->out(), in = this->in(), g = grid_.group(in);
  if (g == in) return grid_.values(codes_, scales_.view({out}), zeros_.defined() ? zeros_.view({out}) : zeros_);
  return grid_.values(codes_.view({out * (in / g), g}), scales_.reshape(-1), zeros_.defined() ? zeros_.reshape(-1) : zeros_)
      .view({out, in});
}

at::Tensor QuantizedWeight::linear(const at::Tensor& x, const at::Tensor& bias) const {
  if (!x.device().is_cpu())
    throw std::invalid_argument("quantized layers run on the CPU; the input is on " + x.device().str());
  if (x.size(-1) != in())
    throw std::invalid_argument("quantized linear: input has " + s(x.size(-1)) + " features, the layer " + s(in()));
  auto shape = x.sizes().vec();
  shape.back() = out();
  return grid_.traits().linear(*this, x.reshape({-1, in()}), bias).view(shape);
}

std::map<std::string, at::Tensor> QuantizedWeight::stored() const {
  std::map<std::string, at::Tensor> out{{"qweight", grid_.traits().pack(codes_)}, {"scales", scales_}};
  if (zeros_.defined()) out["zeros"] = zeros_;
  return out;
}

int64_t QuantizedWeight::bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : stored()) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}

QuantizedWeight QuantizedWeight::from_stored(QuantGrid grid, QuantActivations activations,
                                             const std::map<std::string, at::Tensor>& tensors, int64_t in) {
  const auto& row = grid.traits();
  auto get = [&](const char* name) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::invalid_argument(std::string("missing tensor ") + name);
    return it->second;
  };
  const auto q = get("qweight");
  const int64_t stored_in = in * row.bits / 8;
  if (q.scalar_type() != row.storage_dtype || q.dim() != 2 || q.size(1) != stored_in || in * row.bits % 8 != 0)
    throw std::invalid_argument(std::string(row.family) + " qweight must be " + dtype_name(row.storage_dtype) +
                                " (out, " + s(stored_in) + ")");
  return QuantizedWeight(grid, activations, row.unpack(q, in), get("scales"),
                         row.symmetric ? at::Tensor() : get("zeros"));
}

QuantizedWeight quantize_rtn(const at::Tensor& weight, QuantGrid grid, QuantActivations activations) {
  const auto& row = grid.traits();
  const auto w = weight.detach().to(at::kFloat);
  const int64_t out = w.size(0), in = w.size(1);
  const int64_t g = grid.group(in);
  check_groups(row, g, in);
  const auto groups = w.reshape({out * (in / g), g});
  auto [scale, zero] = grid.params(groups);
  auto codes = grid.codes(groups, scale, zero).view({out, in});
  const auto shape = row.group_rule == QuantGroupRule::PerGroup ? std::vector<int64_t>{out, in / g}
                                                                 : std::vector<int64_t>{out};
  return QuantizedWeight(grid, activations, codes, scale.view(shape), zero.defined() ? zero.view(shape) : zero);
}

}  // namespace lathe::nn
