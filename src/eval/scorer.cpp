#include "lathe/eval/scorer.hpp"

#include <algorithm>
#include <numeric>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "lathe/core/error.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/models/generate.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "py_text.hpp"

namespace lathe::eval {

namespace {

/// Eval mode without gradients for a scope; the training flag is restored after.
class EvalScope {
 public:
  explicit EvalScope(torch::nn::Module& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~EvalScope() { m_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  torch::nn::Module& m_;
  bool was_training_;
  torch::NoGradGuard no_grad_;
};

std::vector<int64_t> widen(const std::vector<int32_t>& ids) { return {ids.begin(), ids.end()}; }

/// Bytes as text the way Rust's String::from_utf8_lossy (and so a Hugging Face tokenizer's
/// decode) reads them: each maximal ill-formed subsequence becomes one U+FFFD.
std::string utf8_lossy(const std::string& in) {
  std::string out;
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t n = in.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    std::size_t k = 1;
    bool ok = need > 0;
    for (; ok && k <= need; ++k) {
      if (i + k >= n) { ok = false; break; }
      const unsigned char b = s[i + k];
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (b < l || b > h) { ok = false; break; }
    }
    if (ok) {
      out.append(in, i, need + 1);
      i += need + 1;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<std::size_t>(k, 1);
    }
  }
  return out;
}

/// The harness's get_rolling_token_windows(tokens, prefix, max_len, context_len=1) followed by
/// make_disjoint_window: (context, prediction) pairs covering every token once.
std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> rolling_windows(const std::vector<int64_t>& tokens,
                                                                                   int64_t prefix, int64_t max_len) {
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> out;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return out;
  auto slice = [&](int64_t b, int64_t e) {
    b = std::max<int64_t>(b, 0);
    return std::vector<int64_t>(tokens.begin() + b, tokens.begin() + std::max(b, e));
  };
  auto disjoint = [](std::vector<int64_t> a, std::vector<int64_t> b) {
    a.resize(a.size() - (b.size() - 1));
    return std::make_pair(std::move(a), std::move(b));
  };
  const int64_t pred_len = max_len;  // max_seq_len - context_len + 1
  const int64_t first = std::min(max_len, n);
  std::vector<int64_t> ctx{prefix};
  const auto head = slice(0, first - 1);
  ctx.insert(ctx.end(), head.begin(), head.end());
  out.push_back(disjoint(std::move(ctx), slice(0, first)));
  for (int64_t predicted = first; predicted < n;) {
    const int64_t len = std::min(n - predicted, pred_len);
    const int64_t end = predicted + len;
    // token_list[end - max_len - 1 : end - 1]: Python's slice clamps a negative start at 0 only
    // when it is below -len; here the start is never negative past the first window.
    out.push_back(disjoint(slice(end - max_len - 1, end - 1), slice(end - len, end)));
    predicted += len;
  }
  return out;
}

}  // namespace

std::optional<std::string> configured_bos_token(const std::filesystem::path& tokenizer_file) {
  const auto config = tokenizer_file.parent_path() / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(config)) return std::nullopt;
  const auto j = io::read_json(config);
  if (!j.is_object() || !j.contains("bos_token") || j["bos_token"].is_null()) return std::string();
  const auto& b = j["bos_token"];
  if (b.is_string()) return b.get<std::string>();
  if (b.is_object() && b.contains("content") && b["content"].is_string()) return b["content"].get<std::string>();
  return std::string();
}

GptScorer::GptScorer(models::Gpt model, const tokenizer::Tokenizer& tok, ScorerOptions options)
    : model_(std::move(model)), tok_(tok), options_(options) {
  max_length_ = options_.max_length > 0 ? options_.max_length : model_->options.max_seq_len;
  // The prefix token: transformers' bos_token_id (the configured BOS), else end-of-text; without
  // a tokenizer_config.json, the BOS the post-processor puts first.
  if (options_.bos_token) {
    prefix_token_ = options_.bos_token->empty() ? -1 : tok_.token_to_id(*options_.bos_token);
  } else {
    const auto empty = tok_.encode_with_specials("").ids;
    if (!empty.empty()) prefix_token_ = empty.front();
  }
  if (prefix_token_ < 0) prefix_token_ = tok_.eos_id();
  if (prefix_token_ < 0)
    throw Error("evaluation needs a BOS or end-of-text token in the tokenizer (the harness's prefix token)");
  const int32_t p = static_cast<int32_t>(prefix_token_);
  prefix_text_ = tok_.decode(std::span<const int32_t>(&p, 1));
  if (const auto* bpe = dynamic_cast<const tokenizer::Bpe*>(&tok_)) special_ids_ = bpe->special_ids();
  std::sort(special_ids_.begin(), special_ids_.end());
}

std::vector<int64_t> GptScorer::encode(const std::string& text, bool add_special_tokens) const {
  if (!add_special_tokens || (!prefix_text_.empty() && text.rfind(prefix_text_, 0) == 0))
    return widen(tok_.encode(text));
  return widen(tok_.encode_with_specials(text).ids);
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> GptScorer::encode_pair(const std::string& context,
                                                                             const std::string& continuation) const {
  if (context.empty()) {
    auto cont = encode(continuation, false);
    if (!cont.empty() && cont.front() == prefix_token_)
      return {std::vector<int64_t>(cont.begin(), cont.begin() + 1), std::vector<int64_t>(cont.begin() + 1, cont.end())};
    return {{prefix_token_}, cont};
  }
  const std::string ctx = detail::py_strip(context, /*left=*/false);  // Python's rstrip()
  const std::string cont = context.substr(ctx.size()) + continuation;
  auto whole = encode(ctx + cont);
  auto ctx_enc = encode(ctx);
  const std::size_t n = std::min(ctx_enc.size(), whole.size());
  return {ctx_enc, std::vector<int64_t>(whole.begin() + static_cast<std::ptrdiff_t>(n), whole.end())};
}

GptScorer::TokenRequest GptScorer::tokens_of(const LoglikelihoodRequest& r) const {
  auto [ctx, cont] = encode_pair(r.context, r.continuation);
  if (cont.empty())
    throw Error("a continuation with no tokens cannot be scored (context '" + r.context.substr(0, 60) + "')");
  if (static_cast<int64_t>(cont.size()) > max_length_)
    throw Error("a continuation of " + std::to_string(cont.size()) + " tokens is longer than the context length " +
                std::to_string(max_length_));
  return {std::move(ctx), std::move(cont)};
}

namespace {

/// The model's input for a request: (context + continuation)[-(max_len + 1):][:-1], and the
/// index in it of the first position whose logits predict the continuation.
std::pair<std::vector<int64_t>, int64_t> input_of(const std::vector<int64_t>& ctx, const std::vector<int64_t>& cont,
                                                  int64_t max_len) {
  std::vector<int64_t> all(ctx);
  all.insert(all.end(), cont.begin(), cont.end());
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(all.size()), max_len + 1);
  std::vector<int64_t> inp(all.end() - keep, all.end() - 1);
  return {inp, static_cast<int64_t>(inp.size()) - static_cast<int64_t>(cont.size())};
}

/// Sums the log-probabilities of `targets` under `hidden` rows (N, C) through the model's head,
/// and whether each is the argmax.
Loglikelihood score_positions(models::Gpt& model, const at::Tensor& hidden, const std::vector<int64_t>& targets) {
  const auto logp = at::log_softmax(model->logits(hidden).to(at::kFloat), -1);  // (N, V)
  const auto t = at::tensor(targets, at::kLong).to(logp.device());
  const auto picked = logp.gather(1, t.unsqueeze(1)).squeeze(1).to(at::kDouble);
  const bool greedy = logp.argmax(-1).eq(t).all().item<bool>();
  return {picked.sum().item<double>(), greedy};
}

}  // namespace

std::vector<Loglikelihood> GptScorer::score_rows(const std::vector<TokenRequest>& rows) {
  std::vector<Loglikelihood> out(rows.size());
  std::vector<std::size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::vector<std::pair<std::vector<int64_t>, int64_t>> inputs;
  for (const auto& r : rows) inputs.push_back(input_of(r.context, r.continuation, max_length_));
  // Longest first, as the harness orders them, so a batch pads little.
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return inputs[a].first.size() > inputs[b].first.size(); });
  const auto device = model_->wte->weight.device();
  for (std::size_t b = 0; b < order.size(); b += static_cast<std::size_t>(options_.batch_size)) {
    const std::size_t e = std::min(order.size(), b + static_cast<std::size_t>(options_.batch_size));
    const int64_t width = static_cast<int64_t>(inputs[order[b]].first.size());
    auto ids = at::zeros({static_cast<int64_t>(e - b), width}, at::kLong);
    for (std::size_t k = b; k < e; ++k) {
      const auto& inp = inputs[order[k]].first;
      ids[static_cast<int64_t>(k - b)].narrow(0, 0, static_cast<int64_t>(inp.size())).copy_(at::tensor(inp, at::kLong));
    }
    const auto hidden = model_->hidden(ids.to(device));  // (n, width, C)
    ++forwards_;
    positions_ += ids.numel();
    for (std::size_t k = b; k < e; ++k) {
      const auto& r = rows[order[k]];
      const int64_t first = inputs[order[k]].second;
      const auto h = hidden[static_cast<int64_t>(k - b)].narrow(0, first, static_cast<int64_t>(r.continuation.size()));
      out[order[k]] = score_positions(model_, h, r.continuation);
    }
  }
  return out;
}

