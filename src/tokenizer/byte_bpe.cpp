#include "lathe/tokenizer/byte_bpe.hpp"

#include <algorithm>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "json_file.hpp"

namespace lathe::tokenizer {
namespace {

std::atomic<uint64_t> next_uid{1};

/// Per-thread cache of word -> ids, one per vocabulary, bounded so memory stays flat.
struct WordCache {
  static constexpr std::size_t kMaxWords = 1 << 18;
  // Looked up by string_view: no allocation on a hit.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  uint64_t uid = 0;
  std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> words;
};

WordCache& cache_for(uint64_t uid) {
  thread_local WordCache cache;
  if (cache.uid != uid) {
    cache.words.clear();
    cache.uid = uid;
  }
  if (cache.words.size() >= WordCache::kMaxWords) cache.words.clear();
  return cache;
}

}  // namespace

const std::array<char32_t, 256>& byte_to_unicode() {
  // GPT-2: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards in order.
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

bool unicode_to_bytes(std::string_view spelled, std::string& bytes) {
  static const std::unordered_map<char32_t, unsigned char> inverse = [] {
    std::unordered_map<char32_t, unsigned char> m;
    for (int b = 0; b < 256; ++b) m[byte_to_unicode()[b]] = static_cast<unsigned char>(b);
    return m;
  }();
  bytes.clear();
  for (std::size_t i = 0; i < spelled.size();) {
    std::size_t len = 0;
    char32_t cp = decode_utf8(spelled, i, len);
    auto it = inverse.find(cp);
    if (it == inverse.end()) return false;
    bytes.push_back(static_cast<char>(it->second));
    i += len;
  }
  return true;
}

std::string bytes_to_spelling(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(out, byte_to_unicode()[b]);
  return out;
}

ByteBpe::ByteBpe(std::vector<std::string> tokens, std::vector<std::pair<int32_t, int32_t>> merges,
                 std::vector<int32_t> special, ByteBpeOptions options)
    : tokens_(std::move(tokens)), merges_(std::move(merges)), special_(std::move(special)), options_(options),
      uid_(next_uid++) {
  std::unordered_map<std::string_view, int32_t> by_bytes;
  std::vector<bool> is_special(tokens_.size(), false);
  for (int32_t id : special_) {
    if (id < 0 || id >= vocab_size()) throw Error("special token id " + std::to_string(id) + " is outside the vocabulary");
    is_special[id] = true;
  }
  std::vector<std::pair<std::string, int32_t>> specials;
  for (int32_t id : special_) specials.emplace_back(tokens_[id], id);
  matcher_ = detail::SpecialMatcher(std::move(specials));
  for (int32_t id = 0; id < vocab_size(); ++id) {
    spelled_to_id_.emplace(is_special[id] ? tokens_[id] : bytes_to_spelling(tokens_[id]), id);
    if (!is_special[id]) by_bytes.emplace(tokens_[id], id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = by_bytes.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
    if (it == by_bytes.end())
      throw Error("byte-level BPE vocabulary lacks the token for byte " + std::to_string(b) + " ('" +
                  bytes_to_spelling(std::string(1, static_cast<char>(b))) + "')");
    byte_id_[b] = it->second;
  }
  merge_map_.reserve(merges_.size() * 2);
  for (std::size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [a, b] = merges_[rank];
    auto it = by_bytes.find(tokens_.at(a) + tokens_.at(b));
    if (it == by_bytes.end())
      throw Error("merge " + std::to_string(rank + 1) + " ('" + bytes_to_spelling(tokens_[a]) + "' '" +
                  bytes_to_spelling(tokens_[b]) + "') makes a token that is not in the vocabulary");
    merge_map_.emplace((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b),
                       MergeInfo{static_cast<uint32_t>(rank), it->second});
  }
}

const ByteBpe::MergeInfo* ByteBpe::find_merge(int32_t a, int32_t b) const {
  auto it = merge_map_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
  return it == merge_map_.end() ? nullptr : &it->second;
}

void ByteBpe::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  // The lowest-ranked adjacent pair merges first, the leftmost among equals (as HF's heap).
  const std::size_t n = piece.size();
  if (n <= 48) {
    int32_t sym[48];
    std::size_t len = n;
    for (std::size_t i = 0; i < n; ++i) sym[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    while (len > 1) {
      uint32_t best = UINT32_MAX;
      std::size_t at = 0;
      int32_t merged = -1;
      for (std::size_t i = 0; i + 1 < len; ++i)
        if (const MergeInfo* m = find_merge(sym[i], sym[i + 1]); m && m->rank < best) {
          best = m->rank;
          at = i;
          merged = m->id;
        }
      if (merged < 0) break;
      sym[at] = merged;
      std::copy(sym + at + 2, sym + len, sym + at + 1);
      --len;
    }
    out.insert(out.end(), sym, sym + len);
    return;
  }
  // Long pieces: linked symbols and a heap of candidate merges, O(n log n).
  std::vector<int32_t> id(n), prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
    id[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    uint32_t rank;
    int32_t pos, left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const MergeInfo* m = find_merge(id[pos], id[next[pos]])) heap.push({m->rank, pos, id[pos], id[next[pos]]});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    const int32_t r = next[c.pos];
    if (!alive[c.pos] || r < 0 || id[c.pos] != c.left || id[r] != c.right) continue;  // stale
    id[c.pos] = find_merge(c.left, c.right)->id;
    alive[r] = false;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

void ByteBpe::encode_piece(std::string_view piece, std::size_t base, std::vector<int32_t>& ids,
                           std::vector<Offset>* offsets) const {
  const std::size_t first = ids.size();
  if (piece.size() == 1) {
    ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
  } else {
    WordCache& cache = cache_for(uid_);
    auto it = cache.words.find(piece);
    if (it != cache.words.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    } else {
      merge_word(piece, ids);
      cache.words.emplace(std::string(piece), std::vector<int32_t>(ids.begin() + first, ids.end()));
    }
  }
  if (offsets) {
    std::size_t at = base;
    for (std::size_t k = first; k < ids.size(); ++k) {
      offsets->emplace_back(at, at + tokens_[ids[k]].size());
      at += tokens_[ids[k]].size();
    }
  }
}

std::vector<int32_t> ByteBpe::encode(std::string_view text, std::vector<Offset>* offsets) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::string prefixed;
  // Special tokens are split off first; add_prefix_space then applies to each text segment
  // between them, as Hugging Face's ByteLevel pre-tokenizer does.
  auto encode_segment = [&](std::size_t from, std::size_t to) {
    std::string_view segment = text.substr(from, to - from);
    const bool shifted = options_.add_prefix_space && !segment.empty() && segment[0] != ' ';
    if (shifted) {
      prefixed.assign(1, ' ');
      prefixed.append(segment);
      segment = prefixed;
    }
    const std::size_t first_offset = offsets ? offsets->size() : 0;
    pretokenize_gpt2(segment, [&](std::size_t b, std::size_t e) {
      encode_piece(segment.substr(b, e - b), from + b, ids, offsets);
    });
    if (offsets && shifted)  // offsets refer to the caller's text, not the prefixed copy
      for (std::size_t k = first_offset; k < offsets->size(); ++k) {
        auto& [begin, end] = (*offsets)[k];
        begin = begin > from ? begin - 1 : from;
        end = end > from ? end - 1 : from;
      }
  };
  matcher_.split(text, encode_segment, [&](int32_t id, std::size_t from, std::size_t to) {
    ids.push_back(id);
    if (offsets) offsets->emplace_back(from, to);
  });
  return ids;
}

std::string ByteBpe::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                                                  std::to_string(vocab_size()) + ")");
    out += tokens_[id];
  }
  return out;
}

