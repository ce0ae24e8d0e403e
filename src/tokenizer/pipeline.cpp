#include "lathe/tokenizer/pipeline.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "lathe/tokenizer/unicode.hpp"

namespace lathe::tokenizer {

using ojson = nlohmann::ordered_json;

// ------------------------------------------------------------------------------ TextPiece

TextPiece TextPiece::of(std::string_view text, std::size_t base) {
  TextPiece p;
  p.text.assign(text);
  p.origin.resize(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    decode_utf8(text, i, len);
    for (std::size_t k = 0; k < len; ++k) p.origin[i + k] = {base + i, base + i + len};
    i += len;
  }
  return p;
}

TextPiece TextPiece::slice(std::size_t begin, std::size_t end) const {
  TextPiece p;
  p.text = text.substr(begin, end - begin);
  p.origin.assign(origin.begin() + static_cast<std::ptrdiff_t>(begin), origin.begin() + static_cast<std::ptrdiff_t>(end));
  return p;
}

namespace {

/// Builds a new piece character by character.
struct PieceBuilder {
  TextPiece out;
  void add(std::string_view bytes, Offset from) {
    out.text.append(bytes);
    out.origin.insert(out.origin.end(), bytes.size(), from);
  }
  void add(char32_t cp, Offset from) {
    const std::size_t before = out.text.size();
    append_utf8(out.text, cp);
    out.origin.insert(out.origin.end(), out.text.size() - before, from);
  }
};

/// Calls f(code point, byte position, byte length) for each character of `s` (an invalid byte
/// is one character, kInvalidCodepoint).
template <class F>
void for_each_char(std::string_view s, F&& f) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    const char32_t cp = decode_utf8(s, i, len);
    f(cp, i, len);
    i += len;
  }
}

bool is_numeric(char32_t cp) {  // Rust's char::is_numeric: Nd, Nl, No
  if (cp == kInvalidCodepoint) return false;
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

// ------------------------------------------------------------------------------ splitting

/// HF's Pattern::find_matches: ordered spans covering the whole text, each marked as a match.
using Matches = std::vector<std::pair<Offset, bool>>;

Matches regex_matches(const Regex& re, std::string_view text) {
  Matches m;
  if (text.empty()) return {{{0, 0}, false}};
  std::size_t prev = 0;
  re.for_each_match(text, [&](std::size_t b, std::size_t e) {
    if (prev != b) m.push_back({{prev, b}, false});
    m.push_back({{b, e}, true});
    prev = e;
  });
  if (prev != text.size()) m.push_back({{prev, text.size()}, false});
  return m;
}

template <class Pred>
Matches char_matches(std::string_view text, Pred&& pred) {
  Matches m;
  if (text.empty()) return {{{0, 0}, false}};
  std::size_t last = 0;
  for_each_char(text, [&](char32_t cp, std::size_t i, std::size_t len) {
    if (!pred(cp)) return;
    if (last < i) m.push_back({{last, i}, false});
    m.push_back({{i, i + len}, true});
    last = i + len;
  });
  if (last < text.size()) m.push_back({{last, text.size()}, false});
  return m;
}

/// HF's NormalizedString::split: applies `behavior` to the matches and appends the non-empty
/// resulting pieces to `out`.
void split_piece(const TextPiece& piece, Matches matches, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out) {
  if (invert)
    for (auto& m : matches) m.second = !m.second;
  std::vector<std::pair<Offset, bool>> splits;  // (span, remove)
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (auto& [span, is_match] : matches) splits.push_back({span, false});
      break;
    case SplitBehavior::Removed:
      splits = std::move(matches);
      break;
    case SplitBehavior::Contiguous:
      for (auto& [span, is_match] : matches) {
        if (is_match == previous && !splits.empty())
          splits.back().first.second = span.second;
        else
          splits.push_back({span, false});
        previous = is_match;
      }
      break;
    case SplitBehavior::MergedWithPrevious:
      for (auto& [span, is_match] : matches) {
        if (is_match && !previous && !splits.empty())
          splits.back().first.second = span.second;
        else
          splits.push_back({span, false});
        previous = is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        const auto& [span, is_match] = *it;
        if (is_match && !previous && !splits.empty())
          splits.back().first.first = span.first;
        else
          splits.push_back({span, false});
        previous = is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
  }
  for (const auto& [span, remove] : splits)
    if (!remove && span.second > span.first) out.push_back(piece.slice(span.first, span.second));
}

template <class Split>
void split_all(std::vector<TextPiece>& pieces, Split&& split) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size() * 2);
  for (const auto& p : pieces) split(p, out);
  pieces = std::move(out);
}

void prepend(TextPiece& p, std::string_view s) {
  if (p.text.empty()) return;
  p.text.insert(0, s);
  p.origin.insert(p.origin.begin(), s.size(), p.origin.front());
}

