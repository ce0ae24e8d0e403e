// A small corpus and GPT recipe for the tests that run stages (train, prune, export).
#pragma once

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "support.hpp"

namespace lathe::test {

inline lathe::recipe::Recipe recipe_from(const std::string& yaml) {
  return lathe::recipe::parse_recipe(yaml, "test.yaml");
}

/// A small corpus (the first 4000 lines of the bundled KJV text) for tests that run stages.
struct Corpus {
  TempDir dir;
  std::filesystem::path text;
  Corpus() {
    std::ifstream in(lathe::test::source_dir() / "data/kjv/kjv.txt");
    REQUIRE(in);
    std::string s, line;
    for (int i = 0; i < 4000 && std::getline(in, line); ++i) s += line + "\n";
    text = dir.write("corpus.txt", s);
  }
  /// A GPT recipe over this corpus; `extra` is appended (YAML, later keys win via --set-like merge).
  std::string recipe(const std::filesystem::path& out, const std::string& train, const std::string& more = "") const {
    return fmt::format(R"(pipeline: [tokenizer, data, train]
run: {{out_dir: {}, seed: 5, device: cpu}}
tokenizer: {{type: byte_bpe, vocab_size: 400}}
data: {{train_files: [{}], seq_len: 32, val_fraction: 0.1, num_workers: 1}}
model: {{n_layer: 2, n_head: 2, d_model: 32, max_seq_len: 32}}
optim: {{lr: 2.0e-3}}
schedule: {{warmup_steps: 2}}
train: {{{}}}
{})",
                       out.string(), text.string(), train, more);
  }
};

inline lathe::recipe::Recipe prepared(const std::string& yaml) {
  auto r = recipe_from(yaml);
  lathe::pipeline::run_tokenizer_stage(r, false);
  lathe::pipeline::run_data_stage(r, false);
  return r;
}

}  // namespace lathe::test
