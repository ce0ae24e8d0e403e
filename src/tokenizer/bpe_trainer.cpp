#include "lathe/tokenizer/bpe_trainer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer {
namespace {

using WordCounts = std::unordered_map<std::string, int64_t>;

void count_words(std::string_view text, WordCounts& counts) {
  pretokenize_gpt2(text, [&](std::size_t b, std::size_t e) { ++counts[std::string(text.substr(b, e - b))]; });
}

/// Counts the words of `texts` on several threads and merges the per-thread tables.
WordCounts count_all(const std::vector<std::string>& texts, int threads) {
  std::size_t n = threads > 0 ? static_cast<std::size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  n = std::max<std::size_t>(1, std::min(n, texts.size()));
  std::vector<WordCounts> partial(n);
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < n; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < texts.size(); i += n) count_words(texts[i], partial[t]);
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

ByteBpe train_from_counts(const WordCounts& counts, const BpeTrainerOptions& o) {
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

    std::string merged = tokens[top.a] + tokens[top.b];
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
      if (int64_t c = pair_count[pk]; c > 0) queue.push({c, static_cast<int32_t>(pk >> 32), static_cast<int32_t>(pk & 0xffffffff)});
    if (o.progress && (merges.size() % 500 == 0)) o.progress("merges", static_cast<int64_t>(merges.size()), target_merges);
  }
  if (o.progress) o.progress("merges", static_cast<int64_t>(merges.size()), target_merges);
  return ByteBpe(std::move(tokens), std::move(merges), std::move(special));
}

}  // namespace

ByteBpe train_byte_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options) {
  return train_from_counts(count_all(texts, options.threads), options);
}

ByteBpe train_byte_bpe(const std::vector<std::filesystem::path>& files, const BpeTrainerOptions& options) {
  std::vector<std::string> texts;
  std::string names;
  int64_t bytes = 0;
  for (const auto& f : files) {
    names += (names.empty() ? "" : ", ") + f.string();
    std::ifstream in(f, std::ios::binary);
    if (!in) throw Error("cannot read training file '" + f.string() + "'");
    const bool jsonl = f.extension() == ".jsonl" || f.extension() == ".json";
    std::string line;
    for (int lineno = 1; std::getline(in, line); ++lineno) {
      if (jsonl) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
          auto j = nlohmann::json::parse(line);
          if (!j.contains(options.jsonl_field) || !j[options.jsonl_field].is_string())
            throw Error(f.string() + ":" + std::to_string(lineno) + ": no string field '" + options.jsonl_field + "'");
          texts.push_back(j[options.jsonl_field].get<std::string>());
        } catch (const nlohmann::json::exception& e) {
          throw Error(f.string() + ":" + std::to_string(lineno) + ": invalid JSON: " + e.what());
        }
      } else {
        texts.push_back(line + "\n");
      }
      bytes += static_cast<int64_t>(texts.back().size());
    }
  }
  if (bytes == 0) throw Error("cannot train a tokenizer on an empty corpus (" + (names.empty() ? "no files" : names) + ")");
  if (options.progress) options.progress("read bytes", bytes, bytes);
  return train_byte_bpe(texts, options);
}

}  // namespace lathe::tokenizer