/// Every match of `pattern` in the piece replaced by `content` (which takes the match's span).
void replace_all(TextPiece& p, const Regex& pattern, const std::string& content) {
  PieceBuilder b;
  for (const auto& [span, is_match] : regex_matches(pattern, p.text)) {
    if (span.second == span.first) continue;
    if (!is_match) {
      b.out.text.append(p.text, span.first, span.second - span.first);
      b.out.origin.insert(b.out.origin.end(), p.origin.begin() + static_cast<std::ptrdiff_t>(span.first),
                          p.origin.begin() + static_cast<std::ptrdiff_t>(span.second));
    } else {
      b.add(content, p.span(span.first, span.second));
    }
  }
  p = std::move(b.out);
}

// ------------------------------------------------------------------------------ JSON reading

/// Field access with the JSON path in every error.
struct Node {
  const nlohmann::json& j;
  std::string path;
  const std::string& file;

  [[noreturn]] void fail(const std::string& what) const { throw Error(file + ": " + path + ": " + what); }
  std::string type() const {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) fail("expected an object with a \"type\"");
    return j["type"].get<std::string>();
  }
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  Node at(const char* key) const {
    if (!has(key)) fail(std::string("missing \"") + key + "\"");
    return {j[key], path + "." + key, file};
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_boolean()) fail(std::string("\"") + key + "\" must be true or false");
    return j[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_string()) fail(std::string("\"") + key + "\" must be a string");
    return j[key].get<std::string>();
  }
  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_number_integer()) fail(std::string("\"") + key + "\" must be an integer");
    return j[key].get<int64_t>();
  }
  std::vector<Node> items(const char* key) const {
    const Node a = at(key);
    if (!a.j.is_array()) a.fail("expected a list");
    std::vector<Node> out;
    for (std::size_t i = 0; i < a.j.size(); ++i) out.push_back({a.j[i], a.path + "[" + std::to_string(i) + "]", file});
    return out;
  }
  [[noreturn]] void unsupported(const std::string& kind, const std::string& supported) const {
    fail(kind + " type '" + type() + "' is not supported (supported: " + supported + ")");
  }
};

