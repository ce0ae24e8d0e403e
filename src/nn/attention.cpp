// Self-attention on at::scaled_dot_product_attention.

#include "lathe/nn/attention.hpp"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

namespace lathe::nn {
namespace {

double lowest_value(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kDouble: return std::numeric_limits<double>::lowest();
    default: return std::numeric_limits<float>::lowest();
  }
}

/// Attention with soft-capped scores, as transformers' eager attention computes it: the scores
/// in the inputs' dtype, capped, masked with the dtype's lowest value, softmax in float32.
/// `mask` (bool, broadcast to (B, H, T, Tk)) or `causal` from position 0.
at::Tensor softcapped_attention(const at::Tensor& q, at::Tensor k, at::Tensor v, const std::optional<at::Tensor>& mask,
                                bool causal, double dropout, double scale, double cap) {
  const int64_t groups = q.size(1) / k.size(1);
  if (groups > 1) {
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  auto scores = at::matmul(q, k.transpose(2, 3)) * scale;
  scores = at::tanh(scores / cap) * cap;
  const double lowest = lowest_value(q.scalar_type());
  if (mask) scores = scores.masked_fill(mask->logical_not(), lowest);
  else if (causal)
    scores = scores.masked_fill(at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).tril().logical_not(),
                                lowest);
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  if (dropout > 0) probs = at::dropout(probs, dropout, /*train=*/true);
  return at::matmul(probs, v);
}

}  // namespace

AttentionImpl::AttentionImpl(const AttentionOptions& o) : options(o) {
  const int64_t out = (o.n_head + 2 * o.kv_heads()) * o.head_dim();
  qkv = register_module("qkv", Linear(LinearOptions{o.d_model, out, o.bias || o.qkv_bias, o.device, Role::HeadBlock}));
  proj = register_module("proj", Linear(LinearOptions{o.n_head * o.head_dim(), o.d_model, o.bias, o.device, Role::ResidualProjection}));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = options.n_head, Hkv = options.kv_heads(), D = options.head_dim();
  auto parts = qkv(x).split_with_sizes({H * D, Hkv * D, Hkv * D}, -1);
  auto q = parts[0].view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  auto k = parts[1].view({B, T, Hkv, D}).transpose(1, 2);
  auto v = parts[2].view({B, T, Hkv, D}).transpose(1, 2);
  if (ctx.rotary) {
    q = apply_rotary(q, *ctx.rotary);
    k = apply_rotary(k, *ctx.rotary);
  }
  int64_t past = 0;
  if (ctx.cache) {
    past = ctx.cache_pos;
    ctx.cache->k.narrow(2, past, T).copy_(k);
    ctx.cache->v.narrow(2, past, T).copy_(v);
    k = ctx.cache->k.narrow(2, 0, past + T);
    v = ctx.cache->v.narrow(2, 0, past + T);
  }
  const int64_t Tk = past + T;

  // Query i (absolute position past + i) may see key j when j <= past + i (causal), when
  // j > past + i - sliding_window (a windowed model), and when key j is real. A query always
  // sees itself, so a padded query never has an empty row (which would give NaN); its output is
  // meaningless and ignored by the losses.
  const int64_t W = options.sliding_window;
  const bool windowed = options.causal && W > 0 && Tk > W;
  auto seen = [&] {
    auto m = at::ones({T, Tk}, x.options().dtype(at::kBool)).tril(/*diagonal=*/past);
    return windowed ? m.triu(/*diagonal=*/past - W + 1) : m;
  };
  std::optional<at::Tensor> mask;
  bool is_causal = false;
  if (ctx.segments.defined()) {
    if (ctx.cache) throw std::invalid_argument("attention: packed rows (segments) with a KV cache");
    auto m = (ctx.segments.unsqueeze(2) == ctx.segments.unsqueeze(1)).unsqueeze(1);  // (B, 1, T, T)
    if (options.causal) m = m & seen();
    if (ctx.key_mask.defined()) m = m & ctx.key_mask.to(at::kBool).view({B, 1, 1, Tk});
    mask = m | at::eye(T, x.options().dtype(at::kBool));  // a query always sees itself
  } else if (!ctx.key_mask.defined()) {
    if (options.causal && past == 0 && !windowed) is_causal = true;
    else if (options.causal && (T > 1 || windowed)) mask = seen();
  } else {
    auto m = ctx.key_mask.to(at::kBool).view({B, 1, 1, Tk});
    if (options.causal) {
      auto causal = seen();
      auto self = at::ones({T, Tk}, x.options().dtype(at::kBool)).tril(past).triu(past);
      m = (m & causal) | self;
    }
    mask = m;
  }
  const double p = is_training() ? options.attn_dropout : 0.0;
  if (T == 1 && Hkv != H && !mask && !is_causal && options.softcap <= 0) {
    // One new token without a mask (decoding): the queries of each key/value head's group are
    // rows of one attention over that head, which needs no copy of the keys and values per query
    // head (ATen's GQA path repeats them for every token).
    const auto qg = q.reshape({B, Hkv, H / Hkv, D});
    auto yg = at::scaled_dot_product_attention(qg, k, v, std::nullopt, p, false,
                                               options.scale > 0 ? std::optional(options.scale) : std::nullopt);
    return finish_attention(yg.reshape({B, H, 1, D}), B, T, H * D);
  }
  auto y = options.softcap > 0
               ? softcapped_attention(q, k, v, mask, is_causal, p,
                                      options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(D)),
                                      options.softcap)
               : at::scaled_dot_product_attention(q, k, v, mask, p, is_causal,
                                                  options.scale > 0 ? std::optional(options.scale) : std::nullopt,
                                                  /*enable_gqa=*/Hkv != H);
  return finish_attention(y, B, T, H * D);
}

torch::Tensor AttentionImpl::finish_attention(const torch::Tensor& heads, int64_t B, int64_t T, int64_t width) {
  auto y = proj(heads.transpose(1, 2).reshape({B, T, width}));
  if (options.dropout > 0 && is_training()) y = at::dropout(y, options.dropout, /*train=*/true);
  return y;
}

}  // namespace lathe::nn
