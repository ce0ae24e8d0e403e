#include "lathe/tokenizer/bpe.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "components/byte_level.hpp"
#include "json_file.hpp"
#include "short_key_map.hpp"

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

namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

}  // namespace

Bpe::Bpe(std::vector<std::string> tokens, std::vector<std::pair<int32_t, int32_t>> merges, std::vector<int32_t> special,
         BpeOptions options, Pipeline pipeline)
    : tokens_(std::move(tokens)), merges_(std::move(merges)), special_(std::move(special)), options_(std::move(options)),
      pipeline_(std::move(pipeline)), uid_(next_uid++) {
  choose_route();
  index_vocabulary(index_special_tokens());
  index_bytes();
  if (options_.merge_by_rank)
    index_merges_by_rank();
  else
    index_merges();
}

void Bpe::choose_route() {
  const ByteLevelPreTokenizer* byte_level = pipeline_.byte_level();
  byte_level_ = byte_level != nullptr;
  plain_decode_ = byte_level_ && pipeline_.decoder && pipeline_.decoder->to_json().value("type", "") == "ByteLevel";
  route_ = Route::General;
  if (byte_level_ && !pipeline_.normalizer) {
    if (pipeline_.pre_tokenizer.get() == byte_level && byte_level->use_regex) {
      route_ = Route::Gpt2;
      add_prefix_space_ = byte_level->add_prefix_space;
    } else if ((split_ = pipeline_.split_pattern())) {
      route_ = Route::Regex;
    }
  }
  if (byte_level_ && (!options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty()))
    throw Error("BPE: continuing_subword_prefix / end_of_word_suffix are not supported with a ByteLevel pre-tokenizer");
}

std::vector<bool> Bpe::index_special_tokens() {
  std::vector<bool> is_special(tokens_.size(), false);
  for (int32_t id : special_) {
    if (id < 0 || id >= vocab_size()) throw Error("special token id " + std::to_string(id) + " is outside the vocabulary");
    is_special[id] = true;
  }
  if (!options_.special_flags.empty() && options_.special_flags.size() != special_.size())
    throw Error("BPE: special_flags must give the flags of each special token");
  std::vector<detail::SpecialMatcher::Entry> raw, normalized;
  for (std::size_t k = 0; k < special_.size(); ++k) {
    const int32_t id = special_[k];
    const AddedTokenFlags flags = options_.special_flags.empty() ? AddedTokenFlags{} : options_.special_flags[k];
    if (!flags.normalized) {
      raw.push_back({tokens_[id], id, flags});
      continue;
    }
    TextPiece content = TextPiece::of(tokens_[id], 0);
    if (pipeline_.normalizer) pipeline_.normalizer->normalize(content);
    if (content.text != tokens_[id]) decoded_as_.emplace(id, content.text);
    normalized.push_back({content.text, id, flags});
  }
  matcher_ = detail::SpecialMatcher(std::move(raw));
  normalized_matcher_ = detail::SpecialMatcher(std::move(normalized));
  return is_special;
}

void Bpe::index_vocabulary(const std::vector<bool>& is_special) {
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (is_special[id]) {
      spelled_to_id_.emplace(tokens_[id], id);
      continue;
    }
    if (tokens_[id].empty()) continue;  // an unused id
    spelled_to_id_.emplace(byte_level_ ? bytes_to_spelling(tokens_[id]) : tokens_[id], id);
    model_vocab_.emplace(tokens_[id], id);
  }
  auto short_vocab = std::make_shared<detail::ShortKeyMap>(model_vocab_.size());
  for (int32_t id = 0; id < vocab_size(); ++id)
    if (auto it = model_vocab_.find(tokens_[id]); it != model_vocab_.end() && it->second == id)
      short_vocab->insert(tokens_[id], id);
  short_vocab_ = std::move(short_vocab);
}

