#include "lathe/tokenizer/trainer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "lathe/core/error.hpp"
#include "lathe/io/inputs.hpp"

namespace lathe::tokenizer {
namespace {

using WordCounts = std::unordered_map<std::string, int64_t>;

/// Counts the pieces of `text`: GPT-2's rule, or the matches of `split` and the text between
/// them (a Split pre-tokenizer with behavior Isolated).
void count_words(std::string_view text, const Regex* split, WordCounts& counts) {
  auto add = [&](std::size_t b, std::size_t e) { ++counts[std::string(text.substr(b, e - b))]; };
  if (!split) return pretokenize_gpt2(text, add);
  split->for_each_piece(text, add);
}

/// Counts the words of `texts` on several threads and merges the per-thread tables.
WordCounts count_all(const std::vector<std::string>& texts, const Regex* split, int threads) {
  std::size_t n = threads > 0 ? static_cast<std::size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  n = std::max<std::size_t>(1, std::min(n, texts.size()));
  std::vector<WordCounts> partial(n);
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < n; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < texts.size(); i += n) count_words(texts[i], split, partial[t]);
    });
  for (auto& th : pool) th.join();
  WordCounts total = std::move(partial[0]);
  for (std::size_t t = 1; t < n; ++t)
    for (auto& [w, c] : partial[t]) total[w] += c;
  return total;
}

uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

struct Candidate {
  int64_t count;
  int32_t a, b;
  // Max-heap on count; among equal counts the smaller pair comes first.
  bool operator<(const Candidate& o) const {
    if (count != o.count) return count < o.count;
    return std::pair(a, b) > std::pair(o.a, o.b);
  }
};

}  // namespace

std::vector<std::pair<int32_t, int32_t>> learn_merges(std::vector<std::string>& tokens,
                                                      std::vector<std::vector<int32_t>> words,
                                                      const std::vector<int64_t>& freq, const MergeOptions& o) {
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::unordered_set<uint32_t>> where;
  for (uint32_t w = 0; w < words.size(); ++w)
    for (std::size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t k = key(words[w][i], words[w][i + 1]);
      pair_count[k] += freq[w];
      where[k].insert(w);
    }
  std::priority_queue<Candidate> queue;
  for (const auto& [k, c] : pair_count)
    if (c > 0) queue.push({c, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xffffffff)});

  std::unordered_map<std::string, int32_t> token_id;
  for (int32_t id = 0; id < static_cast<int32_t>(tokens.size()); ++id) token_id.emplace(tokens[id], id);
  std::vector<std::pair<int32_t, int32_t>> merges;
  const int64_t target_merges = o.vocab_size - static_cast<int64_t>(tokens.size());
  while (static_cast<int64_t>(tokens.size()) < o.vocab_size && !queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    const uint64_t k = key(top.a, top.b);
    const int64_t current = pair_count[k];
    if (top.count != current) {  // stale entry: requeue with the live count
      if (current > 0) queue.push({current, top.a, top.b});
      continue;
    }
    if (top.count < 1 || top.count < o.min_frequency) break;

    // The right part loses its continuation prefix: "ab" + "##c" -> "abc".
    std::string right = tokens[top.b];
    if (!o.prefix.empty() && right.starts_with(o.prefix)) right.erase(0, o.prefix.size());
    std::string merged = tokens[top.a] + right;
    int32_t new_id;
    if (auto it = token_id.find(merged); it != token_id.end()) {
      new_id = it->second;
    } else {
      new_id = static_cast<int32_t>(tokens.size());
      tokens.push_back(merged);
      token_id.emplace(std::move(merged), new_id);
    }
    merges.emplace_back(top.a, top.b);
    pair_count[k] = 0;

    std::unordered_map<uint64_t, std::unordered_set<uint32_t>> touched;
    auto change = [&](int32_t a, int32_t b, int64_t delta, uint32_t w) {
      const uint64_t pk = key(a, b);
      pair_count[pk] += delta;
      if (delta > 0) {
        where[pk].insert(w);
        touched[pk].insert(w);
      }
    };
    for (uint32_t w : where[k]) {
      auto& s = words[w];
      for (std::size_t i = 0; i + 1 < s.size(); ++i) {
        if (s[i] != top.a || s[i + 1] != top.b) continue;
        if (i > 0) {
          change(s[i - 1], top.a, -freq[w], w);
          change(s[i - 1], new_id, freq[w], w);
        }
        s[i] = new_id;
        s.erase(s.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        if (i + 1 < s.size()) {
          change(top.b, s[i + 1], -freq[w], w);
          change(new_id, s[i + 1], freq[w], w);
        }
      }
    }
    where.erase(k);
    for (const auto& [pk, ws] : touched)
      if (int64_t c = pair_count[pk]; c > 0)
        queue.push({c, static_cast<int32_t>(pk >> 32), static_cast<int32_t>(pk & 0xffffffff)});
    if (o.progress && (merges.size() % 500 == 0)) o.progress("merges", static_cast<int64_t>(merges.size()), target_merges);
  }
  if (o.progress) o.progress("merges", static_cast<int64_t>(merges.size()), target_merges);
  return merges;
}

