#include "lathe/pipeline/stages.hpp"

#include <fmt/format.h>

#include <chrono>

#include "lathe/core/error.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/trainer.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;

fs::path tokenizer_path(const recipe::Recipe& r) {
  return r.tokenizer.path.empty() ? fs::path(r.run.out_dir) / "tokenizer.json" : fs::path(r.tokenizer.path);
}

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

}  // namespace lathe::pipeline