void Bpe::index_bytes() {
  if (byte_level_) {
    for (int b = 0; b < 256; ++b) {
      const int32_t id = model_token(std::string_view(reinterpret_cast<const char*>(&b), 1));
      if (id < 0)
        throw Error("byte-level BPE vocabulary lacks the token for byte " + std::to_string(b) + " ('" +
                    bytes_to_spelling(std::string(1, static_cast<char>(b))) + "')");
      byte_id_[b] = id;
    }
    return;
  }
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    fallback_id_[b] = model_token(name);
  }
  if (!options_.unk_token.empty() && (unk_id_ = token_to_id(options_.unk_token)) < 0)
    throw Error("BPE: unk_token '" + options_.unk_token + "' is not in the vocabulary");
}

void Bpe::index_merges_by_rank() {
  // tiktoken: any two tokens whose concatenation is a token merge, ranked by that token.
  std::vector<std::array<int32_t, 3>> pairs;  // (rank, left, right)
  for (const auto& [bytes, id] : model_vocab_)
    for (std::size_t k = 1; k < bytes.size(); ++k) {
      const int32_t a = model_token(std::string_view(bytes).substr(0, k));
      const int32_t b = model_token(std::string_view(bytes).substr(k));
      if (a >= 0 && b >= 0) pairs.push_back({id, a, b});
    }
  merge_map_.reserve(pairs.size() * 2);
  for (const auto& [id, a, b] : pairs) merge_map_.emplace(pair_key(a, b), MergeInfo{static_cast<uint32_t>(id), id});
  if (merges_.empty()) {
    // The merge list a tokenizer.json needs: every such pair, by the rank of the token it
    // makes, then by the ranks of its parts (as transformers converts tiktoken files).
    std::sort(pairs.begin(), pairs.end());
    merges_.reserve(pairs.size());
    for (const auto& [id, a, b] : pairs) merges_.emplace_back(a, b);
  }
}

void Bpe::index_merges() {
  const std::size_t prefix = options_.continuing_subword_prefix.size();
  merge_map_.reserve(merges_.size() * 2);
  for (std::size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [a, b] = merges_[rank];
    const std::string& right = tokens_.at(b);
    const std::string merged = tokens_.at(a) + (right.size() >= prefix ? right.substr(prefix) : right);
    const int32_t id = model_token(merged);
    if (id < 0)
      throw Error("merge " + std::to_string(rank + 1) + " ('" + (byte_level_ ? bytes_to_spelling(tokens_[a]) : tokens_[a]) +
                  "' '" + (byte_level_ ? bytes_to_spelling(right) : right) + "') makes a token that is not in the vocabulary");
    merge_map_.emplace(pair_key(a, b), MergeInfo{static_cast<uint32_t>(rank), id});
  }
}

int32_t Bpe::model_token(std::string_view spelled) const {
  if (!spelled.empty() && spelled.size() <= detail::ShortKeyMap::kMaxKey) return short_vocab_->find(spelled);
  auto it = model_vocab_.find(spelled);
  return it == model_vocab_.end() ? -1 : it->second;
}

const Bpe::MergeInfo* Bpe::find_merge(int32_t a, int32_t b) const {
  auto it = merge_map_.find(pair_key(a, b));
  return it == merge_map_.end() ? nullptr : &it->second;
}

void Bpe::merge_symbols(std::vector<Symbol>& sym) const {
  // The lowest-ranked adjacent pair merges first, the leftmost among equals (as HF's heap):
  // linked symbols and a heap of candidate merges, O(n log n).
  const std::size_t n = sym.size();
  if (n < 2) return;
  std::vector<int32_t> prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
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
    if (const MergeInfo* m = find_merge(sym[pos].id, sym[next[pos]].id))
      heap.push({m->rank, pos, sym[pos].id, sym[next[pos]].id});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t r = next[c.pos];
    if (!alive[c.pos] || r < 0 || sym[c.pos].id != c.left || sym[r].id != c.right) continue;  // stale
    sym[c.pos].id = find_merge(c.left, c.right)->id;
    sym[c.pos].len += sym[r].len;
    alive[r] = false;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  std::size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
  sym.resize(w);
}

void Bpe::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  const std::size_t n = piece.size();
  if (n <= 48) {  // short pieces: a scan per merge beats the heap
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
  std::vector<Symbol> sym(n);
  for (std::size_t i = 0; i < n; ++i) sym[i] = {byte_id_[static_cast<unsigned char>(piece[i])], 1};
  merge_symbols(sym);
  for (const auto& s : sym) out.push_back(s.id);
}