namespace {

Bpe train_from_counts(const WordCounts& counts, const BpeTrainerOptions& o, const Pipeline& pipeline) {
  if (counts.empty()) throw Error("cannot train a tokenizer on an empty corpus");
  std::vector<std::string> tokens;
  std::vector<int32_t> special;
  for (const auto& s : o.special_tokens) {
    special.push_back(static_cast<int32_t>(tokens.size()));
    tokens.push_back(s);
  }
  // The alphabet: all 256 bytes, ordered by the code point that spells them (HF's order).
  std::array<int32_t, 256> byte_id{};
  std::vector<int> order(256);
  for (int b = 0; b < 256; ++b) order[b] = b;
  std::sort(order.begin(), order.end(), [](int x, int y) { return byte_to_unicode()[x] < byte_to_unicode()[y]; });
  for (int b : order) {
    byte_id[b] = static_cast<int32_t>(tokens.size());
    tokens.emplace_back(1, static_cast<char>(b));
  }
  if (o.vocab_size < static_cast<int64_t>(tokens.size()))
    throw Error("vocab_size " + std::to_string(o.vocab_size) + " is smaller than the 256 byte symbols plus " +
                std::to_string(special.size()) + " special tokens");

  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  words.reserve(counts.size());
  for (const auto& [w, c] : counts) {
    std::vector<int32_t> sym;
    for (unsigned char ch : w) sym.push_back(byte_id[ch]);
    words.push_back(std::move(sym));
    freq.push_back(c);
  }
  auto merges = learn_merges(tokens, std::move(words), freq, {o.vocab_size, o.min_frequency, "", o.progress});
  return Bpe(std::move(tokens), std::move(merges), std::move(special), {}, pipeline);
}

}  // namespace

Bpe train_byte_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options) {
  Pipeline pipeline;
  try {
    pipeline = pipeline_for_pre_tokenizer(options.pre_tokenizer);
  } catch (const Error& e) {
    throw Error("tokenizer.pre_tokenizer: " + std::string(e.what()));
  }
  return train_from_counts(count_all(texts, pipeline.split_pattern(), options.threads), options, pipeline);
}

namespace {

/// Every text of the corpus: the lines of text files, the records of JSONL files (io::read_texts,
/// the reader the data stage uses too, with the same format decision).
std::vector<std::string> read_training_texts(const std::vector<std::filesystem::path>& files, io::InputFormat format,
                                             const std::string& jsonl_field) {
  std::vector<std::string> texts;
  int64_t bytes = 0;
  io::read_texts(files, format, jsonl_field, [&](std::string&& text) {
    bytes += static_cast<int64_t>(text.size());
    texts.push_back(std::move(text));
  });
  if (bytes == 0) {
    std::string names;
    for (const auto& f : files) names += (names.empty() ? "" : ", ") + f.string();
    throw Error("cannot train a tokenizer on an empty corpus (" + (names.empty() ? "no files" : names) + ")");
  }
  return texts;
}

}  // namespace

