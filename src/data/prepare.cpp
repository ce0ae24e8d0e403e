#include "lathe/io/json_file.hpp"
#include "lathe/data/prepare.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <memory>
#include <regex>

#include "lathe/core/error.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/data/shard.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/io/ownership.hpp"

namespace lathe::data {
namespace fs = std::filesystem;


namespace {

/// Writes a split's shards, starting a new file every shard_tokens tokens.
class SplitWriter {
 public:
  SplitWriter(fs::path dir, std::string split, const tokenizer::Tokenizer& tok, uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), tok_(tok), shard_tokens_(shard_tokens) {}

  void add(const std::vector<int32_t>& ids, int32_t eot) {
    buffer_ = ids;
    buffer_.push_back(eot);
    std::size_t at = 0;
    while (at < buffer_.size()) {
      if (!writer_) open();
      const std::size_t take = std::min<std::size_t>(buffer_.size() - at, shard_tokens_ - writer_->count());
      writer_->append(std::span<const int32_t>(buffer_.data() + at, take));
      at += take;
      tokens_ += take;
      if (writer_->count() >= shard_tokens_) close();
    }
    ++documents_;
  }
  void close() {
    if (!writer_) return;
    writer_->finish();
    writer_.reset();
  }
  const std::vector<fs::path>& shards() const { return shards_; }
  uint64_t tokens() const { return tokens_; }
  uint64_t documents() const { return documents_; }

 private:
  void open() {
    shards_.push_back(dir_ / fmt::format("{}_{:06d}.bin", split_, shards_.size()));
    io::claim(shards_.back());
    io::claim(fs::path(shards_.back()) += ".partial");  // ShardWriter writes there first
    writer_ = std::make_unique<ShardWriter>(shards_.back(), static_cast<uint32_t>(tok_.vocab_size()), tok_.fingerprint());
  }

  fs::path dir_;
  std::string split_;
  const tokenizer::Tokenizer& tok_;
  uint64_t shard_tokens_;
  std::unique_ptr<ShardWriter> writer_;
  std::vector<fs::path> shards_;
  std::vector<int32_t> buffer_;
  uint64_t tokens_ = 0, documents_ = 0;
};

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

bool is_shard_name(const std::string& name) {
  static const std::regex pattern(R"((train|val)_[0-9]{6,}\.bin(\.partial)?)");
  return std::regex_match(name, pattern);
}

PrepareReport prepare_shards(const tokenizer::Tokenizer& tok, const PrepareOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const int32_t eot = tok.eos_id();
  if (eot < 0)
    throw Error("the tokenizer has no end-of-text token (<|endoftext|> or [SEP]) to put between documents; name "
                "one with tokenizer.eos_token (e.g. <|end_of_text|>, </s>, <|eot_id|>)");
  if (o.shard_tokens == 0) throw Error("shard_tokens must be positive");
  fs::create_directories(o.shard_dir);
  // Every name this stage may write is checked before anything is written: a file of the user's
  // with a shard's name stops the stage. Then the shards of an earlier prepare (those lathe's
  // manifest lists) go, the index first, so they are never mistaken for this run's.
  for (const auto& e : fs::directory_iterator(o.shard_dir))
    if (is_shard_name(e.path().filename().string())) io::check_claimable(e.path());
  io::check_claimable(o.shard_dir / "index.json");
  PrepareReport report;
  if (io::remove_owned(o.shard_dir / "index.json")) report.removed.push_back(o.shard_dir / "index.json");
  for (const auto& p : io::owned_entries(o.shard_dir))
    if (is_shard_name(p.filename().string()) && io::remove_owned(p)) report.removed.push_back(p);

  SplitWriter train(o.shard_dir, "train", tok, o.shard_tokens), val(o.shard_dir, "val", tok, o.shard_tokens);
  uint64_t total_bytes = 0;
  for (const auto& f : o.train_files) total_bytes += fs::file_size(f);
  for (const auto& f : o.val_files) total_bytes += fs::file_size(f);

  std::vector<std::string> batch;
  std::vector<bool> batch_val;
  uint64_t index = 0;
  auto flush = [&] {
    auto ids = tok.encode_batch(batch, o.threads);
    for (std::size_t i = 0; i < ids.size(); ++i) (batch_val[i] ? val : train).add(ids[i], eot);
    batch.clear();
    batch_val.clear();
    if (o.progress) o.progress("data", static_cast<int64_t>(report.bytes), static_cast<int64_t>(total_bytes));
  };
  auto add = [&](std::string&& text, bool to_val) {
    report.bytes += text.size();
    batch.push_back(std::move(text));
    batch_val.push_back(to_val);
    if (batch.size() >= 4096) flush();
  };
  read_documents(o.train_files, o.format, o.jsonl_field, [&](std::string&& d) {
    // Hash of (seed, document index) decides the split: stable under re-runs and thread counts.
    const double u = static_cast<double>(splitmix64(o.seed ^ splitmix64(index++)) >> 11) * 0x1.0p-53;
    add(std::move(d), o.val_files.empty() && u < o.val_fraction);
  });
  read_documents(o.val_files, o.format, o.jsonl_field, [&](std::string&& d) { add(std::move(d), true); });
  flush();
  if (o.progress) o.progress("data", static_cast<int64_t>(total_bytes), static_cast<int64_t>(total_bytes));
  train.close();
  val.close();
  if (train.tokens() == 0) throw Error("the training files hold no documents");

  nlohmann::ordered_json j;
  j["version"] = 1;
  j["fingerprint"] = hex(tok.fingerprint());
  j["vocab_size"] = tok.vocab_size();
  j["eot"] = eot;
  if (!o.made_from.is_null()) j["made_from"] = o.made_from;
  for (auto* split : {&train, &val}) {
    auto& entry = j[split == &train ? "train" : "val"];
    entry["documents"] = split->documents();
    entry["tokens"] = split->tokens();
    entry["shards"] = nlohmann::ordered_json::array();
    for (const auto& s : split->shards()) entry["shards"].push_back(s.filename().string());
  }
  io::claim(o.shard_dir / "index.json");
  io::write_file_atomic(o.shard_dir / "index.json", j.dump(2) + "\n");

  report.train_shards = train.shards();
  report.val_shards = val.shards();
  report.train_tokens = train.tokens();
  report.val_tokens = val.tokens();
  report.train_documents = train.documents();
  report.val_documents = val.documents();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::vector<fs::path> indexed_shards(const fs::path& dir, const std::string& split, const tokenizer::Tokenizer& tok) {
  const auto index = dir / "index.json";
  if (!fs::exists(index)) throw Error("no prepared data in '" + dir.string() + "' (index.json is missing); run the data stage");
  const nlohmann::json j = io::read_json(index);
  if (j.value("fingerprint", "") != hex(tok.fingerprint()))
    throw Error(index.string() + ": the shards were written by another tokenizer (fingerprint " +
                j.value("fingerprint", "?") + ", this run's tokenizer " + hex(tok.fingerprint()) +
                "); run the data stage again with --force");
  std::vector<fs::path> shards;
  if (j.contains(split))
    for (const auto& name : j[split].value("shards", nlohmann::json::array())) shards.push_back(dir / name.get<std::string>());
  return shards;
}

}  // namespace lathe::data
