// Pruning masks, structured removal of heads and neurons, and the gradual schedule.

#include "lathe/compress/prune.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/container/any.h>
#include <torch/utils.h>

#include "lathe/core/error.hpp"
#include "lathe/nn/attention.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/mlp.hpp"

namespace lathe::compress {
namespace {

int64_t rounded(double share, int64_t count) { return static_cast<int64_t>(std::llround(share * static_cast<double>(count))); }

/// Every lathe Linear of the model by the name of its weight.
std::map<std::string, nn::LinearImpl*> linears(const models::AnyModel& model) {
  std::map<std::string, nn::LinearImpl*> out;
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) out[path + ".weight"] = lin;
  return out;
}

/// A mask of `scores`' shape with the `k` lowest entries of each row of `rows` false.
at::Tensor drop_lowest(const at::Tensor& rows, int64_t k) {
  auto mask = at::ones_like(rows, rows.options().dtype(at::kBool));
  if (k <= 0) return mask;
  auto order = std::get<1>(rows.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  mask.scatter_(1, order.narrow(1, 0, k), false);
  return mask;
}

struct AttentionSite {
  std::string prefix;  // e.g. "blocks.0.attn"
  nn::AttentionImpl* module;
};
struct MlpSite {
  std::string prefix;
  nn::MlpImpl* module;
};

void find_sites(const models::AnyModel& model, std::vector<AttentionSite>& attn, std::vector<MlpSite>& mlp) {
  for (const auto& item : model.module()->named_modules("", false)) {
    if (auto* a = dynamic_cast<nn::AttentionImpl*>(item.value().get())) attn.push_back({item.key(), a});
    if (auto* m = dynamic_cast<nn::MlpImpl*>(item.value().get())) mlp.push_back({item.key(), m});
  }
}

/// The rows of qkv and the columns of proj that hold query heads `q` and key/value heads `kv`.
at::Tensor qkv_rows(const nn::AttentionOptions& o, const std::vector<int64_t>& q, const std::vector<int64_t>& kv) {
  const int64_t H = o.n_head, Hkv = o.kv_heads(), D = o.head_dim();
  std::vector<int64_t> rows;
  for (auto h : q)
    for (int64_t d = 0; d < D; ++d) rows.push_back(h * D + d);
  for (int64_t part = 0; part < 2; ++part)
    for (auto h : kv)
      for (int64_t d = 0; d < D; ++d) rows.push_back(H * D + part * Hkv * D + h * D + d);
  return at::tensor(rows, at::kLong);
}
at::Tensor head_columns(const nn::AttentionOptions& o, const std::vector<int64_t>& q) {
  const int64_t D = o.head_dim();
  std::vector<int64_t> cols;
  for (auto h : q)
    for (int64_t d = 0; d < D; ++d) cols.push_back(h * D + d);
  return at::tensor(cols, at::kLong);
}
at::Tensor neuron_rows(const nn::MlpOptions& o, const std::vector<int64_t>& kept) {
  std::vector<int64_t> rows(kept);
  if (nn::gated(o.activation))
    for (auto j : kept) rows.push_back(o.d_ff + j);  // the up row of each kept gate row
  return at::tensor(rows, at::kLong);
}

/// Query heads of key/value group g (all heads of a group share its key and value head).
std::vector<int64_t> group_heads(const nn::AttentionOptions& o, int64_t g) {
  const int64_t G = o.n_head / o.kv_heads();
  std::vector<int64_t> out;
  for (int64_t h = g * G; h < (g + 1) * G; ++h) out.push_back(h);
  return out;
}

/// A tensor's values as doubles, on the host.
std::vector<double> host_values(const at::Tensor& t) {
  const auto c = t.to(at::kCPU, at::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

/// Keeps the `keep` best-scored of `scores`, ascending.
std::vector<int64_t> best(const std::vector<double>& scores, int64_t keep) {
  std::vector<int64_t> idx(scores.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  idx.resize(keep);
  std::sort(idx.begin(), idx.end());
  return idx;
}

/// Units removed in every layer for a share of `count`; refuses a share that removes none or all.
int64_t removed_units(double share, int64_t count, const char* key, const char* what) {
  if (share <= 0) return 0;
  const int64_t r = rounded(share, count);
  if (r == 0 || r >= count)
    throw Error(fmt::format("prune.{}: {} of {} {} per layer removes {}; choose a share that removes at least one and "
                            "keeps at least one",
                            key, share, count, what, r == 0 ? "none" : "all"));
  return r;
}

}  // namespace

PruneScore PruneOptions::resolved_score() const {
  if (score != PruneScore::Auto) return score;
  switch (method) {
    case PruneMethod::Wanda: return PruneScore::Wanda;
    case PruneMethod::Structured: return PruneScore::L2;
    default: return PruneScore::Magnitude;
  }
}

PruneScope PruneOptions::resolved_scope() const {
  if (scope != PruneScope::Auto) return scope;
  return method == PruneMethod::Wanda ? PruneScope::Row : PruneScope::Layer;
}

bool PruneOptions::needs_calibration() const {
  const auto s = resolved_score();
  return s == PruneScore::Wanda || s == PruneScore::Taylor;
}

std::vector<models::OptionProblem> PruneOptions::problems() const {
  std::vector<models::OptionProblem> out;
  auto name = [](auto e) { return std::string(enum_name(e)); };
  const bool unstructured = method == PruneMethod::Magnitude || method == PruneMethod::Wanda;
  if (method == PruneMethod::NM && n >= m)
    out.push_back({{"n", "m"}, fmt::format("n ({}) must be smaller than m ({})", n, m)});
  if (unstructured && score != PruneScore::Auto)
    out.push_back({{"score", "method"}, fmt::format("method {} ranks weights itself; score is for n_m and structured",
                                                    name(method))});
  if (method == PruneMethod::NM && score != PruneScore::Auto && score != PruneScore::Magnitude &&
      score != PruneScore::Wanda)
    out.push_back({{"score", "method"}, "n_m ranks weights by magnitude or wanda, got " + name(score)});
  if (method == PruneMethod::Structured && score != PruneScore::Auto && score != PruneScore::L2 &&
      score != PruneScore::Taylor)
    out.push_back({{"score", "method"}, "structured ranks heads and neurons by l2 or taylor, got " + name(score)});
  if (!unstructured && scope != PruneScope::Auto)
    out.push_back({{"scope", "method"}, "scope is for magnitude and wanda; " + name(method) + " has its own groups"});
  if (method == PruneMethod::Structured && heads == 0 && neurons == 0)
    out.push_back({{"heads", "neurons"}, "structured pruning removes nothing: set heads or neurons (a share)"});
  if (method == PruneMethod::Structured && !skip_modules.empty())
    out.push_back({{"skip_modules", "method"}, "structured pruning removes as many heads and neurons from every layer "
                                               "(the model keeps one config), so no module can be skipped"});
  if (method != PruneMethod::Structured && (heads > 0 || neurons > 0))
    out.push_back({{heads > 0 ? "heads" : "neurons", "method"}, "heads and neurons are for method: structured"});
  if (schedule == PruneSchedule::Gradual) {
    if (method != PruneMethod::Magnitude)
      out.push_back({{"schedule", "method"}, "gradual pruning ranks by magnitude as it trains; use method: magnitude"});
    if (finetune_steps == 0)
      out.push_back({{"schedule", "finetune_steps"}, "gradual pruning happens while fine-tuning: set finetune_steps"});
    if (initial_sparsity > sparsity)
      out.push_back({{"initial_sparsity", "sparsity"},
                     fmt::format("initial_sparsity ({}) exceeds sparsity ({})", initial_sparsity, sparsity)});
  }
  return out;
}

void check_skip_modules(const models::AnyModel& model, const std::vector<std::string>& skip, const std::string& key) {
  if (skip.empty()) return;
  auto params = nn::roles_of(*model.module());
  // A tied head is still the model's output head: `lm_head` names it (quantization copies it).
  if (auto head = model.tied_head()) params.push_back(*head);
  for (const auto& pattern : skip) {
    if (parse_enum<nn::Role>(pattern)) continue;  // a role may have no parameter in this model
    if (std::any_of(params.begin(), params.end(), [&](const auto& p) { return nn::selected(p, {pattern}); })) continue;
    throw Error(fmt::format("{}: '{}' selects no parameter of the model; give a module path or pattern that "
                            "exists (e.g. {}, blocks.0.*) or a role ({})",
                            key, pattern, params.empty() ? "blocks.0.attn" : params.front().name,
                            enum_choices<nn::Role>(", ")));
  }
}

std::vector<nn::RoledParameter> prunable(const models::AnyModel& model, const std::vector<std::string>& skip) {
  check_skip_modules(model, skip, "prune.skip_modules");
  std::vector<nn::RoledParameter> out;
  for (auto& p : nn::roles_of(*model.module())) {
    const bool block_matrix = p.role == nn::Role::Matrix || p.role == nn::Role::HeadBlock ||
                              p.role == nn::Role::NeuronBlock || p.role == nn::Role::ResidualProjection;
    if (block_matrix && !nn::selected(p, skip)) out.push_back(std::move(p));
  }
  return out;
}

std::map<std::string, at::Tensor> input_norms(models::AnyModel& model, const std::vector<std::string>& skip,
                                              const Calibration& calibration) {
  if (!calibration.run || calibration.batches <= 0) throw std::invalid_argument("input_norms needs calibration batches");
  auto lins = linears(model);
  std::map<std::string, at::Tensor> sums;
  std::vector<nn::LinearImpl*> observed;
  for (const auto& p : prunable(model, skip)) {
    auto it = lins.find(p.name);
    if (it == lins.end()) throw std::logic_error("no Linear holds the prunable weight " + p.name);
    auto* lin = it->second;
    auto& acc = sums[p.name];
    acc = at::zeros({lin->options.in}, p.tensor.options().dtype(at::kFloat));
    lin->input_observer = [&acc, in = lin->options.in](const at::Tensor& x) {
      acc.add_(x.detach().reshape({-1, in}).to(at::kFloat).pow(2).sum(0));
    };
    observed.push_back(lin);
  }
  struct Reset {
    std::vector<nn::LinearImpl*>& lins;
    ~Reset() {
      for (auto* l : lins) l->input_observer = nullptr;
    }
  } reset{observed};
  model.module()->eval();
  for (int64_t i = 0; i < calibration.batches; ++i) calibration.run(i, /*backward=*/false);
  for (auto& [name, s] : sums) s = s.sqrt();
  return sums;
}

Masks unstructured_masks(const models::AnyModel& model, const PruneOptions& o, double sparsity,
                         const std::map<std::string, at::Tensor>& norms) {
  torch::NoGradGuard no_grad;
  const auto params = prunable(model, o.skip_modules);
  const auto score_kind = o.resolved_score();
  std::vector<at::Tensor> scores;
  for (const auto& p : params) {
    auto s = p.tensor.detach().abs().to(at::kFloat);
    if (score_kind == PruneScore::Wanda) {
      auto it = norms.find(p.name);
      if (it == norms.end()) throw std::logic_error("wanda scores need the input norms of " + p.name);
      s = s * it->second.to(s.device()).unsqueeze(0);  // |W_ij| * ||X_j||
    }
    scores.push_back(s);
  }
  Masks masks;
  if (o.method == PruneMethod::NM) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& s = scores[i];
      const int64_t rows = s.size(0), cols = s.size(1);
      if (cols % o.m != 0)
        throw Error(fmt::format("prune n_m: {} has {} input features, not a multiple of m ({}); skip it "
                                "(prune.skip_modules) or choose another m",
                                params[i].name, cols, o.m));
      auto groups = s.reshape({rows * cols / o.m, o.m});
      masks[params[i].name] = drop_lowest(groups, o.m - o.n).reshape({rows, cols});
    }
    return masks;
  }
  switch (o.resolved_scope()) {
    case PruneScope::Row:
      for (std::size_t i = 0; i < params.size(); ++i)
        masks[params[i].name] = drop_lowest(scores[i], rounded(sparsity, scores[i].size(1)));
      break;
    case PruneScope::Layer:
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& s = scores[i];
        masks[params[i].name] = drop_lowest(s.reshape({1, -1}), rounded(sparsity, s.numel())).reshape(s.sizes());
      }
      break;
    case PruneScope::Global:
    case PruneScope::Auto: {
      std::vector<at::Tensor> flat;
      for (auto& s : scores) flat.push_back(s.reshape({-1}).to(at::kCPU));
      auto all = at::cat(flat).unsqueeze(0);
      auto keep = drop_lowest(all, rounded(sparsity, all.numel())).squeeze(0);
      int64_t offset = 0;
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto n = scores[i].numel();
        masks[params[i].name] = keep.narrow(0, offset, n).reshape(scores[i].sizes()).to(scores[i].device());
        offset += n;
      }
      break;
    }
  }
  return masks;
}

