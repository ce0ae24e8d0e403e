// GPT decoder.

#include "lathe/models/gpt.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

#include "lathe/nn/gemv.hpp"
#include "lathe/nn/init.hpp"

namespace lathe::models {
namespace {

std::string s(int64_t v) { return std::to_string(v); }

nn::BlockOptions block_options(const ModelOptions& o, int64_t layer = 0) {
  nn::BlockOptions b;
  b.attention = {.d_model = o.d_model,
                 .n_head = o.n_head,
                 .n_kv_head = o.n_kv_head,
                 .d_head = o.d_head,
                 .causal = true,
                 .bias = o.bias,
                 .qkv_bias = o.qkv_bias,
                 .sliding_window = o.layer_window(layer),
                 // Only a scale other than the head width's: canonical options (which spell it out)
                 // build the model the defaults build, on the same kernel path.
                 .scale = o.attn_scale_dim > 0 && o.attn_scale_dim != o.head_dim()
                              ? 1.0 / std::sqrt(static_cast<double>(o.attn_scale_dim))
                              : 0.0,
                 .softcap = o.attn_softcap,
                 .attn_dropout = o.attn_dropout,
                 .dropout = o.dropout,
                 .device = o.device};
  b.mlp = {.d_model = o.d_model, .d_ff = o.ff_width(), .activation = o.activation, .bias = o.bias, .dropout = o.dropout,
           .device = o.device};
  b.norm = {.dim = o.d_model, .kind = o.norm, .eps = o.norm_eps, .bias = o.bias, .device = o.device};
  b.pre_norm = true;
  b.sandwich_norm = o.sandwich_norm;
  return b;
}

}  // namespace

GptImpl::GptImpl(ModelOptions o) : options(std::move(o)) {
  options.validate(Arch::Gpt);
  const auto& op = options;
  {
    nn::SkipInitGuard layers_draw_nothing;  // reset_parameters() below draws every parameter once
    wte = register_module("wte", nn::Embedding(nn::EmbeddingOptions{op.vocab_size, op.d_model, -1, op.device}));
    if (op.position == nn::Position::Learned)
      wpe = register_module("wpe", nn::Embedding(nn::EmbeddingOptions{op.max_seq_len, op.d_model, -1, op.device}));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < op.n_layer; ++i) blocks->push_back(nn::Block(block_options(op, i)));
    ln_f = register_module("ln_f", nn::Norm(block_options(op).norm));
    if (!op.tie_embeddings)
      lm_head = register_module("lm_head", nn::Linear(nn::LinearOptions{op.d_model, op.vocab_size, false, op.device, nn::Role::OutputHead}));
  }
  reset_parameters();
}

void GptImpl::reset_parameters(const nn::ValueSink& sink) {
  const double std = options.init_std;
  const double proj_std = std / std::sqrt(2.0 * static_cast<double>(options.n_layer));
  nn::initialise(
      *this,
      [&](const nn::RoledParameter& p, at::Tensor& t) {
        switch (p.role) {
          case nn::Role::Bias: t.zero_(); break;
          case nn::Role::Norm: t.fill_(nn::NormImpl::initial_weight(options.norm)); break;
          case nn::Role::ResidualProjection: t.normal_(0.0, proj_std); break;
          default: t.normal_(0.0, std);
        }
      },
      sink);
}

namespace {

/// Each position's index within its segment (B, T): packed examples start again at 0.
at::Tensor segment_positions(const at::Tensor& segments) {
  const int64_t T = segments.size(1);
  auto index = at::arange(T, segments.options().dtype(at::kLong)).expand_as(segments);
  auto starts = at::ones_like(segments, at::kBool);
  if (T > 1) starts.narrow(1, 1, T - 1).copy_(segments.narrow(1, 1, T - 1) != segments.narrow(1, 0, T - 1));
  return index - std::get<0>(at::cummax(index * starts, 1));
}

}  // namespace

