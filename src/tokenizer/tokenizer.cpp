#include "lathe/tokenizer/tokenizer.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <exception>
#include <thread>

#include "json_file.hpp"
#include "lathe/core/error.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "lathe/tokenizer/wordpiece.hpp"

namespace lathe::tokenizer {

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int threads) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  std::size_t n = threads > 0 ? static_cast<std::size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  n = std::min(n, std::max<std::size_t>(1, texts.size()));
  if (n == 1) {
    for (std::size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i]);
    return out;
  }
  // Interleaved assignment keeps the threads evenly loaded when text lengths vary.
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < n; ++t)
    pool.emplace_back([&, t] {
      try {
        for (std::size_t i = t; i < texts.size(); i += n) out[i] = encode(texts[i]);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

namespace {

/// An uncased BERT vocabulary has no upper-case letter outside its [SPECIAL] tokens.
bool vocab_is_uncased(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  for (std::string line; std::getline(in, line);) {
    if (line.size() >= 2 && line.front() == '[' && line.back() == ']') continue;
    for (unsigned char c : line)
      if (c >= 'A' && c <= 'Z') return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, const LoadOptions& options) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw Error("tokenizer file '" + path.string() + "' does not exist");
  const auto name = path.filename().string();
  try {
    if (path.extension() == ".tiktoken") {
      TiktokenOptions o;
      o.pattern = options.pattern;
      for (const auto& t : options.special_tokens) o.special_tokens.emplace_back(t, -1);
      return std::make_unique<Bpe>(Bpe::from_tiktoken(path, o));
    }
    if (path.extension() == ".txt") {
      WordPieceOptions o;
      o.lowercase = options.lowercase ? *options.lowercase : vocab_is_uncased(path);
      return std::make_unique<WordPiece>(WordPiece::from_vocab_txt(path, o));
    }
    const auto j = detail::read_json(path);
    if (j.is_object() && j.contains("model")) {  // tokenizer.json
      const auto type = j["model"].value("type", "");
      if (type == "BPE") return std::make_unique<Bpe>(Bpe::from_tokenizer_json(path));
      if (type == "WordPiece") return std::make_unique<WordPiece>(WordPiece::from_tokenizer_json(path));
      throw Error(path.string() + ": model.type '" + type + "' is not supported (BPE or WordPiece)");
    }
    // vocab.json: merges.txt must sit beside it.
    const auto merges = path.parent_path() / "merges.txt";
    if (!fs::exists(merges))
      throw Error(path.string() + ": a vocab.json needs merges.txt beside it (" + merges.string() + " is missing)");
    return std::make_unique<Bpe>(Bpe::from_vocab_merges(path, merges));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": unexpected content: " + e.what());
  }
}

}  // namespace lathe::tokenizer