void Bpe::encode_bytes(std::string_view piece, std::size_t base, std::vector<int32_t>& ids,
                       std::vector<Offset>* offsets) const {
  const std::size_t first = ids.size();
  if (piece.size() == 1) {
    ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
  } else if (int32_t whole = -1; options_.ignore_merges && (whole = model_token(piece)) >= 0) {
    ids.push_back(whole);
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

void Bpe::encode_chars(const TextPiece& piece, std::vector<int32_t>& ids, std::vector<Offset>* offsets) const {
  const std::string& text = piece.text;
  if (text.empty()) return;
  if (int32_t whole = -1; options_.ignore_merges && (whole = model_token(text)) >= 0) {
    ids.push_back(whole);
    if (offsets) offsets->push_back(piece.span(0, text.size()));
    return;
  }
  std::vector<Symbol> sym;
  std::optional<Symbol> unk;
  std::string s;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    decode_utf8(text, i, len);
    s.clear();
    if (i > 0) s += options_.continuing_subword_prefix;
    s.append(text, i, len);
    if (i + len == text.size()) s += options_.end_of_word_suffix;
    const auto n = static_cast<uint32_t>(len);
    i += len;
    if (const int32_t id = model_token(s); id >= 0) {
      if (unk) sym.push_back(*std::exchange(unk, std::nullopt));
      sym.push_back({id, n});
      continue;
    }
    if (options_.byte_fallback && std::all_of(s.begin(), s.end(), [&](char c) { return fallback_id_[static_cast<unsigned char>(c)] >= 0; })) {
      // As HF: the byte tokens of the whole symbol (prefix included), each counted as one byte.
      if (unk) sym.push_back(*std::exchange(unk, std::nullopt));
      for (char c : s) sym.push_back({fallback_id_[static_cast<unsigned char>(c)], 1});
      continue;
    }
    if (unk_id_ < 0) continue;  // no unknown token: the character is dropped, as HF does
    if (unk && options_.fuse_unk) {
      unk->len += n;
    } else {
      if (unk) sym.push_back(*unk);
      unk = Symbol{unk_id_, n};
    }
  }
  if (unk) sym.push_back(*unk);
  merge_symbols(sym);
  std::size_t at = 0;
  for (const auto& x : sym) {
    ids.push_back(x.id);
    if (offsets) {
      const std::size_t b = std::min(at, text.size() - 1), e = std::min(at + x.len, text.size());
      offsets->push_back(piece.span(b, std::max(e, b + 1)));
    }
    at += x.len;
  }
}

void Bpe::encode_segment(std::string_view segment, std::size_t base, std::vector<int32_t>& ids,
                         std::vector<Offset>* offsets) const {
  switch (route_) {
    case Route::Gpt2: {
      std::string prefixed;
      const bool shifted = add_prefix_space_ && !segment.empty() && segment[0] != ' ';
      if (shifted) {
        prefixed.assign(1, ' ');
        prefixed.append(segment);
        segment = prefixed;
      }
      const std::size_t first_offset = offsets ? offsets->size() : 0;
      pretokenize_gpt2(segment, [&](std::size_t b, std::size_t e) {
        encode_bytes(segment.substr(b, e - b), base + b, ids, offsets);
      });
      if (offsets && shifted)  // offsets refer to the caller's text, not the prefixed copy
        for (std::size_t k = first_offset; k < offsets->size(); ++k) {
          auto& [begin, end] = (*offsets)[k];
          begin = begin > base ? begin - 1 : base;
          end = end > base ? end - 1 : base;
        }
      return;
    }
    case Route::Regex: {
      split_->for_each_piece(segment, [&](std::size_t b, std::size_t e) {
        encode_bytes(segment.substr(b, e - b), base + b, ids, offsets);
      });
      return;
    }
    case Route::General: break;
  }
  TextPiece piece = TextPiece::of(segment, base);
  if (pipeline_.normalizer) pipeline_.normalizer->normalize(piece);
  encode_normalized(std::move(piece), ids, offsets);
}

void Bpe::encode_unmatched(std::string_view segment, std::size_t base, std::vector<int32_t>& ids,
                           std::vector<Offset>* offsets) const {
  if (normalized_matcher_.empty()) return encode_segment(segment, base, ids, offsets);
  if (!pipeline_.normalizer) {
    normalized_matcher_.split(
        segment, [&](std::size_t from, std::size_t to) { encode_segment(segment.substr(from, to - from), base + from, ids, offsets); },
        [&](int32_t id, std::size_t from, std::size_t to) {
          ids.push_back(id);
          if (offsets) offsets->emplace_back(base + from, base + to);
        });
    return;
  }
  // As HF: the whole stretch is normalized, then the normalized tokens are matched in it and
  // the pieces between them are pre-tokenized (not normalized again).
  TextPiece piece = TextPiece::of(segment, base);
  pipeline_.normalizer->normalize(piece);
  normalized_matcher_.split(
      piece.text, [&](std::size_t from, std::size_t to) { encode_normalized(piece.slice(from, to), ids, offsets); },
      [&](int32_t id, std::size_t from, std::size_t to) {
        ids.push_back(id);
        if (offsets) offsets->push_back(piece.span(from, to));
      });
}

void Bpe::encode_normalized(TextPiece piece, std::vector<int32_t>& ids, std::vector<Offset>* offsets) const {
  if (piece.text.empty()) return;
  std::vector<TextPiece> pieces{std::move(piece)};
  if (pipeline_.pre_tokenizer) pipeline_.pre_tokenizer->pre_tokenize(pieces);
  for (const auto& p : pieces) {
    if (!byte_level_) {
      encode_chars(p, ids, offsets);
      continue;
    }
    const std::size_t first = ids.size();
    encode_bytes(p.text, 0, ids, nullptr);
    if (offsets) {
      std::size_t at = 0;
      for (std::size_t k = first; k < ids.size(); ++k) {
        const std::size_t len = tokens_[ids[k]].size();
        offsets->push_back(p.span(at, at + len));
        at += len;
      }
    }
  }
}

std::vector<int32_t> Bpe::encode(std::string_view text, std::vector<Offset>* offsets) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // Special tokens are split off first; the pipeline then applies to each text segment between
  // them, as Hugging Face's added vocabulary does.
  matcher_.split(
      text, [&](std::size_t from, std::size_t to) { encode_unmatched(text.substr(from, to - from), from, ids, offsets); },
      [&](int32_t id, std::size_t from, std::size_t to) {
        ids.push_back(id);
        if (offsets) offsets->emplace_back(from, to);
      });
  return ids;
}