/// A {"String": s} or {"Regex": r} pattern.
std::shared_ptr<const Regex> read_pattern(const Node& n, bool& is_string) {
  const Node p = n.at("pattern");
  if (p.j.is_object() && p.j.contains("String") && p.j["String"].is_string()) {
    is_string = true;
    return std::make_shared<Regex>(p.j["String"].get<std::string>(), RegexOptions{RegexDialect::Oniguruma, true});
  }
  if (p.j.is_object() && p.j.contains("Regex") && p.j["Regex"].is_string()) {
    is_string = false;
    try {
      return std::make_shared<Regex>(p.j["Regex"].get<std::string>(), RegexOptions{RegexDialect::Oniguruma, false});
    } catch (const Error& e) {
      p.fail(e.what());
    }
  }
  p.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

ojson pattern_json(const Regex& re, bool is_string) { return {{is_string ? "String" : "Regex", re.pattern()}}; }

SplitBehavior read_behavior(const Node& n, const char* key, SplitBehavior fallback) {
  if (!n.has(key)) return fallback;
  const auto s = n.string(key, "");
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  n.at(key).fail("behavior '" + s + "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

const char* behavior_name(SplitBehavior b) {
  switch (b) {
    case SplitBehavior::Removed: return "Removed";
    case SplitBehavior::Isolated: return "Isolated";
    case SplitBehavior::MergedWithPrevious: return "MergedWithPrevious";
    case SplitBehavior::MergedWithNext: return "MergedWithNext";
    case SplitBehavior::Contiguous: return "Contiguous";
  }
  return "Isolated";
}

/// One character of a string field ("replacement", "content").
char32_t read_char(const Node& n, const char* key, char32_t fallback) {
  if (!n.has(key)) return fallback;
  const auto s = n.string(key, "");
  std::size_t len = 0;
  const char32_t cp = s.empty() ? kInvalidCodepoint : decode_utf8(s, 0, len);
  if (cp == kInvalidCodepoint || len != s.size()) n.at(key).fail("expected a single character");
  return cp;
}

std::string utf8(char32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

/// ByteLevel's settings, as its pre-tokenizer, post-processor and decoder all read and write them.
void read_byte_level(const Node& n, bool& add_prefix_space, bool& use_regex, bool& trim_offsets) {
  add_prefix_space = n.boolean("add_prefix_space", true);
  use_regex = n.boolean("use_regex", true);
  trim_offsets = n.boolean("trim_offsets", true);
}

ojson byte_level_json(bool add_prefix_space, bool use_regex, bool trim_offsets) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

/// {"type": "Sequence", key: [each step's JSON]}: the three Sequence components alike.
template <class Steps>
ojson sequence_json(const char* key, const Steps& steps) {
  ojson list = ojson::array();
  for (const auto& s : steps) list.push_back(s->to_json());
  return {{"type", "Sequence"}, {key, list}};
}

// ------------------------------------------------------------------------------ normalizers

struct UnicodeNormalizer final : Normalizer {
  std::string name;  // NFC NFD NFKC NFKD
  int options = 0;
  explicit UnicodeNormalizer(std::string n) : name(std::move(n)) {
    options = UTF8PROC_STABLE | (name == "NFC" || name == "NFKC" ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
              (name.size() == 4 ? UTF8PROC_COMPAT : 0);  // NFKC, NFKD
  }
  std::string map(std::string_view s) const {
    utf8proc_uint8_t* dst = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                                &dst, static_cast<utf8proc_option_t>(options));
    if (n < 0) return std::string(s);  // not valid UTF-8: left as it is
    std::string out(reinterpret_cast<const char*>(dst), static_cast<std::size_t>(n));
    std::free(dst);
    return out;
  }
  void normalize(TextPiece& p) const override {
    if (std::all_of(p.text.begin(), p.text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return;
    // Normalised run by run (a run starts at a character that combines with nothing before
    // it), each run's output taking the run's span; if the runs do not add up to the whole
    // text's normal form, the whole text is normalised and spans are per piece.
    PieceBuilder b;
    std::size_t run = 0;
    auto flush = [&](std::size_t end) {
      if (end > run) b.add(map(std::string_view(p.text).substr(run, end - run)), p.span(run, end));
      run = end;
    };
    for_each_char(p.text, [&](char32_t cp, std::size_t i, std::size_t) {
      const bool jamo = (cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2);
      const bool starter = cp == kInvalidCodepoint ||
                           (utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class == 0 && !jamo);
      if (starter) flush(i);
    });
    flush(p.text.size());
    const std::string whole = map(p.text);
    if (whole != b.out.text) {
      const Offset all = p.span(0, p.text.size());
      b.out = {};
      b.add(whole, all);
    }
    p = std::move(b.out);
  }
  ojson to_json() const override { return {{"type", name}}; }
};

struct LowercaseNormalizer final : Normalizer {
  void normalize(TextPiece& p) const override {
    PieceBuilder b;
    std::u32string lower;
    for_each_char(p.text, [&](char32_t cp, std::size_t i, std::size_t len) {
      if (cp == kInvalidCodepoint) return b.add(std::string_view(p.text).substr(i, len), p.span(i, i + len));
      lower.clear();
      append_lower(lower, cp);
      for (char32_t c : lower) b.add(c, p.span(i, i + len));
    });
    p = std::move(b.out);
  }
  ojson to_json() const override { return {{"type", "Lowercase"}}; }
};

/// What Replace's normalizer and decoder both carry: a pattern and its replacement.
struct ReplaceSettings {
  std::shared_ptr<const Regex> pattern;
  bool is_string = true;
  std::string content;
  void read(const Node& n) {
    pattern = read_pattern(n, is_string);
    content = n.string("content", "");
  }
  ojson json() const { return {{"type", "Replace"}, {"pattern", pattern_json(*pattern, is_string)}, {"content", content}}; }
};

struct ReplaceNormalizer final : Normalizer, ReplaceSettings {
  void normalize(TextPiece& p) const override { replace_all(p, *pattern, content); }
  ojson to_json() const override { return json(); }
};

struct PrependNormalizer final : Normalizer {
  std::string prefix;
  void normalize(TextPiece& p) const override { prepend(p, prefix); }
  ojson to_json() const override { return {{"type", "Prepend"}, {"prepend", prefix}}; }
};

struct StripNormalizer final : Normalizer {
  bool left = true, right = true;
  void normalize(TextPiece& p) const override {
    std::size_t b = 0, e = p.text.size();
    if (left)
      while (b < e) {
        std::size_t len = 0;
        if (!is_whitespace(decode_utf8(p.text, b, len))) break;
        b += len;
      }
    if (right)
      while (e > b) {
        std::size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(p.text[start]) & 0xC0) == 0x80) --start;
        std::size_t len = 0;
        if (!is_whitespace(decode_utf8(p.text, start, len)) || start + len != e) break;
        e = start;
      }
    if (b != 0 || e != p.text.size()) p = p.slice(b, e);
  }
  ojson to_json() const override { return {{"type", "Strip"}, {"strip_left", left}, {"strip_right", right}}; }
};

struct SequenceNormalizer final : Normalizer {
  std::vector<std::shared_ptr<const Normalizer>> steps;
  void normalize(TextPiece& p) const override {
    for (const auto& s : steps) s->normalize(p);
  }
  ojson to_json() const override {
    return sequence_json("normalizers", steps);
  }
};

std::shared_ptr<const Normalizer> read_normalizer(const Node& n) {
  const auto type = n.type();
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") return std::make_shared<UnicodeNormalizer>(type);
  if (type == "Lowercase") return std::make_shared<LowercaseNormalizer>();
  if (type == "Replace") {
    auto r = std::make_shared<ReplaceNormalizer>();
    r->read(n);
    return r;
  }
  if (type == "Prepend") {
    auto r = std::make_shared<PrependNormalizer>();
    n.at("prepend");
    r->prefix = n.string("prepend", "");
    return r;
  }
  if (type == "Strip") {
    auto r = std::make_shared<StripNormalizer>();
    r->left = n.boolean("strip_left", true);
    r->right = n.boolean("strip_right", true);
    return r;
  }
  if (type == "Sequence") {
    auto r = std::make_shared<SequenceNormalizer>();
    for (const auto& item : n.items("normalizers")) r->steps.push_back(read_normalizer(item));
    return r;
  }
  n.unsupported("normalizer", "NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, Strip, Sequence");
}

// ------------------------------------------------------------------------------ pre-tokenizers

struct DigitsPreTokenizer final : PreTokenizer {
  bool individual = false;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, is_numeric), individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous,
                  false, out);
    });
  }
  ojson to_json() const override { return {{"type", "Digits"}, {"individual_digits", individual}}; }
};

