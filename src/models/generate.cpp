// KV-cached decoding and sampling.

#include "lathe/models/generate.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace lathe::models {

void SamplingOptions::validate() const {
  if (max_new_tokens < 1) throw std::invalid_argument("generate: max_new_tokens must be at least 1");
  if (temperature < 0) throw std::invalid_argument("generate: temperature must be >= 0 (0 is greedy)");
  if (top_k < 0) throw std::invalid_argument("generate: top_k must be >= 0 (0 disables it)");
  if (!(top_p > 0 && top_p <= 1)) throw std::invalid_argument("generate: top_p must be in (0, 1]");
  if (!std::isfinite(temperature)) throw std::invalid_argument("generate: temperature must be finite");
  if (vocab_limit < 0) throw std::invalid_argument("generate: vocab_limit must be >= 0");
}

namespace {

/// One token from the last position's logits (V,), float32 on the CPU.
int64_t choose(at::Tensor logits, const SamplingOptions& o, at::Generator& gen) {
  if (o.vocab_limit > 0 && o.vocab_limit < logits.size(0)) logits = logits.narrow(0, 0, o.vocab_limit);
  if (o.temperature == 0) return logits.argmax().item<int64_t>();
  // Shifted by the maximum first: a tiny temperature sends the others to -inf, never to NaN.
  logits = (logits - logits.max()) / o.temperature;
  const auto neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(o.top_k)).select(0, o.top_k - 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
    auto probs = sorted.softmax(0);
    // Drop a token when the tokens before it already reach top_p (the first one always stays).
    auto drop = (probs.cumsum(0) - probs) >= o.top_p;
    logits = logits.index_put({order.masked_select(drop)}, at::scalar_tensor(neg_inf));
  }
  return at::multinomial(logits.softmax(0), 1, /*replacement=*/false, gen).item<int64_t>();
}

}  // namespace

Generation generate(Gpt& model, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                    const std::function<bool(int64_t)>& on_token) {
  o.validate();
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt needs at least one token");
  const int64_t limit = model->options.max_seq_len;
  if (static_cast<int64_t>(prompt.size()) > limit)
    throw std::invalid_argument("generate: the prompt has " + std::to_string(prompt.size()) +
                                " tokens, more than the model's context of " + std::to_string(limit) +
                                " positions (max_seq_len); shorten the prompt");
  for (auto id : prompt)
    if (id < 0 || id >= model->options.vocab_size)
      throw std::invalid_argument("generate: token id " + std::to_string(id) + " is outside the vocabulary (" +
                                  std::to_string(model->options.vocab_size) + ")");

  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->wte->weight.device();
  at::Generator gen = at::detail::createCPUGenerator(o.seed);

  std::vector<int64_t> all = prompt;
  const int64_t capacity = std::min<int64_t>(limit, static_cast<int64_t>(prompt.size()) + o.max_new_tokens);
  nn::KvCache cache;
  if (o.use_cache) cache = model->make_cache(/*batch=*/1, capacity);
  auto input = at::tensor(prompt, at::kLong).to(device).unsqueeze(0);

  Generation out;
  while (true) {
    auto logits = o.use_cache ? model->forward(input, {}, &cache)
                              : model->forward(at::tensor(all, at::kLong).to(device).unsqueeze(0));
    const int64_t next = choose(logits.select(1, -1).squeeze(0).to(at::kCPU, at::kFloat), o, gen);
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), next) != o.stop_tokens.end()) {
      out.finish_reason = "stop_token";
      break;
    }
    out.tokens.push_back(next);
    all.push_back(next);
    if (on_token && !on_token(next)) {
      out.finish_reason = "callback";
      break;
    }
    if (static_cast<int64_t>(out.tokens.size()) >= o.max_new_tokens) {
      out.finish_reason = "length";
      break;
    }
    // The newest token would need position `limit` to be fed back: the context is full.
    if (static_cast<int64_t>(all.size()) > limit) {
      out.finish_reason = "context";
      break;
    }
    input = at::full({1, 1}, next, at::TensorOptions(at::kLong).device(device));
  }
  model->train(was_training);
  return out;
}

}  // namespace lathe::models