PairEncoding Bpe::encode_with_specials(std::string_view first, std::string_view second, bool pair) const {
  const auto a = encode(first);
  std::vector<int32_t> b;
  if (pair) b = encode(second);
  if (pipeline_.post_processor) return pipeline_.post_processor->process(a, pair ? &b : nullptr);
  return detail::concatenate(a, pair ? &b : nullptr);
}

std::string Bpe::decode(std::span<const int32_t> ids) const {
  auto check = [&](int32_t id) {
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
  };
  if (plain_decode_) {  // ByteLevel: the tokens' bytes (kept raw, so decode(encode(x)) == x for any bytes)
    std::string out;
    for (int32_t id : ids) {
      check(id);
      const auto as = decoded_as_.find(id);
      out += as == decoded_as_.end() ? tokens_[id] : as->second;
    }
    return out;
  }
  std::vector<bool> is_special(tokens_.size(), false);
  for (int32_t id : special_) is_special[id] = true;
  std::vector<std::string> parts;
  parts.reserve(ids.size());
  for (int32_t id : ids) {
    check(id);
    const auto as = decoded_as_.find(id);
    parts.push_back(as != decoded_as_.end() ? as->second
                    : byte_level_ && !is_special[id] ? bytes_to_spelling(tokens_[id]) : tokens_[id]);
  }
  std::string out;
  if (!pipeline_.decoder) {  // HF joins the tokens with spaces when there is no decoder
    for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? " " : "") + parts[i];
    return out;
  }
  pipeline_.decoder->decode(parts);
  for (const auto& p : parts) out += p;
  return out;
}

