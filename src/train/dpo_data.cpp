// The dpo task's data: preference pairs, each batch the pairs' chosen rows then their rejected
// rows, with the reference model's log-probabilities of both.

#include "dpo_data.hpp"

#include "sft_data.hpp"

#include "epoch_order.hpp"

#include <cmath>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/data/sft.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/chat_template.hpp"

namespace lathe::train {

namespace {

class DpoData final : public TaskData {
 public:
  DpoData(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, recipe::Split eval_split, DataRank rank)
      : rank_(rank), seq_(r.data.seq_len), batch_(r.train.batch_size), seed_(static_cast<uint64_t>(r.run.seed)),
        beta_(r.train.dpo_beta), label_smoothing_(r.train.dpo_label_smoothing) {
    auto o = example_options(r, tok, template_);
    o.loss_on = data::SftLoss::Completion;  // the completion of a string pair; chats: their own rule
    pad_ = std::max(0, tok.eos_id());
    auto all = read(r.data.train_files, tok, o, "data.train_files");
    if (all.empty())
      throw Error("data.train_files: no preference pair whose chosen and rejected completions both have a token to "
                  "score (" + note_ + "): a longer data.seq_len keeps more");
    if (!r.data.val_files.empty()) {
      train_ = std::move(all);
      val_ = read(r.data.val_files, tok, o, "data.val_files");
    } else {
      split_by_hash(std::move(all), r.data.val_fraction, seed_, train_, val_);
    }
    if (train_.empty()) throw Error("data: every preference pair went to validation; lower data.val_fraction");
    if (eval_split == recipe::Split::Train) val_ = train_;
    order_ = EpochOrder(train_.size(), seed_);
  }

  Batch train_batch(uint64_t index) const override { return make(train_, train_pairs(index), train_reference_); }
  int64_t val_batches() const override { return (static_cast<int64_t>(val_.size()) + batch_ - 1) / batch_; }
  Batch val_batch(int64_t index) const override { return make(val_, val_pairs(index), val_reference_); }
  std::string notes() const override { return note_; }

  bool wants_reference() const override { return true; }
  void set_reference(const std::function<at::Tensor(const Batch&)>& score, uint64_t train_begin, uint64_t train_end,
                     int64_t val_batches) override {
    std::vector<std::size_t> train, val;
    std::vector<bool> seen(train_.size());
    for (uint64_t i = train_begin; i < train_end && train.size() < train_.size(); ++i)
      for (const auto p : train_pairs(i))
        if (!seen[p]) {
          seen[p] = true;
          train.push_back(p);
        }
    for (int64_t i = 0; i < std::min(val_batches, this->val_batches()); ++i)
      for (const auto p : val_pairs(i)) val.push_back(p);
    train_reference_ = reference_of(train_, train, score);
    val_reference_ = reference_of(val_, val, score);
  }

 private:
  std::vector<data::PreferencePair> read(const std::vector<std::string>& patterns, const tokenizer::Tokenizer& tok,
                                         const data::SftOptions& o, const char* key) {
    std::vector<data::PreferencePair> out;
    data::SftStats stats;
    for (const auto& path : io::expand_inputs(patterns)) {
      auto part = data::read_preference_pairs(path, tok, o, stats);
      out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
    }
    note_ += fmt::format("{}dpo {}: {} preference pairs kept, {} tokens, {} of them scored", note_.empty() ? "" : "; ",
                         key, stats.examples, stats.tokens, stats.scored);
    if (stats.truncated)
      note_ += fmt::format(", {} of them with a row cut to its first {} tokens (data.seq_len)", stats.truncated, seq_);
    if (stats.unscored)
      note_ += fmt::format("; {} more left out, a completion with no token to score in its first {}", stats.unscored,
                           seq_);
    return out;
  }

  /// The pairs of rank_'s share of global training batch `index`.
  std::vector<std::size_t> train_pairs(uint64_t index) const {
    std::vector<std::size_t> pairs;
    const uint64_t n = train_.size();
    for (int64_t k = 0; k < batch_; ++k) {
      const uint64_t global = (index * static_cast<uint64_t>(rank_.world) + static_cast<uint64_t>(rank_.rank)) *
                                  static_cast<uint64_t>(batch_) +
                              static_cast<uint64_t>(k);
      pairs.push_back(order_(global / n)[global % n]);
    }
    return pairs;
  }
  std::vector<std::size_t> val_pairs(int64_t index) const {
    std::vector<std::size_t> pairs;
    for (int64_t k = index * batch_; k < std::min<int64_t>((index + 1) * batch_, val_.size()); ++k)
      pairs.push_back(static_cast<std::size_t>(k));
    return pairs;
  }

  /// The reference's log-probabilities of `which` pairs, as (pairs, 2) float64 (NaN for the
  /// pairs not scored), in batches of batch_size.
  at::Tensor reference_of(const std::vector<data::PreferencePair>& pairs, const std::vector<std::size_t>& which,
                          const std::function<at::Tensor(const Batch&)>& score) const {
    auto out = at::full({static_cast<int64_t>(pairs.size()), 2}, std::nan(""), at::kDouble);
    for (std::size_t begin = 0; begin < which.size(); begin += static_cast<std::size_t>(batch_)) {
      const std::vector<std::size_t> chunk(
          which.begin() + static_cast<std::ptrdiff_t>(begin),
          which.begin() + static_cast<std::ptrdiff_t>(std::min(which.size(), begin + static_cast<std::size_t>(batch_))));
      const auto logps = score(make(pairs, chunk, {})).to(at::kCPU, at::kDouble);  // (2n): chosen, then rejected
      const auto n = static_cast<int64_t>(chunk.size());
      std::vector<int64_t> rows(chunk.begin(), chunk.end());
      out.index_copy_(0, at::tensor(rows, at::kLong), logps.view({2, n}).t().contiguous());
    }
    return out;
  }

  Batch make(const std::vector<data::PreferencePair>& pairs, const std::vector<std::size_t>& which,
             const at::Tensor& reference) const {
    std::vector<std::vector<const data::SftExample*>> rows;
    for (const auto i : which) rows.push_back({&pairs[i].chosen});
    for (const auto i : which) rows.push_back({&pairs[i].rejected});
    auto b = data::collate_sft(rows, 0, pad_, /*packed=*/false);
    Batch out{b.input_ids, b.targets, {}, {}, b.tokens};
    if (reference.defined()) {
      std::vector<int64_t> index(which.begin(), which.end());
      out.reference = reference.index_select(0, at::tensor(index, at::kLong));
      if (out.reference.isnan().any().item<bool>())
        throw std::logic_error("dpo: a batch of pairs whose reference log-probabilities were not computed");
    }
    out.beta = beta_;
    out.label_smoothing = label_smoothing_;
    return out;
  }

  DataRank rank_;
  int64_t seq_, batch_;
  uint64_t seed_;
  double beta_, label_smoothing_;
  int32_t pad_ = 0;
  std::optional<tokenizer::ChatTemplate> template_;
  std::vector<data::PreferencePair> train_, val_;
  at::Tensor train_reference_, val_reference_;
  std::string note_;
  EpochOrder order_{0, 0};
};

}  // namespace

std::unique_ptr<TaskData> make_dpo_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                        recipe::Split eval_split, DataRank rank) {
  return std::make_unique<DpoData>(r, tok, eval_split, rank);
}

}  // namespace lathe::train
