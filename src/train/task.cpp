// Task data and losses.

#include "lathe/train/task.hpp"

#include <algorithm>
#include <functional>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/data/classification.hpp"
#include "lathe/data/collate.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/data/shard.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/wordpiece.hpp"
#include "epoch_order.hpp"
#include "dpo_data.hpp"
#include "sft_data.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using recipe::Task;

Batch pin(const Batch& b) {
  Batch out = b;
  for (auto* t : out.tensors())
    if (t->defined() && !t->is_pinned()) *t = t->pin_memory();
  return out;
}

Batch to_device(const Batch& b, const at::Device& device) {
  if (device.is_cpu()) return b;
  const bool cuda = device.is_cuda();
  Batch out = cuda ? pin(b) : b;
  for (auto* t : out.tensors())
    if (t->defined()) *t = t->to(device, /*non_blocking=*/cuda);
  return out;
}

models::ModelKind model_kind(Task task) {
  for (const auto& row : models::model_kinds())
    if (row.trains(recipe::enum_name(task))) return row.kind;
  throw std::logic_error("train.task " + std::string(recipe::enum_name(task)) + " trains no model kind");
}

namespace {

const tokenizer::WordPiece& wordpiece(const tokenizer::Tokenizer& tok, const char* task) {
  const auto* wp = dynamic_cast<const tokenizer::WordPiece*>(&tok);
  if (!wp) throw Error(std::string("train.task ") + task + " needs a WordPiece tokenizer (tokenizer.type: wordpiece)");
  return *wp;
}

int32_t need_token(const tokenizer::Tokenizer& tok, const char* token, const char* why) {
  const int32_t id = tok.token_to_id(token);
  if (id < 0) throw Error(std::string("the tokenizer has no ") + token + " token, which " + why + " needs");
  return id;
}

/// Token windows from the shards of a split.
struct Windows {
  std::unique_ptr<data::TokenStream> stream;
  std::unique_ptr<data::WindowSampler> sampler;
  Windows() = default;
  /// `validation`: a split with fewer windows than one batch is read as one smaller batch
  /// (noted in `note`) rather than refused.
  Windows(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, const std::string& split, int64_t seq_len,
          data::SamplerMode mode, bool validation = false, DataRank rank = {})
      : batch(r.train.batch_size) {
    std::vector<data::Shard> shards;
    for (const auto& path : data::indexed_shards(recipe::shard_dir(r), split, tok)) {
      shards.emplace_back(path);
      // Each shard's own header, not only the index: a shard copied in from another run is refused.
      shards.back().expect_tokenizer(tok.fingerprint(), static_cast<uint32_t>(tok.vocab_size()));
    }
    stream = std::make_unique<data::TokenStream>(std::move(shards));
    if (stream->size() <= static_cast<uint64_t>(seq_len + 1)) return;
    const auto windows = static_cast<int64_t>((stream->size() - 1) / static_cast<uint64_t>(seq_len));
    if (validation && windows < batch) {
      note = fmt::format("the {} split holds {} windows of {} tokens, fewer than train.batch_size {}: it is "
                         "evaluated as one batch of {}",
                         split, windows, seq_len + 1, batch, windows);
      batch = windows;
    }
    data::WindowSamplerOptions o;
    o.seq_len = seq_len;
    o.batch_size = batch;
    o.seed = static_cast<uint64_t>(r.run.seed) + (split == "val" ? 1 : 0);
    o.mode = mode;
    o.rank = rank.rank;
    o.world_size = rank.world;
    sampler = std::make_unique<data::WindowSampler>(*stream, o);
  }
  /// Whole batches of windows (sequential mode).
  int64_t batches() const { return sampler ? static_cast<int64_t>(sampler->windows()) / batch : 0; }
  int64_t batch = 1;
  std::string note;
};

class CausalLmData final : public TaskData {
 public:
  CausalLmData(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, recipe::Split eval_split, DataRank rank)
      : seq_(r.data.seq_len),
        train_(r, tok, "train", seq_, recipe_mode(r), /*validation=*/false, rank),
        val_(r, tok, eval_split == recipe::Split::Val ? "val" : "train", seq_, data::SamplerMode::Sequential,
             /*validation=*/true) {
    if (!train_.sampler)
      throw Error(recipe::shard_dir(r).string() + ": the training shards hold fewer than seq_len + 1 (" +
                  std::to_string(seq_ + 1) + ") tokens");
  }
  static data::SamplerMode recipe_mode(const recipe::Recipe& r) {
    return r.data.sampler == recipe::Sampler::Random ? data::SamplerMode::Random : data::SamplerMode::Sequential;
  }
  Batch train_batch(uint64_t i) const override { return make(train_, i); }
  int64_t val_batches() const override { return val_.batches(); }
  Batch val_batch(int64_t i) const override { return make(val_, static_cast<uint64_t>(i)); }
  std::string notes() const override { return val_.note; }