int32_t ByteBpe::token_to_id(std::string_view spelled) const {
  auto it = spelled_to_id_.find(std::string(spelled));
  return it == spelled_to_id_.end() ? -1 : it->second;
}

uint64_t ByteBpe::fingerprint() const {
  Fnv1a h;
  h.add("byte_bpe");
  h.add_u64(options_.add_prefix_space);
  for (const auto& t : tokens_) {
    h.add_u64(t.size());
    h.add(t);
  }
  for (auto [a, b] : merges_) h.add_u64((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
  for (int32_t id : special_) h.add_u64(static_cast<uint64_t>(id));
  return h.value();
}

// ------------------------------------------------------------------------------ files

ByteBpe ByteBpe::from_vocab_merges(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt) {
  const auto vocab = detail::read_json(vocab_json);
  if (!vocab.is_object()) throw Error(vocab_json.string() + ": expected a JSON object of token -> id");
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  std::vector<int32_t> special;
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer())
      throw Error(vocab_json.string() + ": token '" + it.key() + "': id is not an integer");
    const auto id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()) || seen[id])
      throw Error(vocab_json.string() + ": token '" + it.key() + "': id " + std::to_string(id) +
                  " is out of range or repeated (ids must be 0.." + std::to_string(tokens.size() - 1) + ")");
    seen[id] = true;
    if (unicode_to_bytes(it.key(), bytes)) {
      tokens[id] = bytes;
    } else {  // not byte-level spelled: an added token such as <|endoftext|> written verbatim
      tokens[id] = it.key();
      special.push_back(static_cast<int32_t>(id));
    }
  }
  std::unordered_map<std::string, int32_t> spelled;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) spelled.emplace(it.key(), it.value().get<int32_t>());
  // GPT-2's vocab.json spells <|endoftext|> in printable ASCII, which also reads as bytes: a
  // token longer than one byte that no merge produces is an added token (as GPT2Tokenizer
  // treats it), matched whole before splitting.
  std::ifstream in(merges_txt);
  if (!in) throw Error("cannot read merges file '" + merges_txt.string() + "'");
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::string line;
  std::vector<bool> made(tokens.size(), false);
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (lineno == 1 && line.starts_with("#version"))) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || line.find(' ', space + 1) != std::string::npos)
      throw Error(merges_txt.string() + ":" + std::to_string(lineno) + ": expected two tokens separated by one space, got '" +
                  line + "'");
    auto a = spelled.find(line.substr(0, space)), b = spelled.find(line.substr(space + 1)),
         ab = spelled.find(line.substr(0, space) + line.substr(space + 1));
    if (a == spelled.end() || b == spelled.end() || ab == spelled.end())
      throw Error(merges_txt.string() + ":" + std::to_string(lineno) + ": '" + line +
                  "' names a token that is not in " + vocab_json.filename().string());
    merges.emplace_back(a->second, b->second);
    made[ab->second] = true;
  }
  std::vector<int32_t> added;
  for (int32_t id = 0; id < static_cast<int32_t>(tokens.size()); ++id)
    if (std::find(special.begin(), special.end(), id) != special.end() || (tokens[id].size() > 1 && !made[id]))
      added.push_back(id);
  return ByteBpe(std::move(tokens), std::move(merges), std::move(added));
}

