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

int32_t Tokenizer::default_eos_id() const {
  const int32_t eot = token_to_id("<|endoftext|>");
  return eot >= 0 ? eot : token_to_id("[SEP]");
}

int32_t Tokenizer::eos_id() const { return eos_token_.empty() ? default_eos_id() : token_to_id(eos_token_); }

void Tokenizer::set_eos_token(const std::string& token) {
  if (!token.empty() && token_to_id(token) < 0)
    throw Error("the end-of-text token '" + token + "' is not a token of the tokenizer");
  eos_token_ = token;
}

uint64_t Tokenizer::with_eos(uint64_t fingerprint) const {
  if (eos_token_.empty() || eos_id() == default_eos_id()) return fingerprint;
  Fnv1a h;
  h.add_u64(fingerprint);
  h.add("eos");
  h.add_u64(static_cast<uint64_t>(eos_id()));
  return h.value();
}

namespace {

/// tokenizer_config.json's "eos_token" (a string, or an AddedToken object with "content"), or
/// empty when the file or the key is absent.
std::string config_eos_token(const std::filesystem::path& config) {
  if (!std::filesystem::exists(config)) return {};
  const auto j = detail::read_json(config);
  if (!j.is_object() || !j.contains("eos_token") || j["eos_token"].is_null()) return {};
  const auto& e = j["eos_token"];
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("content") && e["content"].is_string()) return e["content"].get<std::string>();
  throw Error(config.string() + ": eos_token: expected a string or an object with \"content\"");
}

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

namespace {

std::unique_ptr<Tokenizer> load_model(const std::filesystem::path& path, const LoadOptions& options) {
  namespace fs = std::filesystem;
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

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, const LoadOptions& options) {
  if (!std::filesystem::exists(path)) throw Error("tokenizer file '" + path.string() + "' does not exist");
  auto tok = load_model(path, options);
  if (!options.eos_token.empty()) {
    if (tok->token_to_id(options.eos_token) < 0)
      throw Error("the end-of-text token '" + options.eos_token + "' (tokenizer.eos_token) is not a token of " +
                  path.string() + "; name one of its special tokens, such as <|end_of_text|>, </s> or <|eot_id|>");
    tok->set_eos_token(options.eos_token);
  } else if (path.extension() != ".tiktoken") {
    // Hugging Face keeps the end-of-sequence token beside the vocabulary, not in it.
    const auto config = path.parent_path() / "tokenizer_config.json";
    std::string eos;
    try {
      eos = config_eos_token(config);
    } catch (const nlohmann::json::exception& e) {
      throw Error(config.string() + ": unexpected content: " + e.what());
    }
    if (!eos.empty() && tok->token_to_id(eos) < 0)
      throw Error(config.string() + ": eos_token '" + eos + "' is not a token of " + path.string());
    if (!eos.empty()) tok->set_eos_token(eos);
  }
  return tok;
}

}  // namespace lathe::tokenizer