int32_t Bpe::token_to_id(std::string_view spelled) const {
  auto it = spelled_to_id_.find(std::string(spelled));
  return it == spelled_to_id_.end() ? -1 : it->second;
}

uint64_t Bpe::fingerprint() const {
  Fnv1a h;
  h.add("byte_bpe");
  // GPT-2's pipeline with default options hashes as it always has, so shards prepared before
  // tokenizer.json pipelines existed still match their tokenizer.
  nlohmann::ordered_json pj, gpt2j;
  pipeline_.to_json(pj);
  Pipeline::gpt2(add_prefix_space_).to_json(gpt2j);
  h.add_u64(add_prefix_space_);
  for (const auto& t : tokens_) {
    h.add_u64(t.size());
    h.add(t);
  }
  for (auto [a, b] : merges_) h.add_u64(pair_key(a, b));
  for (int32_t id : special_) h.add_u64(static_cast<uint64_t>(id));
  if (std::any_of(options_.special_flags.begin(), options_.special_flags.end(), [](const AddedTokenFlags& f) { return f != AddedTokenFlags{}; }))
    for (const auto& f : options_.special_flags) h.add_u64(f.single_word | f.lstrip << 1 | f.rstrip << 2 | f.normalized << 3);
  const auto& o = options_;
  if (pj != gpt2j || o.ignore_merges || o.byte_fallback || !o.unk_token.empty() || o.fuse_unk ||
      !o.continuing_subword_prefix.empty() || !o.end_of_word_suffix.empty() || o.merge_by_rank) {
    h.add(pj.dump());
    h.add_u64(o.ignore_merges | o.byte_fallback << 1 | o.fuse_unk << 2 | o.merge_by_rank << 3);
    h.add(o.unk_token + '\0' + o.continuing_subword_prefix + '\0' + o.end_of_word_suffix);
  }
  return with_eos(h.value());
}

// ------------------------------------------------------------------------------ files

Bpe Bpe::from_vocab_merges(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt) {
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
  return Bpe(std::move(tokens), std::move(merges), std::move(added));
}

namespace {

using Json = nlohmann::json;

/// model's settings other than its vocabulary and merges.
BpeOptions read_model_options(const Json& model, const std::string& file) {
  auto flag = [&](const char* key) {
    return detail::optional_flag(model, key, file + ": model." + key + ": expected true or false");
  };
  auto text = [&](const char* key) {
    if (!model.contains(key) || model[key].is_null()) return std::string();
    if (!model[key].is_string()) throw Error(file + ": model." + key + ": expected a string or null");
    return model[key].get<std::string>();
  };
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0))
    throw Error(file + ": model.dropout: BPE dropout is not supported (null or 0 only)");
  BpeOptions options;
  options.ignore_merges = flag("ignore_merges");
  options.byte_fallback = flag("byte_fallback");
  options.fuse_unk = flag("fuse_unk");
  options.unk_token = text("unk_token");
  options.continuing_subword_prefix = text("continuing_subword_prefix");
  options.end_of_word_suffix = text("end_of_word_suffix");
  return options;
}

/// One more than the largest id of the vocabulary and the added tokens.
int64_t id_count(const Json& vocab, const Json* added_tokens, const std::string& file) {
  int64_t size = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      throw Error(file + ": model.vocab: token '" + it.key() + "' has no valid id");
    size = std::max<int64_t>(size, it.value().get<int64_t>() + 1);
  }
  if (added_tokens)
    for (const auto& t : *added_tokens) size = std::max<int64_t>(size, t.at("id").get<int64_t>() + 1);
  return size;
}

