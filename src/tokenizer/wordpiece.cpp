#include "lathe/tokenizer/wordpiece.hpp"

#include <algorithm>
#include <fstream>
#include <functional>
#include <string_view>
#include <utility>

#include "json_file.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

WordPiece::WordPiece(std::vector<std::string> tokens, std::vector<int32_t> special, WordPieceOptions options)
    : tokens_(std::move(tokens)), special_(std::move(special)), options_(std::move(options)) {
  for (int32_t id = 0; id < vocab_size(); ++id) vocab_.emplace(tokens_[id], id);
  if (!options_.special_flags.empty() && options_.special_flags.size() != special_.size())
    throw Error("WordPiece: special_flags must give the flags of each special token");
  std::vector<detail::SpecialMatcher::Entry> specials;
  for (std::size_t k = 0; k < special_.size(); ++k) {
    const int32_t id = special_[k];
    if (id < 0 || id >= vocab_size()) throw Error("special token id " + std::to_string(id) + " is outside the vocabulary");
    specials.push_back({tokens_[id], id, options_.special_flags.empty() ? AddedTokenFlags{} : options_.special_flags[k]});
  }
  matcher_ = detail::SpecialMatcher(std::move(specials));
  unk_id_ = token_to_id(options_.unk_token);
  if (unk_id_ < 0) throw Error("WordPiece vocabulary has no unknown token '" + options_.unk_token + "'");
}

uint64_t WordPiece::fingerprint() const {
  Fnv1a h;
  h.add("wordpiece");
  for (bool flag : {options_.lowercase, options_.strip_accents, options_.clean_text, options_.handle_chinese_chars})
    h.add_u64(flag);
  h.add_u64(static_cast<uint64_t>(options_.max_input_chars_per_word));
  for (const auto* s : {&options_.unk_token, &options_.prefix, &options_.cls_token, &options_.sep_token}) {
    h.add_u64(s->size());
    h.add(*s);
  }
  for (const auto& t : tokens_) {
    h.add_u64(t.size());
    h.add(t);
  }
  for (int32_t id : special_) h.add_u64(static_cast<uint64_t>(id));
  if (std::any_of(options_.special_flags.begin(), options_.special_flags.end(), [](const AddedTokenFlags& f) { return f != AddedTokenFlags{}; }))
    for (const auto& f : options_.special_flags) h.add_u64(f.single_word | f.lstrip << 1 | f.rstrip << 2 | f.normalized << 3);
  return with_eos(h.value());
}

int32_t WordPiece::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

std::u32string WordPiece::normalize(std::string_view text, std::vector<std::size_t>* origin) const {
  std::u32string out;
  out.reserve(text.size());
  std::vector<std::size_t> from;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    char32_t cp = decode_utf8(text, i, len);
    if (cp == kInvalidCodepoint) cp = 0xFFFD;
    auto emit = [&](char32_t c) {
      out.push_back(c);
      from.push_back(i);
    };
    if (options_.clean_text && (cp == 0 || cp == 0xFFFD || is_control(cp))) {
      // dropped
    } else if (options_.clean_text && is_whitespace(cp)) {
      emit(' ');
    } else if (options_.handle_chinese_chars && is_cjk(cp)) {
      emit(' ');
      emit(cp);
      emit(' ');
    } else {
      emit(cp);
    }
    i += len;
  }
  auto map_chars = [&](auto&& per_char) {  // rewrites `out`, keeping each character's origin
    std::u32string next;
    std::vector<std::size_t> next_from;
    for (std::size_t k = 0; k < out.size(); ++k) {
      const std::size_t before = next.size();
      per_char(next, out[k]);
      next_from.insert(next_from.end(), next.size() - before, from[k]);
    }
    out.swap(next);
    from.swap(next_from);
  };
  if (options_.strip_accents) {
    map_chars([](std::u32string& next, char32_t c) {
      for (char32_t d : nfd(std::u32string(1, c)))
        if (!is_mark_nonspacing(d)) next.push_back(d);
    });
  }
  if (options_.lowercase) map_chars([](std::u32string& next, char32_t c) { append_lower(next, c); });
  if (origin) *origin = std::move(from);
  return out;
}