struct PunctuationPreTokenizer final : PreTokenizer {
  SplitBehavior behavior = SplitBehavior::Isolated;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, [](char32_t c) { return c != kInvalidCodepoint && is_punctuation(c); }),
                  behavior, false, out);
    });
  }
  ojson to_json() const override { return {{"type", "Punctuation"}, {"behavior", behavior_name(behavior)}}; }
};

struct WhitespacePreTokenizer final : PreTokenizer {
  // HF's `\w+|[^\w\s]+` on Rust's regex crate, whose \w is Alphabetic, marks, Nd, Pc, Join_Control.
  Regex words{R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}\s]+)",
              {RegexDialect::Tiktoken, false}};
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, regex_matches(words, p.text), SplitBehavior::Removed, true, out);
    });
  }
  ojson to_json() const override { return {{"type", "Whitespace"}}; }
};

struct WhitespaceSplitPreTokenizer final : PreTokenizer {
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
      split_piece(p, char_matches(p.text, [](char32_t c) { return c != kInvalidCodepoint && is_whitespace(c); }),
                  SplitBehavior::Removed, false, out);
    });
  }
  ojson to_json() const override { return {{"type", "WhitespaceSplit"}}; }
};

enum class PrependScheme : uint8_t { Always, First, Never };

/// What Metaspace's pre-tokenizer and decoder both carry.
struct MetaspaceSettings {
  char32_t replacement = U'\u2581';
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;

