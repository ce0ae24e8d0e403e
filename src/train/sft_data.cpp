// The sft task's data.

#include "sft_data.hpp"

#include "epoch_order.hpp"

#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/data/sft.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/chat_template.hpp"

namespace lathe::train {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

std::string chat_template_source(const recipe::Recipe& r) {
  const auto& set = r.tokenizer.chat_template;
  if (!set.empty()) {
    // A one-line value naming an existing file is that file's template.
    if (set.find('\n') == std::string::npos && set.find("{%") == std::string::npos &&
        set.find("{{") == std::string::npos) {
      std::ifstream in(set);
      if (!in) throw Error("tokenizer.chat_template: cannot read '" + set + "' (a template, or a file holding one)");
      return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    }
    return set;
  }
  return tokenizer::find_chat_template(recipe::tokenizer_path(r)).value_or("");
}

namespace {

data::SftLoss loss_on(recipe::LossOn l) {
  switch (l) {
    case recipe::LossOn::Assistant: return data::SftLoss::Assistant;
    case recipe::LossOn::Completion: return data::SftLoss::Completion;
    case recipe::LossOn::All: return data::SftLoss::All;
  }
  return data::SftLoss::Assistant;
}

}  // namespace

data::SftOptions example_options(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                 std::optional<tokenizer::ChatTemplate>& holder) {
  const auto source = chat_template_source(r);
  if (!source.empty())
    holder.emplace(source, r.tokenizer.chat_template.empty() ? "the tokenizer's chat template" : "tokenizer.chat_template");
  data::SftOptions o;
  o.loss_on = loss_on(r.train.loss_on);
  o.max_tokens = r.data.seq_len;
  o.chat_template = holder ? &*holder : nullptr;
  o.template_context = data::chat_template_context(recipe::tokenizer_path(r), tok);
  o.eos_id = tok.eos_id();
  return o;
}

namespace {

class SftData final : public TaskData {
 public:
  SftData(const recipe::Recipe& r, const tokenizer::Tokenizer& tok, recipe::Split eval_split, DataRank rank)
      : rank_(rank), seq_(r.data.seq_len), batch_(r.train.batch_size), seed_(static_cast<uint64_t>(r.run.seed)),
        packed_(r.data.packing) {
    const auto o = example_options(r, tok, template_);
    pad_ = std::max(0, tok.eos_id());
    auto all = read(r.data.train_files, tok, o, "data.train_files");
    if (all.empty())
      throw Error("data.train_files: no sft example with a token to score (" + note_ +
                  "): a longer data.seq_len, or train.loss_on: all, keeps more");
    if (!r.data.val_files.empty()) {
      train_ = std::move(all);
      val_ = read(r.data.val_files, tok, o, "data.val_files");
    } else {
      split_by_hash(std::move(all), r.data.val_fraction, seed_, train_, val_);
    }
    if (train_.empty()) throw Error("data: every sft example went to validation; lower data.val_fraction");
    if (eval_split == recipe::Split::Train) val_ = train_;
    train_rows_ = rows_of(train_, "training");
    val_rows_ = rows_of(val_, "validation");
    order_ = EpochOrder(train_rows_.size(), seed_);
  }

  Batch train_batch(uint64_t index) const override {
    std::vector<std::vector<const data::SftExample*>> rows;
    const uint64_t n = train_rows_.size();
    for (int64_t k = 0; k < batch_; ++k) {
      // Rank r's slice of the global batch of world x batch rows.
      const uint64_t global = (index * static_cast<uint64_t>(rank_.world) + static_cast<uint64_t>(rank_.rank)) *
                                  static_cast<uint64_t>(batch_) +
                              static_cast<uint64_t>(k);
      rows.push_back(row(train_, train_rows_[order_(global / n)[global % n]]));
    }
    return make(rows);
  }
  int64_t val_batches() const override { return (static_cast<int64_t>(val_rows_.size()) + batch_ - 1) / batch_; }
  Batch val_batch(int64_t index) const override {
    std::vector<std::vector<const data::SftExample*>> rows;
    for (int64_t k = index * batch_; k < std::min<int64_t>((index + 1) * batch_, val_rows_.size()); ++k)
      rows.push_back(row(val_, val_rows_[k]));
    return make(rows);
  }
  std::string notes() const override { return note_; }

 private:
  using Rows = std::vector<std::vector<std::size_t>>;

  std::vector<data::SftExample> read(const std::vector<std::string>& patterns, const tokenizer::Tokenizer& tok,
                                     const data::SftOptions& o, const char* key) {
    std::vector<data::SftExample> out;
    data::SftStats stats;
    for (const auto& path : io::expand_inputs(patterns)) {
      auto part = data::read_sft_examples(path, tok, o, stats);
      out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
    }
    note_ += fmt::format("{}sft {}: {} examples kept, {} tokens, {} of them scored", note_.empty() ? "" : "; ", key,
                         stats.examples, stats.tokens, stats.scored);
    if (stats.truncated) note_ += fmt::format(", {} of them cut to their first {} tokens (data.seq_len)", stats.truncated, seq_);
    if (stats.unscored)
      note_ += fmt::format("; {} more left out, with no token to score in their first {}", stats.unscored, seq_);
    return out;
  }

  /// One example per row, or the examples packed into rows of seq_len tokens.
  Rows rows_of(const std::vector<data::SftExample>& examples, const char* split) {
    Rows rows;
    if (!packed_) {
      for (std::size_t i = 0; i < examples.size(); ++i) rows.push_back({i});
      return rows;
    }
    std::vector<int64_t> lengths;
    for (const auto& e : examples) lengths.push_back(static_cast<int64_t>(e.ids.size()));
    rows = data::pack_examples(lengths, seq_);
    const auto tokens = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
    if (!rows.empty())
      note_ += fmt::format("; packed {} {} examples into {} rows of {} tokens: {:.1f}% real tokens", examples.size(),
                           split, rows.size(), seq_, 100.0 * static_cast<double>(tokens) /
                                                  static_cast<double>(static_cast<int64_t>(rows.size()) * seq_));
    return rows;
  }

  static std::vector<const data::SftExample*> row(const std::vector<data::SftExample>& examples,
                                                  const std::vector<std::size_t>& indices) {
    std::vector<const data::SftExample*> out;
    for (const auto i : indices) out.push_back(&examples[i]);
    return out;
  }

  Batch make(const std::vector<std::vector<const data::SftExample*>>& rows) const {
    auto b = data::collate_sft(rows, packed_ ? seq_ : 0, pad_, packed_);
    Batch out{b.input_ids, b.targets, {}, {}, b.tokens};
    out.segments = b.segments;
    return out;
  }

  DataRank rank_;
  int64_t seq_, batch_;
  uint64_t seed_;
  bool packed_;
  int32_t pad_ = 0;
  std::optional<tokenizer::ChatTemplate> template_;
  std::vector<data::SftExample> train_, val_;
  Rows train_rows_, val_rows_;
  std::string note_;
  EpochOrder order_{0, 0};
};

}  // namespace

std::unique_ptr<TaskData> make_sft_data(const recipe::Recipe& r, const tokenizer::Tokenizer& tok,
                                        recipe::Split eval_split, DataRank rank) {
  return std::make_unique<SftData>(r, tok, eval_split, rank);
}

}  // namespace lathe::train