void apply_masks(const models::AnyModel& model, const Masks& masks) {
  torch::NoGradGuard no_grad;
  auto params = model.module()->named_parameters();
  for (const auto& [name, mask] : masks) {
    auto* p = params.find(name);
    if (!p) throw std::logic_error("a mask names no parameter: " + name);
    p->mul_(mask.to(p->device()));
  }
}

std::vector<LayerSparsity> measure_sparsity(const models::AnyModel& model, const std::vector<std::string>& skip) {
  std::vector<LayerSparsity> out;
  LayerSparsity all{"all"};
  for (const auto& p : prunable(model, skip)) {
    LayerSparsity l{p.name, p.tensor.numel(), (p.tensor == 0).sum().item<int64_t>()};
    all.size += l.size;
    all.zeros += l.zeros;
    out.push_back(l);
  }
  out.push_back(all);
  return out;
}

StructuredPlan plan_structured(models::AnyModel& model, const PruneOptions& o, const Calibration* calibration) {
  std::vector<AttentionSite> attn;
  std::vector<MlpSite> mlp;
  find_sites(model, attn, mlp);
  if (attn.empty() || attn.size() != mlp.size())
    throw std::logic_error("structured pruning found no transformer blocks in the model");
  const auto score = o.resolved_score();
  if (score == PruneScore::Taylor) {
    if (!calibration || !calibration->run) throw std::invalid_argument("taylor scores need calibration batches");
    model.module()->eval();
    model.module()->zero_grad(/*set_to_none=*/true);
    for (int64_t i = 0; i < calibration->batches; ++i) calibration->run(i, /*backward=*/true);
  }
  torch::NoGradGuard no_grad;
  // Each weight's share of a unit's importance: w^2 (the unit's L2 norm is the root of the
  // sum) or Taylor's |w * grad| (summed as is).
  auto contribution = [&](const at::Tensor& w) {
    auto x = w.detach().to(at::kDouble);
    if (score != PruneScore::Taylor) return x.pow(2);
    if (!w.grad().defined()) throw std::logic_error("taylor scores need gradients from the calibration batches");
    return (x * w.grad().to(at::kDouble)).abs();
  };
  auto finish = [&](const at::Tensor& total) { return host_values(score == PruneScore::Taylor ? total : total.sqrt()); };
  StructuredPlan plan;
  for (const auto& site : attn) {
    const auto& ao = site.module->options;
    const int64_t H = ao.n_head, Hkv = ao.kv_heads(), D = ao.head_dim();
    // The unit is a key/value group (its key and value heads and the query heads sharing
    // them); without GQA that is one head.
    const int64_t removed = removed_units(o.heads, Hkv, "heads", Hkv == H ? "heads" : "key/value groups");
    const auto rows = contribution(site.module->qkv->weight).sum(1);  // ((H + 2 Hkv) * D)
    const auto cols = contribution(site.module->proj->weight).sum(0);  // (H * D)
    const auto q = (rows.narrow(0, 0, H * D) + cols).view({H, D}).sum(1);
    const auto k = rows.narrow(0, H * D, Hkv * D).view({Hkv, D}).sum(1);
    const auto v = rows.narrow(0, (H + Hkv) * D, Hkv * D).view({Hkv, D}).sum(1);
    std::vector<int64_t> heads;
    for (auto g : best(finish(q.view({Hkv, H / Hkv}).sum(1) + k + v), Hkv - removed))
      for (auto h : group_heads(ao, g)) heads.push_back(h);
    plan.heads.push_back(heads);
  }
  for (const auto& site : mlp) {
    const auto& mo = site.module->options;
    const int64_t F = mo.d_ff;
    const int64_t removed = removed_units(o.neurons, F, "neurons", "neurons");
    const auto rows = contribution(site.module->fc->weight).sum(1);  // (F), gated (2 F): gate, then up
    auto per = rows.narrow(0, 0, F) + contribution(site.module->proj->weight).sum(0);
    if (nn::gated(mo.activation)) per = per + rows.narrow(0, F, F);
    plan.neurons.push_back(best(finish(per), F - removed));
  }
  if (score == PruneScore::Taylor) model.module()->zero_grad(/*set_to_none=*/true);
  return plan;
}