 private:
  Batch make(const Windows& w, uint64_t i) const {
    std::vector<int32_t> rows;
    w.sampler->rows_for(i, rows);
    auto lm = data::make_lm_batch(rows, w.batch, seq_);
    return {lm.input, lm.target, {}, {}, w.batch * seq_};
  }
  int64_t seq_;
  Windows train_, val_;
};

class MaskedLmData final : public TaskData {
 public:
  MaskedLmData(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, recipe::Split eval_split, DataRank rank)
      : seq_(r.data.seq_len),
        train_(r, tok, "train", seq_ - 2, CausalLmData::recipe_mode(r), /*validation=*/false, rank),
        val_(r, tok, eval_split == recipe::Split::Val ? "val" : "train", seq_ - 2, data::SamplerMode::Sequential,
             /*validation=*/true),
        collator_(options(r, tok)), first_row_(static_cast<uint64_t>(rank.rank * r.train.batch_size)) {
    if (seq_ < 4) throw Error("data.seq_len must be at least 4 for masked_lm ([CLS] + tokens + [SEP])");
    if (!train_.sampler) throw Error(recipe::shard_dir(r).string() + ": the training shards are too small");
    cls_ = need_token(tok, "[CLS]", "masked_lm");
    sep_ = need_token(tok, "[SEP]", "masked_lm");
    pad_ = need_token(tok, "[PAD]", "masked_lm");
  }
  static data::MlmOptions options(const recipe::Recipe& r, const tokenizer::Tokenizer& tok) {
    const auto& wp = wordpiece(tok, "masked_lm");
    data::MlmOptions o;
    o.probability = r.data.mlm_probability;
    o.mask_id = need_token(tok, "[MASK]", "masked_lm");
    o.vocab_size = tok.vocab_size();
    for (const char* s : {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"})
      if (int32_t id = tok.token_to_id(s); id >= 0) o.special_ids.push_back(id);
    if (r.data.whole_word_mask) {
      o.continuation.resize(wp.tokens().size());
      for (std::size_t i = 0; i < wp.tokens().size(); ++i) o.continuation[i] = wp.tokens()[i].starts_with("##");
    }
    o.seed = static_cast<uint64_t>(r.run.seed);
    return o;
  }
  Batch train_batch(uint64_t i) const override { return make(train_, i, i, first_row_); }
  int64_t val_batches() const override { return val_.batches(); }
  // Validation masks come from a step range training never reaches, so they stay fixed.
  Batch val_batch(int64_t i) const override {
    return make(val_, static_cast<uint64_t>(i), (uint64_t{1} << 62) + static_cast<uint64_t>(i));
  }
  std::string notes() const override { return val_.note; }

 private:
  /// `first_row`: the global row of the batch's first row, which keys its masking.
  Batch make(const Windows& w, uint64_t i, uint64_t mask_step, uint64_t first_row = 0) const {
    std::vector<int32_t> rows;
    w.sampler->rows_for(i, rows);
    const int64_t inner = seq_ - 2, stride = inner + 1;
    std::vector<std::vector<int32_t>> ids(w.batch);
    for (int64_t b = 0; b < w.batch; ++b) {
      ids[b].reserve(seq_);
      ids[b].push_back(cls_);
      ids[b].insert(ids[b].end(), rows.begin() + b * stride, rows.begin() + b * stride + inner);
      ids[b].push_back(sep_);
    }
    auto m = collator_(ids, pad_, mask_step, /*type_ids=*/nullptr, first_row);
    return {m.inputs.input_ids, m.labels, m.inputs.attention_mask, m.inputs.token_type_ids, w.batch * seq_};
  }
  int64_t seq_;
  Windows train_, val_;
  data::MlmCollator collator_;
  uint64_t first_row_;
  int32_t cls_ = 0, sep_ = 0, pad_ = 0;
};

class ClassificationData final : public TaskData {
 public:
  ClassificationData(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, recipe::Split eval_split,
                     DataRank rank)
      : rank_(rank), tok_(wordpiece(tok, "classification")), seq_(r.data.seq_len), batch_(r.train.batch_size),
        seed_(static_cast<uint64_t>(r.run.seed)), pair_(!r.data.text_pair_field.empty()) {
    pad_ = need_token(tok, "[PAD]", "classification");
    std::vector<Item> all_train;
    read(r, r.data.train_files, all_train);
    if (all_train.empty()) throw Error("data.train_files: no examples found");
    if (!r.data.val_files.empty()) {
      read(r, r.data.val_files, val_);
      train_ = std::move(all_train);
    } else {
      // A fixed share of the examples, chosen by hash, so the split survives reordering.
      for (std::size_t i = 0; i < all_train.size(); ++i) {
        const double u = static_cast<double>(data::splitmix64(seed_ ^ (i * 0x9E3779B97F4A7C15ull)) >> 11) * 0x1.0p-53;
        (u < r.data.val_fraction ? val_ : train_).push_back(all_train[i]);
      }
    }
    if (train_.empty()) throw Error("data: every example went to validation; lower data.val_fraction");
    std::vector<data::Example> examples;
    for (const auto& it : train_) examples.push_back(it.example);
    labels_ = data::LabelMap(examples);
    if (eval_split == recipe::Split::Train) val_ = train_;
    if (static_cast<int64_t>(labels_.names().size()) != r.model.num_labels)
      throw Error("model.num_labels is " + std::to_string(r.model.num_labels) + " but the training data has " +
                  std::to_string(labels_.names().size()) + " labels");
    // Every validation label is known before the first step, not at the first validation.
    for (const auto& it : val_) labels_.id(it.example, files_[it.file]);
    order_ = EpochOrder(train_.size(), seed_);
  }
  Batch train_batch(uint64_t index) const override {
    std::vector<const Item*> items;
    const uint64_t n = train_.size();
    for (int64_t k = 0; k < batch_; ++k) {
      // Rank r's slice of the global batch of world x batch examples.
      const uint64_t global = (index * static_cast<uint64_t>(rank_.world) + static_cast<uint64_t>(rank_.rank)) *
                                  static_cast<uint64_t>(batch_) +
                              static_cast<uint64_t>(k);
      items.push_back(&train_[order_(global / n)[global % n]]);
    }
    return make(items);
  }
  int64_t val_batches() const override {
    return (static_cast<int64_t>(val_.size()) + batch_ - 1) / batch_;
  }
  Batch val_batch(int64_t index) const override {
    std::vector<const Item*> items;
    for (int64_t k = index * batch_; k < std::min<int64_t>((index + 1) * batch_, val_.size()); ++k)
      items.push_back(&val_[k]);
    return make(items);
  }
  std::vector<std::string> labels() const override { return labels_.names(); }

 private:
  DataRank rank_;
  struct Item {
    data::Example example;
    std::size_t file = 0;
  };
  void read(const recipe::Recipe& r, const std::vector<std::string>& patterns, std::vector<Item>& out) {
    for (const auto& path : io::expand_inputs(patterns)) {
      files_.push_back(path);
      for (auto& e : data::read_examples(path, r.data.text_field, r.data.text_pair_field, r.data.label_field))
        out.push_back({std::move(e), files_.size() - 1});
    }
  }
  Batch make(const std::vector<const Item*>& items) const {
    std::vector<data::Example> examples;
    for (const auto* it : items) examples.push_back(it->example);
    const auto& file = files_[items.empty() ? 0 : items.front()->file];
    auto c = data::collate_examples(examples, tok_, labels_, seq_, file, pad_, pair_);
    const int64_t tokens = c.inputs.attention_mask.sum().item<int64_t>();
    return {c.inputs.input_ids, c.labels, c.inputs.attention_mask, c.inputs.token_type_ids, tokens};
  }
  const tokenizer::WordPiece& tok_;
  int64_t seq_, batch_;
  uint64_t seed_;
  bool pair_;  // data.text_pair_field is set: every row is [CLS] a [SEP] b [SEP], b possibly empty
  int32_t pad_ = 0;
  std::vector<fs::path> files_;
  std::vector<Item> train_, val_;
  data::LabelMap labels_;
  EpochOrder order_{0, 0};
};

}  // namespace

std::unique_ptr<TaskData> make_task_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                         recipe::Split eval_split, DataRank rank) {
  if (rank.world < 1 || rank.rank < 0 || rank.rank >= rank.world)
    throw std::invalid_argument("make_task_data: rank " + std::to_string(rank.rank) + " outside a world of " +
                                std::to_string(rank.world));
  switch (r.train.task) {
    case Task::CausalLm: return std::make_unique<CausalLmData>(r, tok, eval_split, rank);
    case Task::MaskedLm: return std::make_unique<MaskedLmData>(r, tok, eval_split, rank);
    case Task::Classification: return std::make_unique<ClassificationData>(r, tok, eval_split, rank);
    case Task::Sft: return make_sft_data(r, tok, eval_split, rank);
    case Task::Dpo: return make_dpo_data(r, tok, eval_split, rank);
  }
  return nullptr;
}

double unigram_loss(const recipe::Recipe& r, const tokenizer::Tokenizer& tok) {
  std::vector<double> counts(static_cast<std::size_t>(tok.vocab_size()), 1.0);
  double total = static_cast<double>(counts.size());
  std::vector<int32_t> buf;
  auto each = [&](const std::string& split, const std::function<void(int32_t)>& f) {
    for (const auto& path : data::indexed_shards(recipe::shard_dir(r), split, tok)) {
      data::Shard shard(path);
      for (uint64_t at = 0; at < shard.size(); at += 1 << 20) {
        const uint64_t n = std::min<uint64_t>(1 << 20, shard.size() - at);
        buf.resize(n);
        shard.read(at, n, buf.data());
        for (auto t : buf) f(t);
      }
    }
  };
  each("train", [&](int32_t t) {
    counts[static_cast<std::size_t>(t)] += 1;
    total += 1;
  });
  double nll = 0;
  uint64_t n = 0;
  each("val", [&](int32_t t) {
    nll -= std::log(counts[static_cast<std::size_t>(t)] / total);
    ++n;
  });
  return n ? nll / static_cast<double>(n) : std::nan("");
}

namespace {

/// What the model reads of the batch.
models::TaskInputs inputs(const Batch& b) {
  return {b.input_ids, b.attention_mask, b.token_type_ids, b.targets, b.segments};
}

}  // namespace

at::Tensor row_logps(const models::AnyModel& model, const Batch& b) {
  auto [logits, targets] = model.scored(inputs(b));
  // -100 targets (prompt, padding) give 0.
  const auto nll = at::cross_entropy_loss(logits.to(at::kFloat), targets, {}, at::Reduction::None);
  return -nll.view({b.targets.size(0), -1}).sum(1);
}

PreferenceTerms preference_terms(const at::Tensor& logps, const at::Tensor& reference, double beta,
                                 double label_smoothing) {
  const auto n = reference.size(0);
  const auto policy = logps.to(at::kDouble).view({2, n});  // chosen, rejected
  const auto ref = reference.to(logps.device(), at::kDouble).t();
  PreferenceTerms t;
  t.chosen_logps = policy[0];
  t.rejected_logps = policy[1];
  t.chosen_rewards = beta * (policy[0] - ref[0]);
  t.rejected_rewards = beta * (policy[1] - ref[1]);
  const auto margin = t.chosen_rewards - t.rejected_rewards;  // beta d
  t.loss = -(1.0 - label_smoothing) * at::log_sigmoid(margin) - label_smoothing * at::log_sigmoid(-margin);
  return t;
}

const char* headline_metric(const std::map<std::string, double>& m) {
  if (m.count("perplexity")) return "perplexity";
  if (m.count("rewards_accuracy")) return "rewards_accuracy";
  return "accuracy";
}

at::Tensor preference_sums(const PreferenceTerms& t) {
  return at::stack({at::full({}, static_cast<double>(t.loss.size(0)), t.loss.options()),
                    (t.chosen_rewards > t.rejected_rewards).sum().to(at::kDouble), t.chosen_rewards.sum(),
                    t.rejected_rewards.sum(), t.chosen_logps.sum(), t.rejected_logps.sum()})
      .detach();
}

std::map<std::string, double> preference_metrics(const at::Tensor& sums) {
  const auto s = sums.to(at::kCPU, at::kDouble).contiguous();
  const auto* v = s.data_ptr<double>();
  if (v[0] <= 0) return {};
  return {{"rewards_accuracy", v[1] / v[0]}, {"rewards_chosen", v[2] / v[0]}, {"rewards_rejected", v[3] / v[0]},
          {"rewards_margin", (v[2] - v[3]) / v[0]}, {"logps_chosen", v[4] / v[0]}, {"logps_rejected", v[5] / v[0]}};
}

at::Tensor task_loss(const models::AnyModel& model, const Batch& b, at::ScalarType* logits_dtype,
                     at::Tensor* preference) {
  if (b.reference.defined()) {
    if (logits_dtype) *logits_dtype = at::kFloat;
    const auto t = preference_terms(row_logps(model, b), b.reference, b.beta, b.label_smoothing);
    if (preference) *preference = preference->defined() ? *preference + preference_sums(t) : preference_sums(t);
    return t.loss.mean().to(at::kFloat);
  }
  const auto in = inputs(b);
  if (auto loss = model.blockwise_loss(in, logits_dtype); loss.defined()) return loss;
  auto [logits, targets] = model.scored(in);
  if (logits_dtype) *logits_dtype = logits.scalar_type();
  if (targets.numel() == 0) return logits.sum() * 0.0;  // nothing masked in this batch
  return at::cross_entropy_loss(logits.to(at::kFloat), targets);
}

void EvalAccumulator::add(const models::AnyModel& m, const Batch& b) {
  if (b.reference.defined()) {
    const auto t = preference_terms(row_logps(m, b), b.reference, b.beta, b.label_smoothing);
    count += b.reference.size(0);
    loss_sum += t.loss.sum().item<double>();
    const auto sums = preference_sums(t).to(at::kCPU);
    preference = preference.defined() ? preference + sums : sums;
    return;
  }
  auto [logits, targets] = m.scored(inputs(b));
  if (targets.numel() == 0) return;
  // Targets of -100 (an sft prompt, padding) are not scored.
  loss_sum += at::cross_entropy_loss(logits.to(at::kFloat), targets, {}, at::Reduction::Sum).item<double>();
  count += targets.ne(-100).sum().item<int64_t>();
  if (m.traits().labelled) {
    auto pred = logits.argmax(-1).to(at::kCPU).contiguous();
    auto lab = targets.to(at::kCPU).contiguous();
    predictions.insert(predictions.end(), pred.data_ptr<int64_t>(), pred.data_ptr<int64_t>() + pred.numel());
    labels.insert(labels.end(), lab.data_ptr<int64_t>(), lab.data_ptr<int64_t>() + lab.numel());
  }
}

std::map<std::string, double> EvalAccumulator::metrics(int64_t num_labels) const {
  std::map<std::string, double> out;
  if (count == 0) return out;
  out["loss"] = loss_sum / static_cast<double>(count);
  if (preference.defined()) {
    out.merge(preference_metrics(preference));
    return out;
  }
  if (labels.empty()) {
    out["perplexity"] = std::exp(out["loss"]);
    return out;
  }
  int64_t correct = 0;
  std::vector<int64_t> tp(num_labels), fp(num_labels), fn(num_labels);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (predictions[i] == labels[i]) {
      ++correct;
      ++tp[labels[i]];
    } else {
      ++fp[predictions[i]];
      ++fn[labels[i]];
    }
  }
  out["accuracy"] = static_cast<double>(correct) / static_cast<double>(labels.size());
  // Macro F1 over the classes that occur (as label or prediction), like scikit-learn's
  // f1_score(average="macro") on the labels present.
  double f1_sum = 0;
  int classes = 0;
  for (int64_t c = 0; c < num_labels; ++c) {
    if (tp[c] + fp[c] + fn[c] == 0) continue;
    f1_sum += 2.0 * tp[c] / static_cast<double>(2 * tp[c] + fp[c] + fn[c]);
    ++classes;
  }
  out["f1"] = classes ? f1_sum / classes : 0.0;
  return out;
}

}  // namespace lathe::train