/// model.merges as pairs of ids, each written "a b" (tokenizers < 0.20) or ["a", "b"].
std::vector<std::pair<int32_t, int32_t>> read_merges(const Json& jm, const std::unordered_map<std::string, int32_t>& spelled,
                                                     const std::string& file) {
  std::vector<std::pair<int32_t, int32_t>> merges;
  for (std::size_t k = 0; k < jm.size(); ++k) {
    std::string a, b;
    if (jm[k].is_string()) {
      const auto s = jm[k].get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) throw Error(file + ": model.merges[" + std::to_string(k) + "]: expected 'a b'");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (jm[k].is_array() && jm[k].size() == 2) {
      a = jm[k][0].get<std::string>();
      b = jm[k][1].get<std::string>();
    } else {
      throw Error(file + ": model.merges[" + std::to_string(k) + "]: expected a pair of tokens");
    }
    auto ia = spelled.find(a), ib = spelled.find(b);
    if (ia == spelled.end() || ib == spelled.end())
      throw Error(file + ": model.merges[" + std::to_string(k) + "]: '" + a + " " + b +
                  "' names a token that is not in model.vocab");
    merges.emplace_back(ia->second, ib->second);
  }
  return merges;
}

}  // namespace

Bpe Bpe::from_tokenizer_json(const std::filesystem::path& path) {
  const auto j = detail::read_json(path);
  const std::string file = path.string();
  const auto& model = detail::member(j, "model", path);
  if (detail::member(model, "type", path) != "BPE") throw Error(file + ": model.type is not BPE");
  const auto& vocab = detail::member(model, "vocab", path);
  if (!vocab.is_object()) throw Error(file + ": model.vocab: expected an object of token -> id");
  BpeOptions options = read_model_options(model, file);
  const auto* added_tokens = j.contains("added_tokens") && j["added_tokens"].is_array() ? &j["added_tokens"] : nullptr;
  const int64_t size = id_count(vocab, added_tokens, file);
  std::unordered_map<std::string, int32_t> spelled;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) spelled.emplace(it.key(), it.value().get<int32_t>());
  Pipeline pipeline = parse_pipeline(j, file, [&](std::string_view t) {
    if (auto it = spelled.find(std::string(t)); it != spelled.end()) return it->second;
    if (added_tokens)
      for (const auto& a : *added_tokens)
        if (a.value("content", "") == t) return a.at("id").get<int32_t>();
    return -1;
  });
  const bool byte_level = pipeline.byte_level() != nullptr;

  std::vector<std::string> tokens(size);
  std::vector<bool> seen(size, false);
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it.value().get<int64_t>();
    if (seen[id]) throw Error(file + ": model.vocab: token '" + it.key() + "' repeats id " + std::to_string(id));
    seen[id] = true;
    tokens[id] = byte_level && unicode_to_bytes(it.key(), bytes) ? bytes : it.key();
  }
  std::vector<int32_t> special;
  if (added_tokens)
    for (std::size_t k = 0; k < added_tokens->size(); ++k) {
      const auto& t = (*added_tokens)[k];
      const auto id = t.at("id").get<int32_t>();
      tokens[id] = t.at("content").get<std::string>();
      special.push_back(id);
      options.special_flags.push_back(detail::added_token_flags(t, file + ": added_tokens[" + std::to_string(k) + "]"));
    }
  auto merges = read_merges(detail::member(model, "merges", path), spelled, file);
  try {
    return Bpe(std::move(tokens), std::move(merges), std::move(special), std::move(options), std::move(pipeline));
  } catch (const Error& e) {
    throw Error(file + ": " + e.what());
  }
}

