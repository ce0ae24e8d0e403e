// Norms, rotary tables, the MLP and the transformer block.

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/DefaultDtype.h>
#include <torch/nn/init.h>

#include "lathe/nn/block.hpp"
#include "lathe/nn/gemv.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/mlp.hpp"
#include "lathe/nn/norm.hpp"
#include "lathe/nn/rotary.hpp"

namespace lathe::nn {

namespace {
thread_local bool skip_init = false;
}

SkipInitGuard::SkipInitGuard() : previous_(skip_init) { skip_init = true; }
SkipInitGuard::~SkipInitGuard() { skip_init = previous_; }
bool init_skipped() { return skip_init; }

BuildDtypeGuard::BuildDtypeGuard(at::ScalarType dtype) : previous_(c10::get_default_dtype()) {
  c10::set_default_dtype(caffe2::TypeMeta::fromScalarType(dtype));
}
BuildDtypeGuard::~BuildDtypeGuard() { c10::set_default_dtype(previous_); }

void initialise(const torch::nn::Module& model, const InitRule& rule, const ValueSink& sink) {
  if (!sink && init_skipped()) return;
  torch::NoGradGuard no_grad;
  for (auto& p : roles_of(model)) {
    if (!sink) {
      rule(p, p.tensor);
      continue;
    }
    // Drawn in float32, as the models are built, whatever dtype the parameter has been given since
    // (fsdp's blocks are placed in their gather dtype before the values come).
    const auto dtype = p.tensor.is_floating_point() ? at::kFloat : p.tensor.scalar_type();
    auto values = at::empty(p.tensor.sizes(), at::TensorOptions(at::kCPU).dtype(dtype));
    rule(p, values);
    sink(p.name, values);
  }
}

NormImpl::NormImpl(const NormOptions& o) : options(o) {
  if (o.dim <= 0) throw std::invalid_argument("Norm: dim must be positive, got " + std::to_string(o.dim));
  weight = add(*this, "weight", torch::empty({o.dim}, o.device), Role::Norm);
  if (o.bias && o.kind == NormKind::LayerNorm) bias = add(*this, "bias", torch::empty({o.dim}, o.device), Role::Bias);
  reset_parameters();
}

void NormImpl::reset_parameters() {
  if (init_skipped()) return;
  torch::NoGradGuard no_grad;
  weight.fill_(initial_weight(options.kind));
  if (bias.defined()) bias.zero_();
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  // Parameters held in another dtype than the stream (fsdp's blocks gathered in bf16) compute in
  // the stream's, as CUDA autocast's float32 norms do; the cast is differentiable.
  const auto cast = [&](const torch::Tensor& p) {
    return p.defined() && p.scalar_type() != x.scalar_type() ? p.to(x.scalar_type()) : p;
  };
  if (options.kind == NormKind::RmsNorm) return at::rms_norm(x, {options.dim}, cast(weight), options.eps);
  if (options.kind == NormKind::RmsNormOffset)  // in float32 throughout, cast once, as transformers' Gemma does
    return at::rms_norm(x.to(at::kFloat), {options.dim}, weight.to(at::kFloat) + 1.0, options.eps)
        .to(x.scalar_type());
  return at::layer_norm(x, {options.dim}, cast(weight), cast(bias), options.eps);
}

LinearImpl::LinearImpl(const LinearOptions& o) : options(o) {
  if (o.in <= 0 || o.out <= 0)
    throw std::invalid_argument("Linear: in and out must be positive, got " + std::to_string(o.in) + " -> " +
                                std::to_string(o.out));
  torch::NoGradGuard no_grad;
  weight = add(*this, "weight", torch::empty({o.out, o.in}, o.device), o.role);
  if (!init_skipped()) weight.normal_(0.0, 0.02);
  if (o.bias) bias = add(*this, "bias", init_skipped() ? torch::empty({o.out}, o.device) : torch::zeros({o.out}, o.device), Role::Bias);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (input_observer) input_observer(x);
  auto y = quantized_ ? quantized_product(quantized_, x, bias) : nn::linear(x, weight, bias);
  if (lora && !adapters_disabled()) y = y + lora->forward(x);
  return y;
}

void LinearImpl::quantize(QuantizedWeight q) {
  if (q.out() != options.out || q.in() != options.in)
    throw std::invalid_argument("Linear: a quantized weight of " + std::to_string(q.out()) + " x " +
                                std::to_string(q.in()) + " for a layer of " + std::to_string(options.out) + " x " +
                                std::to_string(options.in));
  quantized_ = std::make_shared<const QuantizedWeight>(std::move(q));
  // An undefined parameter is skipped by named_parameters(): the float weight is gone.
  parameters_["weight"] = torch::Tensor();
  weight = torch::Tensor();
}

void LinearImpl::dequantize() {
  if (!quantized_) return;
  weight = quantized_->dequantize();
  parameters_["weight"] = weight;
  quantized_.reset();
}

std::vector<std::pair<std::string, LinearImpl*>> linear_layers(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, LinearImpl*>> out;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false))
    if (auto* lin = dynamic_cast<LinearImpl*>(item.value().get())) out.emplace_back(item.key(), lin);
  return out;
}

EmbeddingImpl::EmbeddingImpl(const EmbeddingOptions& o) : options(o) {
  if (o.count <= 0 || o.dim <= 0)
    throw std::invalid_argument("Embedding: count and dim must be positive, got " + std::to_string(o.count) + " x " +
                                std::to_string(o.dim));
  if (o.padding_idx >= o.count)
    throw std::invalid_argument("Embedding: padding_idx " + std::to_string(o.padding_idx) + " is outside the " +
                                std::to_string(o.count) + " rows");
  torch::NoGradGuard no_grad;
  weight = add(*this, "weight", torch::empty({o.count, o.dim}, o.device), Role::Embedding);
  if (init_skipped()) return;
  weight.normal_(0.0, 0.02);
  if (o.padding_idx >= 0) weight[o.padding_idx].zero_();
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return at::embedding(weight, ids, options.padding_idx);
}