std::vector<Loglikelihood> GptScorer::score_group(const std::vector<TokenRequest>& group) {
  if (group.size() < 2) return score_rows(group);
  std::vector<std::pair<std::vector<int64_t>, int64_t>> inputs;
  for (const auto& r : group) inputs.push_back(input_of(r.context, r.continuation, max_length_));
  // The tokens every input starts with, leaving each at least one of its own.
  std::size_t shared = inputs[0].first.size();
  for (const auto& [inp, first] : inputs) {
    std::size_t k = 0;
    while (k < shared && k < inp.size() && inp[k] == inputs[0].first[k]) ++k;
    shared = std::min(k, inp.size() - 1);
  }
  if (shared < 2) return score_rows(group);
  const int64_t P = static_cast<int64_t>(shared), n = static_cast<int64_t>(group.size());
  int64_t suffix = 0;
  for (const auto& [inp, first] : inputs) suffix = std::max<int64_t>(suffix, static_cast<int64_t>(inp.size()) - P);
  const auto device = model_->wte->weight.device();
  // The shared prefix once, into a cache.
  auto cache = model_->make_cache(1, P + suffix);
  auto prefix_ids = at::tensor(std::vector<int64_t>(inputs[0].first.begin(), inputs[0].first.begin() + P), at::kLong);
  const auto prefix_hidden = model_->hidden(prefix_ids.unsqueeze(0).to(device), {}, &cache).squeeze(0);  // (P, C)
  ++forwards_;
  positions_ += P;
  // Every input's own tokens, in one batch over copies of that cache.
  nn::KvCache rows;
  rows.length = cache.length;
  rows.capacity = cache.capacity;
  for (const auto& layer : cache.layers) rows.layers.push_back({layer.k.repeat({n, 1, 1, 1}), layer.v.repeat({n, 1, 1, 1})});
  auto ids = at::zeros({n, suffix}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const auto& inp = inputs[static_cast<std::size_t>(i)].first;
    std::vector<int64_t> own(inp.begin() + P, inp.end());
    ids[i].narrow(0, 0, static_cast<int64_t>(own.size())).copy_(at::tensor(own, at::kLong));
  }
  const auto suffix_hidden = model_->hidden(ids.to(device), {}, &rows);  // (n, suffix, C)
  ++forwards_;
  positions_ += n * suffix;
  std::vector<Loglikelihood> out;
  for (int64_t i = 0; i < n; ++i) {
    const auto& [inp, first] = inputs[static_cast<std::size_t>(i)];
    const int64_t len = static_cast<int64_t>(inp.size());
    // Positions [first, len) of this input: those below P come from the prefix.
    std::vector<at::Tensor> parts;
    if (first < P) parts.push_back(prefix_hidden.narrow(0, first, P - first));
    const int64_t from = std::max(first, P);
    parts.push_back(suffix_hidden[i].narrow(0, from - P, len - from));
    out.push_back(score_positions(model_, at::cat(parts, 0), group[static_cast<std::size_t>(i)].continuation));
  }
  return out;
}

