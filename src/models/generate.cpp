// KV-cached decoding and sampling.

#include "lathe/models/generate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
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
  // A temperature below the smallest normal float is greedy: with denormals flushed (lathe's
  // default) it would divide as a zero.
  if (o.temperature < std::numeric_limits<float>::min()) return logits.argmax().item<int64_t>();
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

namespace {

void check_prompt(const Gpt& model, const std::vector<int64_t>& prompt) {
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
}

/// Records `next` for a row: whether the row goes on (the reason it ended otherwise).
bool accept(Generation& g, int64_t next, int64_t length, int64_t limit, const SamplingOptions& o,
            const std::function<bool(int64_t)>& on_token) {
  if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), next) != o.stop_tokens.end()) {
    g.finish_reason = "stop_token";
    return false;
  }
  g.tokens.push_back(next);
  if (on_token && !on_token(next)) {
    g.finish_reason = "callback";
    return false;
  }
  if (static_cast<int64_t>(g.tokens.size()) >= o.max_new_tokens) {
    g.finish_reason = "length";
    return false;
  }
  // The newest token would need position `limit` to be fed back: the context is full.
  if (length > limit) {
    g.finish_reason = "context";
    return false;
  }
  return true;
}

}  // namespace

Generation generate(Gpt& model, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                    const std::function<bool(int64_t)>& on_token) {
  o.validate();
  check_prompt(model, prompt);
  const int64_t limit = model->options.max_seq_len;

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
    all.push_back(next);
    if (!accept(out, next, static_cast<int64_t>(all.size()), limit, o, on_token)) break;
    input = at::full({1, 1}, next, at::TensorOptions(at::kLong).device(device));
  }
  model->train(was_training);
  return out;
}

std::vector<Generation> generate_batch(Gpt& model, const std::vector<std::vector<int64_t>>& prompts,
                                       const SamplingOptions& o,
                                       const std::function<bool(std::size_t, int64_t)>& on_token) {
  o.validate();
  if (prompts.empty()) return {};
  if (!o.use_cache) throw std::invalid_argument("generate_batch: needs the KV cache (use_cache)");
  std::size_t longest = 0;
  for (const auto& p : prompts) {
    check_prompt(model, p);
    longest = std::max(longest, p.size());
  }
  const int64_t B = static_cast<int64_t>(prompts.size()), P = static_cast<int64_t>(longest);
  const int64_t limit = model->options.max_seq_len;
  // The batch's columns may outnumber the context: each row meets the context by its own
  // length (accept), so a short row goes on after the longest one has ended. The last chosen
  // token is never fed back, hence one column less than P + max_new_tokens.
  const int64_t capacity = P + o.max_new_tokens - 1;

  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->wte->weight.device();
  // Left padding: row b's prompt ends at column P - 1; its padding is masked out of attention
  // and its positions count from its first real token, so each row computes what it would alone.
  auto ids = at::zeros({B, P}, at::kLong);
  auto mask = at::zeros({B, capacity}, at::kBool);
  mask.narrow(1, P, capacity - P).fill_(true);  // ends a row's columns once it finishes (below)
  std::vector<at::Generator> gens;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const int64_t pad = P - static_cast<int64_t>(p.size());
    ids[b].narrow(0, pad, static_cast<int64_t>(p.size())).copy_(at::tensor(p, at::kLong));
    mask[b].narrow(0, pad, static_cast<int64_t>(p.size())).fill_(true);
    gens.push_back(at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(b)));  // seed + row, as alone
  }
  mask = mask.to(device);
  auto input = ids.to(device);
  nn::KvCache cache = model->make_cache(B, capacity);
  std::vector<Generation> out(static_cast<std::size_t>(B));
  std::vector<bool> live(static_cast<std::size_t>(B), true);
  int64_t running = B;
  auto next_ids = at::zeros({B, 1}, at::kLong);
  while (running > 0) {
    const int64_t T = input.size(1);
    auto logits = model->forward(input, mask.narrow(1, 0, cache.length + T), &cache);
    auto last = logits.select(1, -1).to(at::kCPU, at::kFloat);  // (B, V)
    auto* next_ptr = next_ids.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const auto row = static_cast<std::size_t>(b);
      if (!live[row]) continue;
      const int64_t next = choose(last[b], o, gens[row]);
      next_ptr[b] = next;
      const int64_t length = static_cast<int64_t>(prompts[row].size() + out[row].tokens.size()) + 1;
      std::function<bool(int64_t)> row_callback;
      if (on_token) row_callback = [&](int64_t id) { return on_token(row, id); };
      if (!accept(out[row], next, length, limit, o, row_callback)) {
        live[row] = false;
        --running;
        // Its later columns are padding: a row that ended at the context would otherwise run
        // past the learned position table while the others go on.
        if (cache.length < capacity) mask[b].narrow(0, cache.length, capacity - cache.length).fill_(false);
      }
    }
    input = next_ids.to(device);  // a finished row feeds its last token on, masked; nothing reads it
  }
  model->train(was_training);
  return out;
}

}  // namespace lathe::models