at::Tensor rotary_inv_freq(int64_t head_dim, const RotaryOptions& o) {
  if (head_dim % 2 != 0) throw std::invalid_argument("rotary embeddings need an even head dimension, got " +
                                                     std::to_string(head_dim));
  // Same arithmetic as the reference implementations: integer exponents over head_dim in float32.
  auto inv_freq = 1.0 / at::pow(o.theta, at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / head_dim);
  switch (o.scaling) {
    case RopeScaling::None: return inv_freq;
    case RopeScaling::Linear: return inv_freq / o.factor;
    case RopeScaling::Llama3: {
      // Llama 3.1's rule (transformers' _compute_llama3_parameters), in float32 as there.
      const double old = static_cast<double>(o.original_max_seq_len);
      const double low_wavelen = old / o.low_freq_factor, high_wavelen = old / o.high_freq_factor;
      auto wavelen = 2 * M_PI / inv_freq;
      auto scaled = at::where(wavelen > low_wavelen, inv_freq / o.factor, inv_freq);
      auto smooth = (old / wavelen - o.low_freq_factor) / (o.high_freq_factor - o.low_freq_factor);
      auto smoothed = (1 - smooth) * scaled / o.factor + smooth * scaled;
      auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
      return at::where(medium, smoothed, scaled);
    }
  }
  throw std::logic_error("rotary_inv_freq: unknown scaling");
}

RotaryTables rotary_tables(const at::Tensor& positions, int64_t head_dim, const RotaryOptions& options) {
  auto inv_freq = rotary_inv_freq(head_dim, options);
  // (..., T, D/2): each position times each frequency, as an outer product
  auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.to(positions.device());
  auto emb = at::cat({freqs, freqs}, -1);  // (..., T, D)
  if (positions.dim() == 2) emb = emb.unsqueeze(1);  // per-row positions: (B, 1, T, D)
  return {emb.cos(), emb.sin()};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& t) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  auto cos = t.cos.to(x.scalar_type());
  auto sin = t.sin.to(x.scalar_type());
  return x * cos + rotated * sin;
}

MlpImpl::MlpImpl(const MlpOptions& o) : options(o) {
  if (o.d_model <= 0 || o.d_ff <= 0)
    throw std::invalid_argument("Mlp: d_model and d_ff must be positive, got " + std::to_string(o.d_model) + " and " +
                                std::to_string(o.d_ff));
  const int64_t fc_out = gated(o.activation) ? 2 * o.d_ff : o.d_ff;
  fc = register_module("fc", Linear(LinearOptions{o.d_model, fc_out, o.bias, o.device, Role::NeuronBlock}));
  proj = register_module("proj", Linear(LinearOptions{o.d_ff, o.d_model, o.bias, o.device, Role::ResidualProjection}));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto h = fc(x);
  switch (options.activation) {
    case Activation::GeluTanh: h = at::gelu(h, "tanh"); break;
    case Activation::Gelu: h = at::gelu(h); break;
    case Activation::SwiGlu:
    case Activation::GeGlu:
    case Activation::GeGluTanh: {
      auto gate_up = h.chunk(2, -1);
      const auto& gate = gate_up[0];
      auto act = options.activation == Activation::SwiGlu ? at::silu(gate)
                 : options.activation == Activation::GeGlu ? at::gelu(gate)
                                                           : at::gelu(gate, "tanh");
      h = act * gate_up[1];
      break;
    }
  }
  auto y = proj(h);
  if (options.dropout > 0 && is_training()) y = at::dropout(y, options.dropout, /*train=*/true);
  return y;
}

BlockImpl::BlockImpl(BlockOptions o) : options(std::move(o)) {
  options.norm.dim = options.attention.d_model;
  options.norm.device = options.attention.device;
  options.mlp.device = options.attention.device;
  ln_1 = register_module("ln_1", Norm(options.norm));
  attn = register_module("attn", Attention(options.attention));
  ln_2 = register_module("ln_2", Norm(options.norm));
  mlp = register_module("mlp", Mlp(options.mlp));
  if (options.sandwich_norm) {
    if (!options.pre_norm) throw std::invalid_argument("Block: sandwich norms are for the pre-LN order");
    post_ln_1 = register_module("post_ln_1", Norm(options.norm));
    post_ln_2 = register_module("post_ln_2", Norm(options.norm));
  }
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  if (options.sandwich_norm) {
    auto h = x + post_ln_1(attn(ln_1(x), ctx));
    return h + post_ln_2(mlp(ln_2(h)));
  }
  if (options.pre_norm) {
    auto h = x + attn(ln_1(x), ctx);
    return h + mlp(ln_2(h));
  }
  auto h = ln_1(x + attn(x, ctx));
  return ln_2(h + mlp(h));
}

int set_block_runner(torch::nn::Module& model, const std::shared_ptr<BlockRunner>& runner) {
  int found = 0;
  auto visit = [&](torch::nn::Module& m) {
    if (auto* stack = dynamic_cast<BlockStack*>(&m)) {
      stack->set_runner(runner);
      ++found;
    }
  };
  visit(model);
  for (const auto& m : model.modules(/*include_self=*/false)) visit(*m);
  return found;
}

}  // namespace lathe::nn
