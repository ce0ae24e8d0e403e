// Low-rank adapters, a Linear's adapter methods, and the gradient of a quantized product.

#include "lathe/nn/lora.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "lathe/nn/linear.hpp"

namespace lathe::nn {

namespace {
thread_local bool disabled = false;
std::string s(int64_t v) { return std::to_string(v); }
}  // namespace

AdaptersDisabledGuard::AdaptersDisabledGuard() : previous_(disabled) { disabled = true; }
AdaptersDisabledGuard::~AdaptersDisabledGuard() { disabled = previous_; }
bool adapters_disabled() { return disabled; }

double LoraOptions::scaling() const {
  const auto r = static_cast<double>(rank);
  return rslora ? alpha / std::sqrt(r) : alpha / r;
}

LoraImpl::LoraImpl(LoraOptions o) : options(std::move(o)) {
  if (options.rank < 1) throw std::invalid_argument("lora: rank must be at least 1, got " + s(options.rank));
  if (options.in <= 0 || options.out <= 0) throw std::invalid_argument("lora: in and out must be positive");
  if (options.parts.empty()) options.parts.push_back({0, options.out});
  int64_t next = 0, rows = 0;
  for (const auto& p : options.parts) {
    if (p.rows < 1 || p.begin < next || p.begin + p.rows > options.out)
      throw std::invalid_argument("lora: part of rows [" + s(p.begin) + ", " + s(p.begin + p.rows) +
                                  ") overlaps another, is out of order or outside the layer's " + s(options.out) +
                                  " rows");
    next = p.begin + p.rows;
    rows += p.rows;
  }
  const auto parts = static_cast<int64_t>(options.parts.size());
  const auto f32 = at::TensorOptions(options.device).dtype(at::kFloat);
  A = add(*this, "A", at::empty({parts * options.rank, options.in}, f32), Role::Adapter);
  B = add(*this, "B", at::empty({rows, options.rank}, f32), Role::Adapter);
  if (options.dropout > 0) dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout));
  reset_parameters();
}

void LoraImpl::reset_parameters() {
  if (A.is_meta()) return;
  torch::NoGradGuard no_grad;
  // kaiming_uniform_(a=sqrt(5)) on a (r, in) matrix: gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(options.in));
  A.uniform_(-bound, bound);
  B.zero_();
}

torch::Tensor LoraImpl::forward(const torch::Tensor& x) {
  const auto in = dropout_ ? dropout_->forward(x) : x;
  const auto h = at::linear(in, A.to(in.scalar_type()));  // (..., P r), autocast's dtype when on
  const double s = options.scaling();
  const auto& parts = options.parts;
  if (parts.size() == 1 && parts[0].rows == options.out) return at::linear(h, B.to(h.scalar_type())) * s;
  // Each part: its r columns of h through its rows of B; rows of no part stay zero.
  std::vector<at::Tensor> pieces;
  int64_t row = 0, brow = 0;
  auto shape = h.sizes().vec();
  for (std::size_t p = 0; p < parts.size(); ++p) {
    if (parts[p].begin > row) {
      shape.back() = parts[p].begin - row;
      pieces.push_back(at::zeros(shape, h.options()));
    }
    const auto hp = h.narrow(-1, static_cast<int64_t>(p) * options.rank, options.rank);
    pieces.push_back(at::linear(hp, B.narrow(0, brow, parts[p].rows).to(h.scalar_type())));
    brow += parts[p].rows;
    row = parts[p].begin + parts[p].rows;
  }
  if (row < options.out) {
    shape.back() = options.out - row;
    pieces.push_back(at::zeros(shape, h.options()));
  }
  return at::cat(pieces, -1) * s;
}

torch::Tensor LoraImpl::delta_weight() const {
  torch::NoGradGuard no_grad;
  auto delta = at::zeros({options.out, options.in}, A.options().dtype(at::kFloat));
  int64_t brow = 0;
  for (std::size_t p = 0; p < options.parts.size(); ++p) {
    const auto& part = options.parts[p];
    const auto a = A.narrow(0, static_cast<int64_t>(p) * options.rank, options.rank).to(at::kFloat);
    delta.narrow(0, part.begin, part.rows).copy_(at::mm(B.narrow(0, brow, part.rows).to(at::kFloat), a));
    brow += part.rows;
  }
  return delta.mul_(options.scaling());
}

void LinearImpl::add_adapter(LoraOptions o) {
  if (lora) throw std::logic_error("Linear: the layer has an adapter already");
  o.in = options.in;
  o.out = options.out;
  lora = register_module("lora", Lora(std::move(o)));
}

void LinearImpl::merge_adapter() {
  if (!lora) return;
  dequantize();
  {
    torch::NoGradGuard no_grad;
    weight.add_(lora->delta_weight().to(weight.scalar_type()));
  }
  remove_adapter();
}

void LinearImpl::remove_adapter() {
  if (!lora) return;
  unregister_module("lora");
  lora = nullptr;
}

namespace {

/// The backward of a quantized product: grad_x = grad_y W, with W dequantized for the moment of
/// the backward (the weight itself is frozen), and grad_b the sum of grad_y over the rows.
struct QuantizedProductBackward : torch::autograd::Node {
  std::shared_ptr<const QuantizedWeight> weight;
  bool has_bias = false;
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const auto& g = grads[0];
    torch::autograd::variable_list out{
        task_should_compute_output(0) ? at::matmul(g, weight->dequantize().to(g.scalar_type())) : at::Tensor()};
    if (has_bias)
      out.push_back(task_should_compute_output(1) ? g.reshape({-1, g.size(-1)}).sum(0).to(at::kFloat) : at::Tensor());
    return out;
  }
};

}  // namespace

at::Tensor quantized_product(const std::shared_ptr<const QuantizedWeight>& w, const at::Tensor& x,
                             const at::Tensor& bias) {
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!needs_grad) return w->linear(x, bias);
  at::Tensor y;
  {
    at::NoGradGuard no_grad;
    y = w->linear(x, bias);
  }
  auto node = std::shared_ptr<QuantizedProductBackward>(new QuantizedProductBackward(), torch::autograd::deleteNode);
  node->weight = w;
  node->has_bias = bias.defined();
  node->set_next_edges(bias.defined() ? torch::autograd::collect_next_edges(x, bias)
                                      : torch::autograd::collect_next_edges(x));
  torch::autograd::set_history(y, node);
  return y;
}

}  // namespace lathe::nn
