// Post-training quantization: layer selection, round-to-nearest and GPTQ.

#include "lathe/compress/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include "lathe/core/error.hpp"
#include "lathe/nn/linear.hpp"

namespace lathe::compress {

namespace {

/// "32, 64, 128 or 256"
std::string or_list(std::span<const int64_t> values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i)
    out += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + std::to_string(values[i]);
  return out;
}

}  // namespace

nn::QuantActivations QuantizeOptions::resolved_activations() const {
  switch (activations) {
    case QuantCompute::Float32: return nn::QuantActivations::Float32;
    case QuantCompute::BFloat16: return nn::QuantActivations::BFloat16;
    case QuantCompute::Auto: break;
  }
  return nn::quant_scheme(method).default_activations;
}

std::vector<models::OptionProblem> QuantizeOptions::problems() const {
  std::vector<models::OptionProblem> out;
  const auto& row = nn::quant_scheme(method);
  const auto& sizes = row.group_sizes;
  if (row.group_rule == nn::QuantGroupRule::PerGroup && std::find(sizes.begin(), sizes.end(), group_size) == sizes.end())
    out.push_back({{"group_size", "method"}, fmt::format("{} groups of {} inputs: {} take {}", row.family, group_size,
                                                         row.kernels, or_list(sizes))});
  if (row.quantizes_activations && activations != QuantCompute::Auto)
    out.push_back({{"activations", "method"}, fmt::format("{} quantizes activations to {} itself; activations is for "
                                                          "the weight-only methods",
                                                          row.name, row.family)});
  return out;
}

std::vector<std::pair<std::string, nn::LinearImpl*>> quantizable(const models::AnyModel& model,
                                                                  const std::vector<std::string>& skip) {
  check_skip_modules(model, skip, "quantize.skip_modules");
  std::vector<std::pair<std::string, nn::LinearImpl*>> out;
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) {
    const auto role = lin->options.role;
    if (!nn::is_matrix(role) || nn::selected({path + ".weight", lin->weight, role}, skip)) continue;
    out.emplace_back(path, lin);
  }
  return out;
}

nn::QuantizedWeight gptq(const at::Tensor& weight, const at::Tensor& hessian, nn::QuantGrid grid,
                         nn::QuantActivations activations, double damp, int64_t block_size) {
  using namespace at::indexing;
  torch::NoGradGuard no_grad;
  const auto f64 = weight.options().dtype(at::kDouble).device(at::kCPU);
  auto W = weight.detach().to(f64, /*non_blocking=*/false, /*copy=*/true);
  auto H = hessian.detach().to(f64, /*non_blocking=*/false, /*copy=*/true);
  const int64_t rows = W.size(0), cols = W.size(1);
  if (H.dim() != 2 || H.size(0) != cols || H.size(1) != cols)
    throw std::invalid_argument(fmt::format("gptq: a Hessian of {} x {} for a weight with {} inputs", H.size(0), H.dim() > 1 ? H.size(1) : 0, cols));
  const int64_t g = grid.group(cols);
  if (g <= 0 || cols % g != 0)
    throw std::invalid_argument(
        fmt::format("{} groups of {} inputs do not tile the {} inputs of the layer", grid.traits().family, g, cols));
  // Inputs that were always zero carry no information: their weights are zeroed.
  const auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.masked_fill_(dead.unsqueeze(0), 0.0);
  H.diagonal().add_(damp * H.diagonal().mean().item<double>());
  // Upper Cholesky factor of H^-1: row j holds how column j's error spreads over the columns after it.
  const auto U = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(H)), /*upper=*/true);

  const auto& row = grid.traits();
  auto codes = at::empty({rows, cols}, weight.options().device(at::kCPU).dtype(row.code_dtype));
  auto scales = at::empty({rows, cols / g}, f64), zeros = at::empty({rows, cols / g}, f64);
  at::Tensor scale, zero;
  const bool per_row = row.group_rule == nn::QuantGroupRule::PerRow;  // one grid per row, from the weights as given
  if (per_row) std::tie(scale, zero) = grid.params(W);
  // A group never spans two lazy blocks: blocks are whole groups.
  const int64_t block = per_row ? std::max<int64_t>(block_size, 1) : ((std::max<int64_t>(block_size, 1) + g - 1) / g) * g;

  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(i1 + block, cols), count = i2 - i1;
    auto W1 = W.index({Slice(), Slice(i1, i2)}).clone();
    auto E1 = at::zeros({rows, count}, f64);
    const auto U1 = U.index({Slice(i1, i2), Slice(i1, i2)});
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      if (!per_row && col % g == 0) {
        std::tie(scale, zero) = grid.params(W1.index({Slice(), Slice(i, i + g)}));
        scales.select(1, col / g).copy_(scale);
        if (zero.defined()) zeros.select(1, col / g).copy_(zero);
      }
      const auto w = W1.select(1, i);
      const auto q = grid.codes(w.unsqueeze(1), scale, zero);
      codes.select(1, col).copy_(q.squeeze(1));
      const auto err = (w - grid.values(q, scale, zero).squeeze(1)) / U1[i][i];
      W1.index({Slice(), Slice(i, None)}).sub_(err.unsqueeze(1) * U1.index({i, Slice(i, None)}).unsqueeze(0));
      E1.select(1, i).copy_(err);
    }
    if (i2 < cols) W.index({Slice(), Slice(i2, None)}).sub_(E1.matmul(U.index({Slice(i1, i2), Slice(i2, None)})));
  }
  if (per_row)
    return nn::QuantizedWeight(grid, activations, codes, scale.to(at::kFloat),
                               zero.defined() ? zero.to(at::kFloat) : at::Tensor());
  return nn::QuantizedWeight(grid, activations, codes, scales.to(at::kFloat),
                             row.symmetric ? at::Tensor() : zeros.to(at::kFloat));
}