void WordPiece::encode_word(const std::u32string& word, std::size_t from, std::size_t to, std::vector<int32_t>& ids,
                            std::vector<Offset>* offsets) const {
  if (static_cast<int>(word.size()) > options_.max_input_chars_per_word) {
    ids.push_back(unk_id_);
    if (offsets) offsets->emplace_back(from, to);
    return;
  }
  const std::size_t first = ids.size();
  std::size_t start = 0;
  std::string piece;
  while (start < word.size()) {
    std::size_t end = word.size();
    int32_t found = -1;
    while (start < end) {
      piece = start > 0 ? options_.prefix : std::string();
      for (std::size_t k = start; k < end; ++k) append_utf8(piece, word[k]);
      if (int32_t id = token_to_id(piece); id >= 0) {
        found = id;
        break;
      }
      --end;
    }
    if (found < 0) {
      ids.resize(first);
      ids.push_back(unk_id_);
      if (offsets) {
        offsets->resize(first);
        offsets->emplace_back(from, to);
      }
      return;
    }
    ids.push_back(found);
    if (offsets) offsets->emplace_back(from, to);  // pieces share their word's span
    start = end;
  }
}

void WordPiece::split_words(std::string_view text,
                            const std::function<void(const std::u32string&, std::size_t, std::size_t)>& word) const {
  std::vector<std::size_t> origin;
  const std::u32string norm = normalize(text, &origin);
  std::u32string current;
  std::size_t from = 0, to = 0;
  auto byte_end = [&](std::size_t k) {  // end of the original character behind norm[k]
    std::size_t len = 0;
    decode_utf8(text, origin[k], len);
    return origin[k] + len;
  };
  auto flush = [&] {
    if (!current.empty()) word(current, from, to);
    current.clear();
  };
  for (std::size_t k = 0; k < norm.size(); ++k) {
    const char32_t c = norm[k];
    if (is_whitespace(c)) {
      flush();
    } else if (is_punctuation(c)) {  // each punctuation character is a word of its own
      flush();
      current.assign(1, c);
      from = origin[k];
      to = byte_end(k);
      flush();
    } else {
      if (current.empty()) from = origin[k];
      current.push_back(c);
      to = byte_end(k);
    }
  }
  flush();
}

std::vector<int32_t> WordPiece::encode(std::string_view text, std::vector<Offset>* offsets) const {
  std::vector<int32_t> ids;
  auto encode_text = [&](std::size_t seg_from, std::size_t seg_to) {
    split_words(text.substr(seg_from, seg_to - seg_from), [&](const std::u32string& w, std::size_t from, std::size_t to) {
      encode_word(w, seg_from + from, seg_from + to, ids, offsets);
    });
  };
  matcher_.split(text, encode_text, [&](int32_t id, std::size_t from, std::size_t to) {
    ids.push_back(id);
    if (offsets) offsets->emplace_back(from, to);
  });
  return ids;
}

PairEncoding WordPiece::encode_with_specials(std::string_view first, std::string_view second, bool pair) const {
  const int32_t cls = token_to_id(options_.cls_token), sep = token_to_id(options_.sep_token);
  if (cls < 0 || sep < 0)
    throw Error("WordPiece vocabulary lacks '" + options_.cls_token + "' or '" + options_.sep_token + "'");
  PairEncoding e;
  auto a = encode(first);
  e.ids.push_back(cls);
  e.ids.insert(e.ids.end(), a.begin(), a.end());
  e.ids.push_back(sep);
  e.type_ids.assign(e.ids.size(), 0);
  if (pair) {
    auto b = encode(second);
    e.ids.insert(e.ids.end(), b.begin(), b.end());
    e.ids.push_back(sep);
    e.type_ids.resize(e.ids.size(), 1);
  }
  return e;
}

