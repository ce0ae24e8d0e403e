#include "lathe/pipeline/stages.hpp"

#include <fmt/format.h>

#include <chrono>

#include "lathe/core/error.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/trainer.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using recipe::shard_dir;
using recipe::tokenizer_path;

StageResult run_tokenizer_stage(const recipe::Recipe& r, bool force, const Progress& progress) {
  const auto path = tokenizer_path(r);
  if (!r.tokenizer.path.empty()) {
    auto tok = tokenizer::load_tokenizer(path, r.tokenizer.lowercase);
    return {true, fmt::format("using {} ({} tokens)", path.string(), tok->vocab_size())};
  }
  if (fs::exists(path) && !force) return {true, fmt::format("{} exists", path.string())};
  const auto& sources = r.tokenizer.train_files.empty() ? r.data.train_files : r.tokenizer.train_files;
  const auto files = io::expand_inputs(sources);
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<tokenizer::Tokenizer> trained;
  if (r.tokenizer.type == recipe::TokenizerType::ByteBpe) {
    tokenizer::BpeTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.threads = static_cast<int>(r.run.threads);
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::ByteBpe>(tokenizer::train_byte_bpe(files, o));
  } else {
    tokenizer::WordPieceTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.wordpiece.lowercase = o.wordpiece.strip_accents = r.tokenizer.lowercase;
    o.threads = static_cast<int>(r.run.threads);
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::WordPiece>(tokenizer::train_wordpiece(files, o));
  }
  trained->save(path);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {false, fmt::format("trained a {}-token {} tokenizer on {} file(s) in {:.1f} s -> {}", trained->vocab_size(),
                             recipe::enum_name(r.tokenizer.type), files.size(), s, path.string())};
}

StageResult run_data_stage(const recipe::Recipe& r, bool force, const Progress& progress) {
  const auto tok_path = tokenizer_path(r);
  if (!fs::exists(tok_path))
    throw Error("the data stage needs the tokenizer '" + tok_path.string() + "'; run the tokenizer stage first");
  const auto tok = tokenizer::load_tokenizer(tok_path, r.tokenizer.lowercase);
  const auto dir = shard_dir(r);
  if (!force && fs::exists(dir / "index.json")) {
    try {
      data::indexed_shards(dir, "train", *tok);
      return {true, fmt::format("{} holds shards of this tokenizer", dir.string())};
    } catch (const Error&) {
      // another tokenizer wrote them: prepare again
    }
  }
  data::PrepareOptions o;
  o.train_files = io::expand_inputs(r.data.train_files);
  if (!r.data.val_files.empty()) o.val_files = io::expand_inputs(r.data.val_files);
  o.val_fraction = r.data.val_fraction;
  o.format = r.data.format == recipe::DataFormat::Jsonl  ? data::InputFormat::Jsonl
             : r.data.format == recipe::DataFormat::Text ? data::InputFormat::Text
                                                         : data::InputFormat::Auto;
  o.jsonl_field = r.data.jsonl_field;
  o.shard_dir = dir;
  o.shard_tokens = static_cast<uint64_t>(r.data.shard_tokens);
  o.seed = static_cast<uint64_t>(r.run.seed);
  o.threads = static_cast<int>(r.run.threads);
  o.progress = progress;
  const auto rep = data::prepare_shards(*tok, o);
  return {false, fmt::format("{:.1f} MB -> {} train tokens ({} documents, {} shard(s)), {} val tokens ({} documents) "
                             "in {:.1f} s ({:.1f} MB/s) -> {}",
                             static_cast<double>(rep.bytes) / 1e6, rep.train_tokens, rep.train_documents,
                             rep.train_shards.size(), rep.val_tokens, rep.val_documents, rep.seconds,
                             rep.seconds > 0 ? static_cast<double>(rep.bytes) / 1e6 / rep.seconds : 0.0, dir.string())};
}

}  // namespace lathe::pipeline