models::AnyModel apply_structured(const models::AnyModel& model, const StructuredPlan& plan) {
  std::vector<AttentionSite> attn;
  std::vector<MlpSite> mlp;
  find_sites(model, attn, mlp);
  if (plan.heads.size() != attn.size() || plan.neurons.size() != mlp.size())
    throw std::logic_error("the structured plan does not fit the model's layers");
  const auto& first = attn.front().module->options;
  const int64_t kept_heads = static_cast<int64_t>(plan.heads.front().size());
  const int64_t kept_neurons = static_cast<int64_t>(plan.neurons.front().size());
  for (std::size_t i = 0; i < attn.size(); ++i)
    if (static_cast<int64_t>(plan.heads[i].size()) != kept_heads ||
        static_cast<int64_t>(plan.neurons[i].size()) != kept_neurons)
      throw std::logic_error("every layer must keep the same number of heads and neurons");

  auto options = model.options();
  const int64_t group = first.n_head / first.kv_heads();
  const bool heads_pruned = kept_heads != first.n_head;
  if (heads_pruned) {
    options.d_head = first.head_dim();
    options.n_head = kept_heads;
    if (options.n_kv_head > 0) options.n_kv_head = kept_heads / group;
  }
  options.d_ff = kept_neurons;
  options.device = c10::kCPU;
  auto pruned = models::make_model(model.kind(), options);
  pruned.labels = model.labels;

  // The rows / columns each pruned parameter keeps; everything else is copied whole.
  std::map<std::string, std::pair<int64_t, at::Tensor>> take;
  for (std::size_t i = 0; i < attn.size(); ++i) {
    const auto& ao = attn[i].module->options;
    std::vector<int64_t> kv;
    for (std::size_t k = 0; k < plan.heads[i].size(); k += static_cast<std::size_t>(group))
      kv.push_back(plan.heads[i][k] / group);
    const auto rows = qkv_rows(ao, plan.heads[i], kv);
    take[attn[i].prefix + ".qkv.weight"] = {0, rows};
    take[attn[i].prefix + ".qkv.bias"] = {0, rows};
    take[attn[i].prefix + ".proj.weight"] = {1, head_columns(ao, plan.heads[i])};
  }
  for (std::size_t i = 0; i < mlp.size(); ++i) {
    const auto rows = neuron_rows(mlp[i].module->options, plan.neurons[i]);
    take[mlp[i].prefix + ".fc.weight"] = {0, rows};
    take[mlp[i].prefix + ".fc.bias"] = {0, rows};
    take[mlp[i].prefix + ".proj.weight"] = {1, at::tensor(plan.neurons[i], at::kLong)};
  }
  torch::NoGradGuard no_grad;
  auto src = model.module()->named_parameters();
  for (auto& item : pruned.module()->named_parameters()) {
    auto value = src[item.key()].detach();
    if (auto it = take.find(item.key()); it != take.end())
      value = value.index_select(it->second.first, it->second.second.to(value.device()));
    item.value().copy_(value);
  }
  auto src_buffers = model.module()->named_buffers();
  for (auto& item : pruned.module()->named_buffers())
    if (src_buffers.contains(item.key())) item.value().copy_(src_buffers[item.key()]);
  return pruned;
}

int64_t gradual_final_step(const PruneOptions& o, int64_t total) {
  const auto end = static_cast<int64_t>(std::ceil(o.ramp * static_cast<double>(total)));
  return std::max<int64_t>(0, std::min(end, total - 1));
}

double gradual_sparsity(const PruneOptions& o, int64_t step, int64_t total) {
  const double end = o.ramp * static_cast<double>(total);
  const double t = static_cast<double>(step - step % o.prune_every);
  // The target holds from the ramp's end even where prune_every steps past it (or past the
  // fine-tune's last step).
  if (t >= end || step >= gradual_final_step(o, total)) return o.sparsity;
  return o.sparsity + (o.initial_sparsity - o.sparsity) * std::pow(1.0 - t / end, 3.0);
}

}  // namespace lathe::compress
