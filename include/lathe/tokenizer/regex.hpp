// Regular expressions for pre-tokenization, on PCRE2 (JIT-compiled, Unicode properties): the
// split patterns of tiktoken encodings and of Hugging Face `Split` pre-tokenizers.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace lathe::tokenizer {

/// Which engine's meaning a pattern is written for. The two differ in `$` and `^`:
/// tiktoken (Rust regex / fancy-regex) anchors them at the ends of the text, Hugging Face
/// tokenizers (Oniguruma, Ruby syntax) at line ends; Oniguruma's are translated for PCRE2
/// (`{n,m}+` is not possessive there, `\h` is a hex digit, `(?m)` is PCRE2's `(?s)`).
enum class RegexDialect : uint8_t { Tiktoken, Oniguruma };

struct RegexOptions {
  RegexDialect dialect = RegexDialect::Oniguruma;
  bool literal = false;  // the pattern is a plain string (a `{"String": ...}` pattern)
};

class Regex {
 public:
  /// Compiles `pattern` (UTF-8, Unicode properties, `\s` as Unicode White_Space). Throws
  /// lathe::Error with PCRE2's message and the offset of the problem.
  explicit Regex(std::string pattern, RegexOptions options = {});

  const std::string& pattern() const { return pattern_; }
  const RegexOptions& options() const { return options_; }

  /// The first match in text[from, end): sets [begin, end) and returns true, or false.
  /// An empty match is reported like any other.
  bool find(std::string_view text, std::size_t from, std::size_t& begin, std::size_t& end) const;

  /// Calls f(begin, end) for each successive match, as Oniguruma's (rust-onig), Rust regex's
  /// and fancy-regex's find_iter do: an empty match that ends where the previous match ended
  /// is skipped and the search resumes one character further on (so `a*` on "ab" gives "a"
  /// and the empty match at the end, not the empty match before "b").
  template <class F>
  void for_each_match(std::string_view text, F&& f) const {
    std::size_t at = 0, b = 0, e = 0;
    std::size_t last_end = std::string_view::npos;
    while (at <= text.size() && find(text, at, b, e)) {
      if (e == b && e == last_end) {
        if (at >= text.size()) break;
        ++at;
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
        continue;
      }
      f(b, e);
      at = last_end = e;
    }
  }

  /// Calls f(begin, end) for each non-empty match and each stretch of text between matches, in
  /// order: the pieces of a Split pre-tokenizer with behavior Isolated.
  template <class F>
  void for_each_piece(std::string_view text, F&& f) const {
    std::size_t prev = 0;
    for_each_match(text, [&](std::size_t b, std::size_t e) {
      if (prev < b) f(prev, b);
      if (e > b) f(b, e);
      prev = e;
    });
    if (prev < text.size()) f(prev, text.size());
  }

 private:
  struct Compiled;
  std::string pattern_;
  RegexOptions options_;
  std::shared_ptr<const Compiled> compiled_;
};

/// The split pattern of a well-known encoding: "gpt2" (also r50k_base / p50k_base), "cl100k"
/// (cl100k_base) or "o200k" (o200k_base), written for `dialect` (tiktoken's own pattern with
/// possessive quantifiers, or the form Hugging Face tokenizer.json files carry). nullopt for any
/// other name.
std::optional<std::string> named_split_pattern(std::string_view name, RegexDialect dialect);

}  // namespace lathe::tokenizer