  void read(const Node& n) {
    replacement = read_char(n, "replacement", U'\u2581');
    if (n.has("prepend_scheme")) {
      const auto s = n.string("prepend_scheme", "always");
      if (s == "always") scheme = PrependScheme::Always;
      else if (s == "first") scheme = PrependScheme::First;
      else if (s == "never") scheme = PrependScheme::Never;
      else n.at("prepend_scheme").fail("'" + s + "' is not always, first or never");
    } else if (n.has("add_prefix_space")) {  // files written before prepend_scheme existed
      scheme = n.boolean("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    split = n.boolean("split", true);
  }
  ojson json() const {
    return {{"type", "Metaspace"},
            {"replacement", utf8(replacement)},
            {"prepend_scheme", scheme == PrependScheme::Always ? "always" : scheme == PrependScheme::First ? "first" : "never"},
            {"split", split}};
  }
};

struct MetaspacePreTokenizer final : PreTokenizer, MetaspaceSettings {
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    const std::string rep = utf8(replacement);
    split_all(pieces, [&](const TextPiece& in, std::vector<TextPiece>& out) {
      PieceBuilder b;
      for_each_char(in.text, [&](char32_t cp, std::size_t i, std::size_t len) {
        if (cp == U' ')
          b.add(rep, in.span(i, i + len));
        else
          b.add(std::string_view(in.text).substr(i, len), in.span(i, i + len));
      });
      TextPiece p = std::move(b.out);
      const bool starts = p.text.starts_with(rep);
      // "first": only the piece that starts the original text (not one after a special token).
      if (!starts && (scheme == PrependScheme::Always ||
                      (scheme == PrependScheme::First && !in.origin.empty() && in.origin.front().first == 0)))
        prepend(p, rep);
      if (!split) {
        if (!p.text.empty()) out.push_back(std::move(p));
        return;
      }
      split_piece(p, char_matches(p.text, [&](char32_t c) { return c == replacement; }), SplitBehavior::MergedWithNext,
                  false, out);
    });
  }
  ojson to_json() const override { return json(); }
};

std::shared_ptr<const PreTokenizer> read_pre_tokenizer(const Node& n) {
  const auto type = n.type();
  if (type == "ByteLevel") {
    auto r = std::make_shared<ByteLevelPreTokenizer>();
    read_byte_level(n, r->add_prefix_space, r->use_regex, r->trim_offsets);
    return r;
  }
  if (type == "Split") {
    auto r = std::make_shared<SplitPreTokenizer>();
    r->pattern = read_pattern(n, r->pattern_is_string);
    r->behavior = read_behavior(n, "behavior", SplitBehavior::Isolated);
    r->invert = n.boolean("invert", false);
    return r;
  }
  if (type == "Digits") {
    auto r = std::make_shared<DigitsPreTokenizer>();
    r->individual = n.boolean("individual_digits", false);
    return r;
  }
  if (type == "Punctuation") {
    auto r = std::make_shared<PunctuationPreTokenizer>();
    r->behavior = read_behavior(n, "behavior", SplitBehavior::Isolated);
    return r;
  }
  if (type == "Whitespace") return std::make_shared<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_shared<WhitespaceSplitPreTokenizer>();
  if (type == "Metaspace") {
    auto r = std::make_shared<MetaspacePreTokenizer>();
    r->read(n);
    return r;
  }
  if (type == "Sequence") {
    auto r = std::make_shared<SequencePreTokenizer>();
    const auto items = n.items("pretokenizers");
    for (std::size_t i = 0; i < items.size(); ++i) {
      r->steps.push_back(read_pre_tokenizer(items[i]));
      // The byte-level model reads raw bytes: nothing may look at the mapped characters.
      if (i + 1 < items.size() && dynamic_cast<const ByteLevelPreTokenizer*>(r->steps.back().get()))
        items[i + 1].fail("a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
    }
    return r;
  }
  n.unsupported("pre-tokenizer",
                "ByteLevel, Split, Digits, Punctuation, Whitespace, WhitespaceSplit, Metaspace, Sequence");
}

// ------------------------------------------------------------------------------ post-processors

struct TemplatePiece {
  bool special = false;
  std::string id;  // "A"/"B" for sequences, the special token's name otherwise
  int32_t type_id = 0;
};

struct TemplatePostProcessor final : PostProcessor {
  std::vector<TemplatePiece> single, pair;
  std::vector<std::pair<std::string, std::vector<int32_t>>> specials;  // name -> ids, in file order
  ojson specials_json;

  const std::vector<int32_t>& special_ids(const std::string& name) const {
    for (const auto& [n, ids] : specials)
      if (n == name) return ids;
    throw Error("TemplateProcessing: special token '" + name + "' is not in special_tokens");
  }
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    PairEncoding e;
    for (const auto& p : b ? pair : single) {
      const std::vector<int32_t>& ids = p.special ? special_ids(p.id) : (p.id == "A" ? a : (b ? *b : a));
      e.ids.insert(e.ids.end(), ids.begin(), ids.end());
      e.type_ids.insert(e.type_ids.end(), ids.size(), p.type_id);
    }
    return e;
  }
  static ojson pieces_json(const std::vector<TemplatePiece>& ps) {
    ojson list = ojson::array();
    for (const auto& p : ps)
      list.push_back(p.special ? ojson{{"SpecialToken", {{"id", p.id}, {"type_id", p.type_id}}}}
                               : ojson{{"Sequence", {{"id", p.id}, {"type_id", p.type_id}}}});
    return list;
  }
  ojson to_json() const override {
    return {{"type", "TemplateProcessing"}, {"single", pieces_json(single)}, {"pair", pieces_json(pair)},
            {"special_tokens", specials_json}};
  }
};

std::vector<TemplatePiece> read_template(const Node& n, const char* key) {
  std::vector<TemplatePiece> out;
  if (!n.has(key)) return out;
  for (const auto& item : n.items(key)) {
    TemplatePiece p;
    const char* kind = item.j.contains("SpecialToken") ? "SpecialToken" : item.j.contains("Sequence") ? "Sequence" : nullptr;
    if (!kind) item.fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    const Node body = item.at(kind);
    p.special = std::string(kind) == "SpecialToken";
    p.id = body.string("id", "");
    p.type_id = static_cast<int32_t>(body.integer("type_id", 0));
    if (!p.special && p.id != "A" && p.id != "B") body.fail("sequence id '" + p.id + "' is not A or B");
    out.push_back(std::move(p));
  }
  return out;
}

/// BertProcessing: [CLS] A [SEP] (B [SEP]), type ids 0 then 1. RobertaProcessing: <s> A </s>
/// (</s> B </s>), type ids all 0.
struct BertStylePostProcessor final : PostProcessor {
  bool roberta = false;
  std::pair<std::string, int32_t> sep, cls;
  bool trim_offsets = true, add_prefix_space = true;  // RoBERTa's offset settings, kept for the file
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    PairEncoding e;
    e.ids.push_back(cls.second);
    e.ids.insert(e.ids.end(), a.begin(), a.end());
    e.ids.push_back(sep.second);
    e.type_ids.assign(e.ids.size(), 0);
    if (b) {
      if (roberta) e.ids.push_back(sep.second);
      e.ids.insert(e.ids.end(), b->begin(), b->end());
      e.ids.push_back(sep.second);
      e.type_ids.resize(e.ids.size(), roberta ? 0 : 1);
    }
    return e;
  }
  ojson to_json() const override {
    ojson j = {{"type", roberta ? "RobertaProcessing" : "BertProcessing"},
               {"sep", {sep.first, sep.second}},
               {"cls", {cls.first, cls.second}}};
    if (roberta) {
      j["trim_offsets"] = trim_offsets;
      j["add_prefix_space"] = add_prefix_space;
    }
    return j;
  }
};