namespace {

/// HF's `cleanup` of the WordPiece decoder, rule by rule in its order; each rule replaces every
/// non-overlapping occurrence left to right, as Rust's str::replace.
void cleanup(std::string& s) {
  static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
      {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    if (s.find(from) == std::string::npos) continue;
    std::string out;
    std::size_t at = 0;
    for (std::size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size()) {
      out.append(s, at, hit - at);
      out.append(to);
    }
    out.append(s, at, std::string::npos);
    s = std::move(out);
  }
}

}  // namespace

std::string WordPiece::decode(std::span<const int32_t> ids) const {
  const std::string& prefix = options_.decoder_prefix ? *options_.decoder_prefix : options_.prefix;
  std::string out, token;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    const std::string& t = tokens_[id];
    if (!options_.wordpiece_decoder) {  // HF joins the tokens with spaces when there is no decoder
      out += (i ? " " : "") + t;
      continue;
    }
    // As HF, the first token keeps its prefix, and cleanup sees one token (with its space) at a time.
    if (i == 0)
      token = t;
    else if (!prefix.empty() && t.starts_with(prefix))
      token = t.substr(prefix.size());
    else
      token = " " + t;
    if (options_.cleanup) cleanup(token);
    out += token;
  }
  return out;
}

WordPiece WordPiece::from_vocab_txt(const std::filesystem::path& path, WordPieceOptions options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read vocabulary '" + path.string() + "'");
  std::vector<std::string> tokens;
  std::unordered_map<std::string, int> seen;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw Error(path.string() + ":" + std::to_string(lineno) + ": empty token");
    if (auto [it, fresh] = seen.emplace(line, lineno); !fresh)
      throw Error(path.string() + ":" + std::to_string(lineno) + ": token '" + line + "' repeats line " +
                  std::to_string(it->second));
    tokens.push_back(line);
  }
  if (tokens.empty()) throw Error(path.string() + ": the vocabulary is empty");
  options.strip_accents = options.lowercase;
  std::vector<int32_t> special;
  for (int32_t id = 0; id < static_cast<int32_t>(tokens.size()); ++id)
    for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
      if (tokens[id] == s) special.push_back(id);
  if (std::find(tokens.begin(), tokens.end(), options.unk_token) == tokens.end())
    throw Error(path.string() + ": the vocabulary has no unknown token '" + options.unk_token + "'");
  return WordPiece(std::move(tokens), std::move(special), std::move(options));
}