std::vector<QuantizedLayer> quantize_model(models::AnyModel& model, const QuantizeOptions& o,
                                           const Calibration* calibration) {
  for (const auto& [path, q] : models::quantized_layers(model))
    throw Error(fmt::format("the model is already quantized ({}: {}); quantize its float checkpoint instead", path,
                            enum_name(q->grid().scheme)));
  if (const auto problems = o.problems(); !problems.empty())
    throw Error(fmt::format("quantize.{}: {}", problems.front().keys.front(), problems.front().message));
  const bool use_gptq = o.algorithm == QuantAlgorithm::Gptq;
  if (use_gptq && (!calibration || !calibration->run || calibration->batches <= 0))
    throw std::invalid_argument("gptq needs calibration batches");
  check_skip_modules(model, o.skip_modules, "quantize.skip_modules");
  // A tied output head is quantized as a copy of the embedding, which stays a float table.
  if (auto head = model.tied_head(); head && !nn::selected(*head, o.skip_modules)) model.separate_head();
  const auto layers = quantizable(model, o.skip_modules);
  const auto grid = o.grid();
  for (const auto& [path, lin] : layers)
    if (grid.group(lin->options.in) <= 0 || lin->options.in % grid.group(lin->options.in) != 0)
      throw Error(fmt::format("{}: {} groups of {} inputs do not tile its {} inputs; set quantize.group_size to a "
                              "divisor of {} or leave the layer float (quantize.skip_modules)",
                              path, grid.traits().family, o.group_size, lin->options.in, lin->options.in));
  torch::NoGradGuard no_grad;
  model.module()->eval();
  std::vector<QuantizedLayer> out;
  for (const auto& [path, lin] : layers) {
    const auto w = lin->weight.detach().to(at::kFloat);
    QuantizedLayer rec;
    rec.name = path;
    rec.float_bytes = w.numel() * 4;
    at::Tensor H;
    if (use_gptq) {
      // This layer's inputs, through the layers before it as quantized so far.
      H = at::zeros({lin->options.in, lin->options.in}, w.options().dtype(at::kDouble).device(at::kCPU));
      int64_t tokens = 0;
      lin->input_observer = [&H, &tokens, in = lin->options.in](const at::Tensor& x) {
        const auto x2 = x.detach().reshape({-1, in}).to(at::kCPU, at::kDouble);
        H.addmm_(x2.t(), x2);
        tokens += x2.size(0);
      };
      struct Reset {
        nn::LinearImpl* lin;
        ~Reset() { lin->input_observer = nullptr; }
      } reset{lin};
      for (int64_t i = 0; i < calibration->batches; ++i) calibration->run(i, /*backward=*/false);
      if (tokens == 0) throw std::logic_error("the calibration batches never reached " + path);
      H.mul_(2.0 / static_cast<double>(tokens));
    }
    auto q = use_gptq ? gptq(w, H, grid, o.resolved_activations(), o.damp, o.block_size)
                      : nn::quantize_rtn(w, grid, o.resolved_activations());
    const auto wd = w.to(at::kCPU, at::kDouble);
    const auto diff = q.dequantize().to(at::kDouble) - wd;
    rec.weight_error = diff.norm().item<double>() / std::max(wd.norm().item<double>(), 1e-30);
    if (use_gptq)  // ||(W - Q) X|| / ||W X|| over the calibration inputs: tr(D H D^T) / tr(W H W^T)
      rec.output_error = std::sqrt((diff.matmul(H) * diff).sum().item<double>() /
                                   std::max((wd.matmul(H) * wd).sum().item<double>(), 1e-300));
    rec.quantized_bytes = q.bytes();
    lin->quantize(std::move(q));
    out.push_back(rec);
  }
  return out;
}

}  // namespace lathe::compress