/// ByteLevel as a post-processor only trims offsets; ids pass unchanged.
struct ByteLevelPostProcessor final : PostProcessor {
  bool add_prefix_space = true, trim_offsets = true, use_regex = true;
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    PairEncoding e{a, std::vector<int32_t>(a.size(), 0)};
    if (b) {
      e.ids.insert(e.ids.end(), b->begin(), b->end());
      e.type_ids.resize(e.ids.size(), 1);
    }
    return e;
  }
  ojson to_json() const override {
    return byte_level_json(add_prefix_space, use_regex, trim_offsets);
  }
};

/// HF's processors.Sequence: each step in turn. ByteLevel steps pass ids through and keep the
/// two sequences apart, so the result is that of the one step that adds tokens (Llama 3's
/// ByteLevel + TemplateProcessing), or the plain ids when none does.
struct SequencePostProcessor final : PostProcessor {
  std::vector<std::shared_ptr<const PostProcessor>> steps;
  std::shared_ptr<const PostProcessor> adding;  // the step that adds tokens, if any
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    if (adding) return adding->process(a, b);
    PairEncoding e{a, std::vector<int32_t>(a.size(), 0)};
    if (b) {
      e.ids.insert(e.ids.end(), b->begin(), b->end());
      e.type_ids.resize(e.ids.size(), 1);
    }
    return e;
  }
  ojson to_json() const override { return sequence_json("processors", steps); }
};

std::shared_ptr<const PostProcessor> read_post_processor(const Node& n,
                                                         const std::function<int32_t(std::string_view)>& token_id) {
  const auto type = n.type();
  if (type == "Sequence") {
    auto r = std::make_shared<SequencePostProcessor>();
    for (const auto& item : n.items("processors")) {
      r->steps.push_back(read_post_processor(item, token_id));
      const auto* seq = dynamic_cast<const SequencePostProcessor*>(r->steps.back().get());
      const bool adds = seq ? seq->adding != nullptr : !dynamic_cast<const ByteLevelPostProcessor*>(r->steps.back().get());
      if (!adds) continue;
      // HF would run the second on the first's output, special tokens included; no tokenizer does.
      if (r->adding)
        item.fail("a second post-processor that adds special tokens in one Sequence is not supported (keep one "
                  "TemplateProcessing, BertProcessing or RobertaProcessing; ByteLevel steps may go with it)");
      r->adding = seq ? seq->adding : r->steps.back();
    }
    return r;
  }
  if (type == "ByteLevel") {
    auto r = std::make_shared<ByteLevelPostProcessor>();
    read_byte_level(n, r->add_prefix_space, r->use_regex, r->trim_offsets);
    return r;
  }
  if (type == "TemplateProcessing") {
    auto r = std::make_shared<TemplatePostProcessor>();
    r->single = read_template(n, "single");
    r->pair = read_template(n, "pair");
    const Node st = n.at("special_tokens");
    if (!st.j.is_object()) st.fail("expected an object of token name -> {id, ids, tokens}");
    r->specials_json = ojson::object();
    for (auto it = st.j.begin(); it != st.j.end(); ++it) {
      const Node tok{it.value(), st.path + "." + it.key(), n.file};
      std::vector<int32_t> ids;
      for (const auto& v : tok.at("ids").j) ids.push_back(v.get<int32_t>());
      r->specials.emplace_back(it.key(), ids);
      r->specials_json[it.key()] = it.value();
    }
    for (const auto* list : {&r->single, &r->pair})
      for (const auto& p : *list)
        if (p.special && std::none_of(r->specials.begin(), r->specials.end(), [&](const auto& s) { return s.first == p.id; }))
          st.fail("the template names '" + p.id + "', which special_tokens does not define");
    return r;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto r = std::make_shared<BertStylePostProcessor>();
    r->roberta = type == "RobertaProcessing";
    auto pair = [&](const char* key) {
      const Node p = n.at(key);
      if (!p.j.is_array() || p.j.size() != 2 || !p.j[0].is_string() || !p.j[1].is_number_integer())
        p.fail("expected [token, id]");
      std::pair<std::string, int32_t> out{p.j[0].get<std::string>(), p.j[1].get<int32_t>()};
      if (token_id(out.first) != out.second)
        p.fail("'" + out.first + "' is not token " + std::to_string(out.second) + " of the vocabulary");
      return out;
    };
    r->sep = pair("sep");
    r->cls = pair("cls");
    r->trim_offsets = n.boolean("trim_offsets", true);
    r->add_prefix_space = n.boolean("add_prefix_space", true);
    return r;
  }
  n.unsupported("post-processor", "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence");
}