WordPiece WordPiece::from_tokenizer_json(const std::filesystem::path& path) {
  const auto j = detail::read_json(path);
  const auto& model = detail::member(j, "model", path);
  if (detail::member(model, "type", path) != "WordPiece") throw Error(path.string() + ": model.type is not WordPiece");
  const auto& vocab = detail::member(model, "vocab", path);
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()) || seen[id])
      throw Error(path.string() + ": model.vocab: token '" + it.key() + "' has a bad or repeated id " + std::to_string(id));
    seen[id] = true;
    tokens[id] = it.key();
  }
  // WordPiece runs BERT's pipeline; a file that asks for another is refused, naming the part.
  auto only = [&](const char* part, std::initializer_list<const char*> types) {
    if (!j.contains(part) || j[part].is_null()) return;
    const std::string type = j[part].is_object() ? j[part].value("type", "") : "";
    std::string allowed;
    for (const char* t : types) {
      if (type == t) return;
      allowed += (allowed.empty() ? "" : ", ") + std::string(t);
    }
    throw Error(path.string() + ": " + part + ": type '" + type + "' is not supported with a WordPiece model (" +
                allowed + ", or none)");
  };
  only("normalizer", {"BertNormalizer"});
  only("pre_tokenizer", {"BertPreTokenizer"});
  only("post_processor", {"BertProcessing", "TemplateProcessing"});
  only("decoder", {"WordPiece"});
  WordPieceOptions o;
  o.unk_token = model.value("unk_token", o.unk_token);
  o.prefix = model.value("continuing_subword_prefix", o.prefix);
  o.max_input_chars_per_word = model.value("max_input_chars_per_word", o.max_input_chars_per_word);
  if (j.contains("normalizer") && j["normalizer"].is_object() && j["normalizer"].value("type", "") == "BertNormalizer") {
    const auto& n = j["normalizer"];
    o.lowercase = n.value("lowercase", true);
    o.clean_text = n.value("clean_text", true);
    o.handle_chinese_chars = n.value("handle_chinese_chars", true);
    o.strip_accents = n.contains("strip_accents") && n["strip_accents"].is_boolean() ? n["strip_accents"].get<bool>()
                                                                                     : o.lowercase;
  } else {
    o.lowercase = o.clean_text = o.handle_chinese_chars = o.strip_accents = false;
  }
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    const auto& p = j["post_processor"];
    if (p.contains("cls") && p["cls"].is_array()) o.cls_token = p["cls"][0].get<std::string>();
    if (p.contains("sep") && p["sep"].is_array()) o.sep_token = p["sep"][0].get<std::string>();
  }
  o.wordpiece_decoder = j.contains("decoder") && j["decoder"].is_object();
  if (o.wordpiece_decoder) {
    const auto& d = j["decoder"];
    o.decoder_prefix = d.contains("prefix") && d["prefix"].is_string() ? d["prefix"].get<std::string>() : "##";
    o.cleanup = !d.contains("cleanup") || !d["cleanup"].is_boolean() || d["cleanup"].get<bool>();
  }
  std::vector<int32_t> special;
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (std::size_t k = 0; k < j["added_tokens"].size(); ++k) {
      const auto& t = j["added_tokens"][k];
      const std::string where = path.string() + ": added_tokens[" + std::to_string(k) + "]";
      special.push_back(t.at("id").get<int32_t>());
      o.special_flags.push_back(detail::added_token_flags(t, where));
      if (o.special_flags.back().normalized && (o.lowercase || o.clean_text || o.handle_chinese_chars || o.strip_accents))
        throw Error(where + ": '" + t.value("content", "") + "' is matched in the normalized text (\"normalized\": true), "
                    "which lathe does not support with a WordPiece model; set \"normalized\" to false");
    }
  return WordPiece(std::move(tokens), std::move(special), std::move(o));
}

void WordPiece::save(const std::filesystem::path& path) const {
  nlohmann::ordered_json j = detail::tokenizer_json_head(tokens_, special_, options_.special_flags);
  j["normalizer"] = {{"type", "BertNormalizer"},
                     {"clean_text", options_.clean_text},
                     {"handle_chinese_chars", options_.handle_chinese_chars},
                     {"strip_accents", options_.strip_accents},
                     {"lowercase", options_.lowercase}};
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  const int32_t cls = token_to_id(options_.cls_token), sep = token_to_id(options_.sep_token);
  if (cls >= 0 && sep >= 0)
    j["post_processor"] = {{"type", "BertProcessing"},
                           {"sep", {options_.sep_token, sep}},
                           {"cls", {options_.cls_token, cls}}};
  else
    j["post_processor"] = nullptr;
  if (options_.wordpiece_decoder)
    j["decoder"] = {{"type", "WordPiece"}, {"prefix", options_.decoder_prefix ? *options_.decoder_prefix : options_.prefix}, {"cleanup", options_.cleanup}};
  else
    j["decoder"] = nullptr;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int32_t id = 0; id < vocab_size(); ++id) vocab[tokens_[id]] = id;
  j["model"] = {{"type", "WordPiece"},
                {"unk_token", options_.unk_token},
                {"continuing_subword_prefix", options_.prefix},
                {"max_input_chars_per_word", options_.max_input_chars_per_word},
                {"vocab", std::move(vocab)}};
  io::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace lathe::tokenizer