std::vector<std::vector<Loglikelihood>> GptScorer::loglikelihood(
    const std::vector<std::vector<LoglikelihoodRequest>>& groups) {
  EvalScope scope(*model_);
  std::vector<std::vector<Loglikelihood>> out;
  out.reserve(groups.size());
  for (const auto& g : groups) {
    std::vector<TokenRequest> tokens;
    for (const auto& r : g) tokens.push_back(tokens_of(r));
    out.push_back(score_group(tokens));
  }
  return out;
}

std::vector<double> GptScorer::loglikelihood_rolling(const std::vector<std::string>& texts) {
  EvalScope scope(*model_);
  std::vector<TokenRequest> windows;
  std::vector<std::size_t> owner;
  for (std::size_t i = 0; i < texts.size(); ++i)
    for (auto& [ctx, pred] : rolling_windows(encode(texts[i]), prefix_token_, max_length_)) {
      windows.push_back({std::move(ctx), std::move(pred)});
      owner.push_back(i);
    }
  const auto scored = score_rows(windows);
  std::vector<double> out(texts.size(), 0.0);
  for (std::size_t w = 0; w < windows.size(); ++w) out[owner[w]] += scored[w].logprob;
  return out;
}

std::string GptScorer::decode_generated(const std::vector<int64_t>& ids) const {
  std::vector<int32_t> kept;
  for (int64_t id : ids)
    if (!std::binary_search(special_ids_.begin(), special_ids_.end(), static_cast<int32_t>(id)))
      kept.push_back(static_cast<int32_t>(id));
  return utf8_lossy(tok_.decode(kept));
}