Bpe train_byte_bpe(const std::vector<std::filesystem::path>& files, const BpeTrainerOptions& options) {
  return train_byte_bpe(read_training_texts(files, options.format, options.jsonl_field), options);
}

WordPiece train_wordpiece(const std::vector<std::filesystem::path>& files, const WordPieceTrainerOptions& options) {
  return train_wordpiece(read_training_texts(files, options.format, options.jsonl_field), options);
}

WordPiece train_wordpiece(const std::vector<std::string>& texts, const WordPieceTrainerOptions& o) {
  const auto& unk = o.wordpiece.unk_token;
  if (std::find(o.special_tokens.begin(), o.special_tokens.end(), unk) == o.special_tokens.end())
    throw Error("WordPiece training needs the unknown token '" + unk + "' among the special tokens");
  // A WordPiece with only the specials normalises and splits the corpus into words.
  std::vector<int32_t> special_ids;
  for (std::size_t i = 0; i < o.special_tokens.size(); ++i) special_ids.push_back(static_cast<int32_t>(i));
  const WordPiece splitter(o.special_tokens, special_ids, o.wordpiece);
  std::size_t n = o.threads > 0 ? static_cast<std::size_t>(o.threads) : std::max(1u, std::thread::hardware_concurrency());
  n = std::max<std::size_t>(1, std::min(n, texts.size()));
  std::vector<std::unordered_map<std::u32string, int64_t>> partial(n);
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < n; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < texts.size(); i += n)
        splitter.split_words(texts[i], [&](const std::u32string& w, std::size_t, std::size_t) { ++partial[t][w]; });
    });
  for (auto& th : pool) th.join();
  auto counts = std::move(partial[0]);
  for (std::size_t t = 1; t < n; ++t)
    for (auto& [w, c] : partial[t]) counts[w] += c;
  if (counts.empty()) throw Error("cannot train a tokenizer on an empty corpus");

  // Deterministic order of words (HF iterates a hash map; the order only affects tie-breaks).
  std::vector<std::pair<std::u32string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> tokens = o.special_tokens;
  std::vector<char32_t> alphabet;
  for (const auto& [w, c] : sorted) alphabet.insert(alphabet.end(), w.begin(), w.end());
  std::sort(alphabet.begin(), alphabet.end());
  alphabet.erase(std::unique(alphabet.begin(), alphabet.end()), alphabet.end());
  std::unordered_map<std::string, int32_t> id_of;
  for (int32_t id = 0; id < static_cast<int32_t>(tokens.size()); ++id) id_of.emplace(tokens[id], id);
  auto intern = [&](const std::string& s) {
    auto [it, fresh] = id_of.emplace(s, static_cast<int32_t>(tokens.size()));
    if (fresh) tokens.push_back(s);
    return it->second;
  };
  for (char32_t c : alphabet) {
    std::string s;
    append_utf8(s, c);
    intern(s);
  }
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [w, c] : sorted) {
    std::vector<int32_t> sym;
    for (std::size_t i = 0; i < w.size(); ++i) {
      std::string s = i > 0 ? o.wordpiece.prefix : std::string();
      append_utf8(s, w[i]);
      sym.push_back(intern(s));
    }
    words.push_back(std::move(sym));
    freq.push_back(c);
  }
  learn_merges(tokens, std::move(words), freq, {o.vocab_size, o.min_frequency, o.wordpiece.prefix, o.progress});
  return WordPiece(std::move(tokens), std::move(special_ids), o.wordpiece);
}

}  // namespace lathe::tokenizer
