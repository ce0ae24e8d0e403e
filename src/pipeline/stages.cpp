#include "lathe/pipeline/stages.hpp"

#include <fmt/format.h>

#include <chrono>

#include "lathe/core/error.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/bpe_trainer.hpp"

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
  if (r.tokenizer.type != recipe::TokenizerType::ByteBpe)
    throw Error("training a " + std::string(recipe::enum_name(r.tokenizer.type)) +
                " tokenizer is not available in this build; set tokenizer.path to an existing vocab.txt or "
                "tokenizer.json");
  const auto& sources = r.tokenizer.train_files.empty() ? r.data.train_files : r.tokenizer.train_files;
  const auto files = io::expand_inputs(sources);
  tokenizer::BpeTrainerOptions o;
  o.vocab_size = r.tokenizer.vocab_size;
  o.min_frequency = r.tokenizer.min_frequency;
  o.special_tokens = r.tokenizer.special_tokens;
  o.threads = static_cast<int>(r.run.threads);
  o.jsonl_field = r.data.jsonl_field;
  o.progress = progress;
  const auto start = std::chrono::steady_clock::now();
  auto bpe = tokenizer::train_byte_bpe(files, o);
  bpe.save(path);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {false, fmt::format("trained a {}-token byte-level BPE on {} file(s) in {:.1f} s -> {}", bpe.vocab_size(),
                             files.size(), s, path.string())};
}

}  // namespace lathe::pipeline
