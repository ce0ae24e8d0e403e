// The tokenizer stage: checks tokenizer.path, or trains the recipe's tokenizer.

#include <chrono>

#include <fmt/format.h>

#include "lathe/io/inputs.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/trainer.hpp"
#include "lathe/train/run_dir.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {

StageResult run_tokenizer_stage(const recipe::Recipe& r, bool force, const Progress& progress) {
  const auto path = tokenizer_path(r);
  if (!r.tokenizer.path.empty()) {
    auto tok = tokenizer::load_tokenizer(path, train::tokenizer_load_options(r));
    return {true, fmt::format("using {} ({} tokens)", path.string(), tok->vocab_size())};
  }
  RunLock lock(r);
  const auto& sources = r.tokenizer.train_files.empty() ? r.data.train_files : r.tokenizer.train_files;
  const auto files = io::expand_inputs(sources);
  MadeFrom made_from = recipe_part(r, {"tokenizer.", "data.format", "data.jsonl_field"});
  add_files(made_from, files);
  const auto fresh = freshness(force, path, read_stage_record(r.run.out_dir, "tokenizer"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} was made from these inputs", path.string())};
  if (!fresh.diff.empty()) refuse_if_trained(r, "tokenizer", fresh.diff);
  check_not_input(r, {path});
  io::claim(path);  // before the training: a file of the user's there stops the stage at once
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<tokenizer::Tokenizer> trained;
  if (r.tokenizer.type == recipe::TokenizerType::Bpe) {
    tokenizer::BpeTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.pre_tokenizer = r.tokenizer.pre_tokenizer;
    o.threads = static_cast<int>(r.run.threads);
    o.format = r.data.format;
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::Bpe>(tokenizer::train_byte_bpe(files, o));
  } else {
    tokenizer::WordPieceTrainerOptions o;
    o.vocab_size = r.tokenizer.vocab_size;
    o.min_frequency = r.tokenizer.min_frequency;
    o.special_tokens = r.tokenizer.special_tokens;
    o.wordpiece.lowercase = o.wordpiece.strip_accents = r.tokenizer.lowercase;
    o.threads = static_cast<int>(r.run.threads);
    o.format = r.data.format;
    o.jsonl_field = r.data.jsonl_field;
    o.progress = progress;
    trained = std::make_unique<tokenizer::WordPiece>(tokenizer::train_wordpiece(files, o));
  }
  trained->save(path);
  write_stage_record(r.run.out_dir, "tokenizer", made_from);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {false, fmt::format("{}trained a {}-token {} tokenizer on {} file(s) in {:.1f} s -> {}", fresh.why(),
                             trained->vocab_size(),
                             recipe::enum_name(r.tokenizer.type), files.size(), s, path.string())};
}

}  // namespace lathe::pipeline