// ------------------------------------------------------------------------------ decoders

struct ByteLevelDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override {
    std::string out, bytes;
    for (const auto& t : tokens) out += unicode_to_bytes(t, bytes) ? bytes : t;
    tokens.assign(1, std::move(out));
  }
  ojson to_json() const override {
    return byte_level_json(true, true, true);
  }
};

struct MetaspaceDecoder final : Decoder, MetaspaceSettings {
  void decode(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for_each_char(tokens[i], [&](char32_t cp, std::size_t at, std::size_t len) {
        if (cp != replacement) return out.append(tokens[i], at, len), void();
        if (!(i == 0 && scheme != PrependScheme::Never)) out += ' ';
      });
      tokens[i] = std::move(out);
    }
  }
  ojson to_json() const override { return json(); }
};

struct ByteFallbackDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      // A run of byte tokens that is not valid UTF-8 decodes to one U+FFFD per byte, as HF.
      bool valid = true;
      for (std::size_t i = 0; i < run.size();) {
        std::size_t len = 0;
        if (decode_utf8(run, i, len) == kInvalidCodepoint) valid = false;
        i += len;
      }
      if (valid)
        out.push_back(run);
      else
        out.insert(out.end(), run.size(), "\xEF\xBF\xBD");
      run.clear();
    };
    for (auto& t : tokens) {
      const bool byte = t.size() == 6 && t.starts_with("<0x") && t.back() == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                        std::isxdigit(static_cast<unsigned char>(t[4]));
      if (byte) {
        run.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
  ojson to_json() const override { return {{"type", "ByteFallback"}}; }
};

struct FuseDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
  ojson to_json() const override { return {{"type", "Fuse"}}; }
};

struct StripDecoder final : Decoder {
  char32_t content = U' ';
  int64_t start = 0, stop = 0;
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::u32string chars;
      for_each_char(t, [&](char32_t cp, std::size_t, std::size_t) { chars.push_back(cp); });
      std::size_t from = 0, to = chars.size();
      for (int64_t i = 0; i < start && static_cast<std::size_t>(i) < chars.size() && chars[i] == content; ++i) from = i + 1;
      for (int64_t i = 0; i < stop && static_cast<std::size_t>(i) < chars.size(); ++i) {
        const std::size_t at = chars.size() - 1 - i;
        if (chars[at] != content) break;
        to = at;
      }
      std::string out;
      for (std::size_t i = from; i < std::max(from, to); ++i) append_utf8(out, chars[i]);
      t = std::move(out);
    }
  }
  ojson to_json() const override { return {{"type", "Strip"}, {"content", utf8(content)}, {"start", start}, {"stop", stop}}; }
};

struct ReplaceDecoder final : Decoder, ReplaceSettings {
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      TextPiece p = TextPiece::of(t, 0);
      replace_all(p, *pattern, content);
      t = std::move(p.text);
    }
  }
  ojson to_json() const override { return json(); }
};

struct SequenceDecoder final : Decoder {
  std::vector<std::shared_ptr<const Decoder>> steps;
  void decode(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps) s->decode(tokens);
  }
  ojson to_json() const override {
    return sequence_json("decoders", steps);
  }
};

std::shared_ptr<const Decoder> read_decoder(const Node& n) {
  const auto type = n.type();
  if (type == "ByteLevel") return std::make_shared<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto r = std::make_shared<MetaspaceDecoder>();
    r->read(n);
    return r;
  }
  if (type == "ByteFallback") return std::make_shared<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_shared<FuseDecoder>();
  if (type == "Strip") {
    auto r = std::make_shared<StripDecoder>();
    r->content = read_char(n, "content", U' ');
    r->start = n.integer("start", 0);
    r->stop = n.integer("stop", 0);
    return r;
  }
  if (type == "Replace") {
    auto r = std::make_shared<ReplaceDecoder>();
    r->read(n);
    return r;
  }
  if (type == "Sequence") {
    auto r = std::make_shared<SequenceDecoder>();
    for (const auto& item : n.items("decoders")) r->steps.push_back(read_decoder(item));
    return r;
  }
  n.unsupported("decoder", "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence");
}

}  // namespace

// ------------------------------------------------------------------------------ public parts

void ByteLevelPreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  if (add_prefix_space)
    for (auto& p : pieces)
      if (!p.text.starts_with(' ')) prepend(p, " ");
  if (!use_regex) return;
  split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
    pretokenize_gpt2(p.text, [&](std::size_t b, std::size_t e) { out.push_back(p.slice(b, e)); });
  });
}

ojson ByteLevelPreTokenizer::to_json() const { return byte_level_json(add_prefix_space, use_regex, trim_offsets); }

void SplitPreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  split_all(pieces, [&](const TextPiece& p, std::vector<TextPiece>& out) {
    split_piece(p, regex_matches(*pattern, p.text), behavior, invert, out);
  });
}