ByteBpe ByteBpe::from_tokenizer_json(const std::filesystem::path& path) {
  const auto j = detail::read_json(path);
  const auto& model = detail::member(j, "model", path);
  if (detail::member(model, "type", path) != "BPE") throw Error(path.string() + ": model.type is not BPE");
  const auto& vocab = detail::member(model, "vocab", path);
  std::vector<std::string> tokens;
  std::unordered_map<std::string, int32_t> spelled;
  int64_t size = static_cast<int64_t>(vocab.size());
  const auto* added_tokens = j.contains("added_tokens") && j["added_tokens"].is_array() ? &j["added_tokens"] : nullptr;
  if (added_tokens)
    for (const auto& t : *added_tokens) size = std::max<int64_t>(size, t.at("id").get<int64_t>() + 1);
  tokens.resize(size);
  std::vector<bool> seen(size, false);
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it.value().get<int64_t>();
    if (id < 0 || id >= size || seen[id])
      throw Error(path.string() + ": model.vocab: token '" + it.key() + "' has a bad or repeated id " + std::to_string(id));
    seen[id] = true;
    tokens[id] = unicode_to_bytes(it.key(), bytes) ? bytes : it.key();
    spelled.emplace(it.key(), static_cast<int32_t>(id));
  }
  std::vector<int32_t> special;
  if (added_tokens) {
    for (const auto& t : *added_tokens) {
      const auto id = t.at("id").get<int32_t>();
      tokens[id] = t.at("content").get<std::string>();
      seen[id] = true;
      special.push_back(id);
    }
  }
  for (int64_t id = 0; id < size; ++id)
    if (!seen[id]) throw Error(path.string() + ": no token has id " + std::to_string(id));
  std::vector<std::pair<int32_t, int32_t>> merges;
  const auto& jm = detail::member(model, "merges", path);
  for (std::size_t k = 0; k < jm.size(); ++k) {
    std::string a, b;
    if (jm[k].is_string()) {  // "a b" (tokenizers < 0.20)
      const auto s = jm[k].get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) throw Error(path.string() + ": model.merges[" + std::to_string(k) + "]: expected 'a b'");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (jm[k].is_array() && jm[k].size() == 2) {  // ["a", "b"]
      a = jm[k][0].get<std::string>();
      b = jm[k][1].get<std::string>();
    } else {
      throw Error(path.string() + ": model.merges[" + std::to_string(k) + "]: expected a pair of tokens");
    }
    auto ia = spelled.find(a), ib = spelled.find(b);
    if (ia == spelled.end() || ib == spelled.end())
      throw Error(path.string() + ": model.merges[" + std::to_string(k) + "]: '" + a + " " + b +
                  "' names a token that is not in model.vocab");
    merges.emplace_back(ia->second, ib->second);
  }
  ByteBpeOptions options;
  std::function<void(const nlohmann::json&)> find_prefix = [&](const nlohmann::json& p) {
    if (!p.is_object()) return;
    if (p.value("type", "") == "ByteLevel") options.add_prefix_space = p.value("add_prefix_space", false);
    if (p.contains("pretokenizers"))
      for (const auto& q : p["pretokenizers"]) find_prefix(q);
  };
  if (j.contains("pre_tokenizer")) find_prefix(j["pre_tokenizer"]);
  return ByteBpe(std::move(tokens), std::move(merges), std::move(special), options);
}

void ByteBpe::save(const std::filesystem::path& path) const {
  nlohmann::ordered_json j = detail::tokenizer_json_head(tokens_, special_);
  j["normalizer"] = nullptr;
  const nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                             {"add_prefix_space", options_.add_prefix_space},
                                             {"trim_offsets", true},
                                             {"use_regex", true}};
  j["pre_tokenizer"] = byte_level;
  j["post_processor"] = byte_level;
  j["decoder"] = byte_level;
  nlohmann::ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  std::vector<bool> is_special(tokens_.size(), false);
  for (int32_t id : special_) is_special[id] = true;
  for (int32_t id = 0; id < vocab_size(); ++id)
    vocab[is_special[id] ? tokens_[id] : bytes_to_spelling(tokens_[id])] = id;
  model["vocab"] = std::move(vocab);
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (auto [a, b] : merges_) merges.push_back({bytes_to_spelling(tokens_[a]), bytes_to_spelling(tokens_[b])});
  model["merges"] = std::move(merges);
  j["model"] = std::move(model);
  io::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace lathe::tokenizer
