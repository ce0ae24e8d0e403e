// A chat tokenizer and conversations from the sft reference (tests/reference/sft_reference.py),
// for the tests that fine-tune on conversations.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "support.hpp"

namespace lathe::test {

/// The sft reference's tokenizer (ChatML specials, a template with {% generation %} blocks) and
/// its conversations, made once per test.
struct ChatFixture {
  TempDir dir;
  std::filesystem::path corpus, conversations;
  ChatFixture() {
    std::ifstream in(lathe::test::source_dir() / "data/kjv/kjv.txt");
    std::string s, line;
    for (int i = 0; i < 3000 && std::getline(in, line); ++i) s += line + "\n";
    corpus = dir.write("corpus.txt", s);
    conversations = dir.path() / "conversations.jsonl";
    lathe::test::run_reference("sft_reference.py", {"tokenizer", dir.path().string(), corpus.string()});
    lathe::test::run_reference("sft_reference.py", {"conversations", conversations.string(), "50", "3"});
  }
  std::filesystem::path tokenizer() const { return dir.path() / "tokenizer.json"; }
};

}  // namespace lathe::test