ojson SplitPreTokenizer::to_json() const {
  // A tiktoken encoding's pattern is written in the form Oniguruma reads the same way.
  std::string onig = pattern->pattern();
  if (pattern->options().dialect == RegexDialect::Tiktoken)
    for (const char* name : {"gpt2", "cl100k", "o200k"})
      if (named_split_pattern(name, RegexDialect::Tiktoken) == onig) {
        onig = *named_split_pattern(name, RegexDialect::Oniguruma);
        break;
      }
  if (onig != pattern->pattern())
    return {{"type", "Split"}, {"pattern", {{"Regex", onig}}}, {"behavior", behavior_name(behavior)}, {"invert", invert}};
  return {{"type", "Split"}, {"pattern", pattern_json(*pattern, pattern_is_string)},
          {"behavior", behavior_name(behavior)}, {"invert", invert}};
}

void SequencePreTokenizer::pre_tokenize(std::vector<TextPiece>& pieces) const {
  for (const auto& s : steps) s->pre_tokenize(pieces);
}

ojson SequencePreTokenizer::to_json() const {
  return sequence_json("pretokenizers", steps);
}

Pipeline Pipeline::gpt2(bool add_prefix_space) {
  Pipeline p;
  auto pre = std::make_shared<ByteLevelPreTokenizer>();
  pre->add_prefix_space = add_prefix_space;
  p.pre_tokenizer = pre;
  auto post = std::make_shared<ByteLevelPostProcessor>();
  post->add_prefix_space = add_prefix_space;
  p.post_processor = post;
  p.decoder = std::make_shared<ByteLevelDecoder>();
  return p;
}

Pipeline Pipeline::byte_level_split(const std::string& pattern, RegexDialect dialect) {
  Pipeline p;
  auto split = std::make_shared<SplitPreTokenizer>();
  split->pattern = std::make_shared<Regex>(pattern, RegexOptions{dialect, false});
  split->behavior = SplitBehavior::Isolated;
  auto byte_level = std::make_shared<ByteLevelPreTokenizer>();
  byte_level->add_prefix_space = false;
  byte_level->use_regex = false;
  auto seq = std::make_shared<SequencePreTokenizer>();
  seq->steps = {split, byte_level};
  p.pre_tokenizer = seq;
  auto post = std::make_shared<ByteLevelPostProcessor>();
  post->add_prefix_space = false;
  post->use_regex = false;
  p.post_processor = post;
  p.decoder = std::make_shared<ByteLevelDecoder>();
  return p;
}

const ByteLevelPreTokenizer* Pipeline::byte_level() const {
  const PreTokenizer* last = pre_tokenizer.get();
  if (const auto* seq = dynamic_cast<const SequencePreTokenizer*>(last))
    last = seq->steps.empty() ? nullptr : seq->steps.back().get();
  return dynamic_cast<const ByteLevelPreTokenizer*>(last);
}

const Regex* Pipeline::split_pattern() const {
  const auto* seq = dynamic_cast<const SequencePreTokenizer*>(pre_tokenizer.get());
  if (!seq || seq->steps.size() != 2) return nullptr;
  const auto* split = dynamic_cast<const SplitPreTokenizer*>(seq->steps[0].get());
  const auto* byte_level = dynamic_cast<const ByteLevelPreTokenizer*>(seq->steps[1].get());
  if (!split || !byte_level || split->invert || split->behavior != SplitBehavior::Isolated || byte_level->use_regex ||
      byte_level->add_prefix_space)
    return nullptr;
  return split->pattern.get();
}

void Pipeline::to_json(ojson& j) const {
  j["normalizer"] = normalizer ? normalizer->to_json() : ojson(nullptr);
  j["pre_tokenizer"] = pre_tokenizer ? pre_tokenizer->to_json() : ojson(nullptr);
  j["post_processor"] = post_processor ? post_processor->to_json() : ojson(nullptr);
  j["decoder"] = decoder ? decoder->to_json() : ojson(nullptr);
}

Pipeline parse_pipeline(const nlohmann::json& j, const std::string& file,
                        const std::function<int32_t(std::string_view)>& token_id) {
  Pipeline p;
  const Node root{j, "", file};
  auto node = [&](const char* key) { return Node{j[key], key, file}; };
  if (root.has("normalizer")) p.normalizer = read_normalizer(node("normalizer"));
  if (root.has("pre_tokenizer")) p.pre_tokenizer = read_pre_tokenizer(node("pre_tokenizer"));
  if (root.has("post_processor")) p.post_processor = read_post_processor(node("post_processor"), token_id);
  if (root.has("decoder")) p.decoder = read_decoder(node("decoder"));
  return p;
}

Pipeline pipeline_for_pre_tokenizer(const std::string& name) {
  if (name == "gpt2") return Pipeline::gpt2();
  if (auto pattern = named_split_pattern(name, RegexDialect::Oniguruma)) return Pipeline::byte_level_split(*pattern);
  return Pipeline::byte_level_split(name);
}

}  // namespace lathe::tokenizer