std::vector<std::string> GptScorer::generate_until(const std::vector<GenerationRequest>& requests) {
  EvalScope scope(*model_);
  std::vector<std::string> out;
  for (const auto& r : requests) {
    if (r.max_gen_toks >= max_length_)
      throw Error("max_gen_toks " + std::to_string(r.max_gen_toks) + " must be below the context length " +
                  std::to_string(max_length_));
    auto prompt = encode(r.context);
    const auto keep = static_cast<std::size_t>(max_length_ - r.max_gen_toks);
    if (prompt.size() > keep) prompt.erase(prompt.begin(), prompt.end() - static_cast<std::ptrdiff_t>(keep));
    models::SamplingOptions o;
    // An empty stop string is in every text: the harness stops after the first token.
    const bool empty_stop = std::any_of(r.until.begin(), r.until.end(), [](const auto& u) { return u.empty(); });
    o.max_new_tokens = empty_stop ? 1 : r.max_gen_toks;
    o.temperature = 0;
    o.top_k = 0;
    if (tok_.eos_id() >= 0) o.stop_tokens = {tok_.eos_id()};
    std::vector<int64_t> produced;
    auto stop_seen = [&](int64_t token) {
      produced.push_back(token);
      const auto text = decode_generated(produced);
      for (const auto& u : r.until)
        if (!u.empty() && text.find(u) != std::string::npos) return false;
      return true;
    };
    const auto g = models::generate(model_, prompt, o, stop_seen);
    std::string text = decode_generated(g.tokens);
    for (const auto& u : r.until)
      if (!u.empty()) text = text.substr(0, text.find(u));
    out.push_back(std::move(text));
  }
  return out;
}

}  // namespace lathe::eval