torch::Tensor GptImpl::hidden(const torch::Tensor& ids, const torch::Tensor& key_mask, nn::KvCache* cache,
                              const torch::Tensor& segments) {
  const int64_t T = ids.size(1);
  const int64_t start = cache ? cache->length : 0;
  if (start + T > options.max_seq_len && options.position == nn::Position::Learned) {
    // With left padding a row's positions count its real tokens only, so the columns may
    // outnumber the table while every row stays inside it.
    const int64_t last = key_mask.defined() ? key_mask.to(at::kLong).sum(-1).max().item<int64_t>() : start + T;
    if (last > options.max_seq_len)
      throw std::invalid_argument("gpt: sequence of " + s(last) + " positions exceeds max_seq_len (" +
                                  s(options.max_seq_len) + ")");
  }
  if (cache && start + T > cache->capacity)
    throw std::invalid_argument("gpt: the KV cache holds " + s(cache->capacity) + " positions, " + s(start + T) +
                                " needed");
  auto positions = at::arange(start, start + T, ids.options().dtype(at::kLong));
  auto x = wte(ids);
  // Gemma: sqrt(d_model) rounded to the table's dtype, as transformers multiplies it.
  if (options.scale_embeddings)
    x = x * at::scalar_tensor(std::sqrt(static_cast<double>(options.d_model)), x.options());
  nn::RotaryTables rotary;
  if (segments.defined()) {
    if (cache) throw std::invalid_argument("gpt: packed rows (segments) with a KV cache");
    const auto per_row = segment_positions(segments);
    if (wpe) x = x + wpe(per_row);
    else rotary = nn::rotary_tables(per_row, options.head_dim(), options.rotary());
  } else if (wpe && key_mask.defined()) {
    // Left padding: a row's first real token is position 0 (transformers' position_ids for
    // GPT-2: cumsum of the mask - 1, padding at 1), so a padded row equals the unpadded one.
    auto mask = key_mask.to(at::kLong);
    auto per_row = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1).narrow(1, start, T);  // (B, T)
    x = x + wpe(per_row);
  } else if (wpe) {
    x = x + wpe(positions);
  } else {
    // Rotary attention depends on relative positions only: a row's padding offset leaves it exact.
    rotary = nn::rotary_tables(positions, options.head_dim(), options.rotary());
  }
  if (options.dropout > 0 && is_training()) x = at::dropout(x, options.dropout, /*train=*/true);

  nn::AttentionContext ctx;
  if (!wpe) ctx.rotary = &rotary;
  ctx.key_mask = key_mask;
  ctx.segments = segments;
  ctx.cache_pos = start;
  for (std::size_t i = 0; i < blocks->size(); ++i) {
    ctx.cache = cache ? &cache->layers[i] : nullptr;
    x = run_block(static_cast<int64_t>(i), *blocks[i]->as<nn::Block>(), x, ctx);
  }
  if (cache) cache->length += T;
  return ln_f(x);
}

void GptImpl::separate_head() {
  if (lm_head) return;
  torch::NoGradGuard no_grad;
  lm_head = register_module("lm_head", nn::Linear(nn::LinearOptions{options.d_model, options.vocab_size, false,
                                                                   wte->weight.device(), nn::Role::OutputHead}));
  lm_head->weight.copy_(wte->weight);
}

torch::Tensor GptImpl::logits(const torch::Tensor& h) {
  auto z = lm_head ? lm_head(h) : nn::linear(h, wte->weight);
  if (options.logit_softcap > 0) z = at::tanh(z / options.logit_softcap) * options.logit_softcap;  // Gemma 2
  return z;
}

torch::Tensor GptImpl::forward(const torch::Tensor& ids, const torch::Tensor& key_mask, nn::KvCache* cache,
                               const torch::Tensor& segments) {
  return logits(hidden(ids, key_mask, cache, segments));
}

nn::KvCache GptImpl::make_cache(int64_t batch, int64_t capacity) const {
  if (capacity <= 0) capacity = options.max_seq_len;
  nn::KvCache cache;
  cache.capacity = capacity;
  auto opts = wte->weight.options().requires_grad(false);
  const std::vector<int64_t> shape{batch, options.kv_heads(), capacity, options.head_dim()};
  for (int64_t i = 0; i < options.n_layer; ++i) cache.layers.push_back({at::zeros(shape, opts), at::zeros(shape, opts)});
  return cache;
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace lathe::models