namespace {

std::string base64_decode(std::string_view in, bool& ok) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  ok = in.size() % 4 == 0 && !in.empty();
  std::size_t pad = 0;
  for (char c : in) {
    if (c == '=') {
      ++pad;
      continue;
    }
    const int v = table[static_cast<unsigned char>(c)];
    if (v < 0 || pad) {
      ok = false;
      return out;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  ok = ok && pad <= 2;
  return out;
}

/// The special tokens of tiktoken's well-known encodings.
std::vector<std::pair<std::string, int32_t>> known_specials(std::string_view name) {
  if (name == "r50k_base" || name == "p50k_base") return {{"<|endoftext|>", 50256}};
  if (name == "p50k_edit")
    return {{"<|endoftext|>", 50256}, {"<|fim_prefix|>", 50281}, {"<|fim_middle|>", 50282}, {"<|fim_suffix|>", 50283}};
  if (name == "cl100k_base")
    return {{"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258}, {"<|fim_middle|>", 100259},
            {"<|fim_suffix|>", 100260}, {"<|endofprompt|>", 100276}};
  if (name == "o200k_base") return {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
  return {};
}

}  // namespace

Bpe Bpe::from_tiktoken(const std::filesystem::path& path, const TiktokenOptions& o) {
  const std::string file = path.string();
  const std::string name = path.stem().string();
  std::string pattern = o.pattern;
  if (pattern.empty()) {
    auto named = named_split_pattern(name, RegexDialect::Tiktoken);
    if (!named)
      throw Error(file + ": no split pattern is known for an encoding named '" + name +
                  "' (r50k_base, p50k_base, cl100k_base, o200k_base): give one with tokenizer.pattern or --pattern");
    pattern = *named;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read tiktoken file '" + file + "'");
  std::vector<std::string> tokens;
  std::vector<bool> seen;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto space = line.find(' ');
    bool ok = space != std::string::npos;
    std::string bytes = ok ? base64_decode(std::string_view(line).substr(0, space), ok) : std::string();
    int64_t rank = -1;
    if (ok) try {
        std::size_t used = 0;
        rank = std::stoll(line.substr(space + 1), &used);
        ok = used == line.size() - space - 1 && rank >= 0 && rank < (1 << 30);
      } catch (const std::exception&) {
        ok = false;
      }
    if (!ok) throw Error(file + ":" + std::to_string(lineno) + ": expected '<base64 token> <rank>'");
    if (static_cast<int64_t>(tokens.size()) <= rank) {
      tokens.resize(rank + 1);
      seen.resize(rank + 1, false);
    }
    if (seen[rank] || bytes.empty())
      throw Error(file + ":" + std::to_string(lineno) + ": rank " + std::to_string(rank) + " is repeated or its token empty");
    seen[rank] = true;
    tokens[rank] = std::move(bytes);
  }
  if (tokens.empty()) throw Error(file + ": no tokens");
  auto specials = known_specials(name);
  for (const auto& s : o.special_tokens) {
    auto same = std::find_if(specials.begin(), specials.end(), [&](const auto& k) { return k.first == s.first; });
    if (same == specials.end())
      specials.push_back(s);
    else if (s.second >= 0)
      same->second = s.second;
  }
  std::vector<int32_t> special;
  for (auto& [content, id] : specials) {
    if (id < 0) id = static_cast<int32_t>(tokens.size());
    if (id < static_cast<int32_t>(tokens.size()) && !tokens[id].empty())
      throw Error(file + ": special token '" + content + "' takes id " + std::to_string(id) + ", which a rank of the file has");
    if (id >= static_cast<int32_t>(tokens.size())) tokens.resize(id + 1);
    tokens[id] = content;
    special.push_back(id);
  }
  BpeOptions options;
  options.ignore_merges = true;
  options.merge_by_rank = true;
  try {
    return Bpe(std::move(tokens), {}, std::move(special), options,
               Pipeline::byte_level_split(pattern, RegexDialect::Tiktoken));
  } catch (const Error& e) {
    throw Error(file + ": " + e.what());
  }
}

void Bpe::save(const std::filesystem::path& path) const {
  nlohmann::ordered_json j = detail::tokenizer_json_head(tokens_, special_, options_.special_flags);
  pipeline_.to_json(j);
  auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s); };
  nlohmann::ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = or_null(options_.unk_token);
  model["continuing_subword_prefix"] = or_null(options_.continuing_subword_prefix);
  model["end_of_word_suffix"] = or_null(options_.end_of_word_suffix);
  model["fuse_unk"] = options_.fuse_unk;
  model["byte_fallback"] = options_.byte_fallback;
  model["ignore_merges"] = options_.ignore_merges;
  auto spell = [&](int32_t id) { return byte_level_ ? bytes_to_spelling(tokens_[id]) : tokens_[id]; };
  std::vector<bool> is_special(tokens_.size(), false);
  for (int32_t id : special_) is_special[id] = true;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (is_special[id])
      vocab[tokens_[id]] = id;
    else if (!tokens_[id].empty())
      vocab[spell(id)] = id;
  }
  model["vocab"] = std::move(vocab);
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (auto [a, b] : merges_) merges.push_back({spell(a), spell(b)});
  model["merges"] = std::move(merges);
  j["model"] = std::move(model);
  io::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace lathe::tokenizer
