#include "lathe/tokenizer/regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <vector>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer {
namespace {

// Unicode White_Space, the meaning of \s in Rust's regex crate and in Oniguruma. PCRE2's \s
// under UCP also takes U+180E, which Unicode no longer counts as a space.
constexpr std::string_view kSpaceSet = "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                                       "\\x{202F}\\x{205F}\\x{3000}";
// \w in Oniguruma and Rust: letters, marks, decimal digits, connector punctuation. PCRE2 10.42's
// \w leaves out the marks and takes the other numbers.
constexpr std::string_view kWordSet = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

/// An interval quantifier at p[i] ('{'): {n}, {n,}, {n,m} or Oniguruma's {,m}. Returns its
/// length (0 when the braces are a literal) and writes it in PCRE2's form to `out`.
std::size_t read_interval(std::string_view p, std::size_t i, std::string& out) {
  std::size_t j = i + 1;
  const std::size_t lo = j;
  while (j < p.size() && p[j] >= '0' && p[j] <= '9') ++j;
  const std::string_view low = p.substr(lo, j - lo);
  std::string_view high;
  bool comma = false;
  if (j < p.size() && p[j] == ',') {
    comma = true;
    const std::size_t hi = ++j;
    while (j < p.size() && p[j] >= '0' && p[j] <= '9') ++j;
    high = p.substr(hi, j - hi);
  }
  if (j >= p.size() || p[j] != '}' || (low.empty() && high.empty())) return 0;
  out = "{";
  out += low.empty() ? std::string_view("0") : low;
  if (comma) {
    out += ',';
    out += high;
  }
  out += '}';
  return j + 1 - i;
}

/// The state of rewrite() as it reads the pattern: the output so far, where the last atom and
/// each open group start in it, whether a bracket class is open.
class Rewriter {
 public:
  Rewriter(std::string_view p, RegexDialect dialect) : p_(p), onig_(dialect == RegexDialect::Oniguruma) {
    out_.reserve(p.size() + 32);
  }

  std::string run() {
    for (i_ = 0; i_ < p_.size(); ++i_) step();
    return std::move(out_);
  }

 private:
  static constexpr std::size_t npos = std::string::npos;

  /// Reads p_[i_] (and what belongs to it), leaving i_ on its last character.
  void step() {
    const char c = p_[i_];
    if (c == '\\' && i_ + 1 < p_.size()) return escape();
    if (in_class_) return class_member(c);
    if (c == '[') return open_class();
    if (c == '(') return open_group();
    if (c == ')') return close_group();
    if (onig_ && c == '{' && atom_ != npos && interval()) return;
    if (c == '|' || c == '*' || c == '+' || c == '?' || c == '{') {
      atom_ = npos;
    } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {  // not inside a UTF-8 sequence
      atom_ = out_.size();
    }
    out_ += c;
  }

  void escape() {
    const char e = p_[i_ + 1];
    if (!in_class_) atom_ = out_.size();
    std::string_view set = e == 's' || e == 'S' ? kSpaceSet : e == 'w' || e == 'W' ? kWordSet : std::string_view();
    if (onig_ && (e == 'h' || e == 'H')) set = "0-9a-fA-F";
    const bool negated = e == 'S' || e == 'W' || e == 'H';
    if (!set.empty() && !(in_class_ && negated)) {
      if (in_class_) {
        out_ += set;
      } else {
        out_ += negated ? "[^" : "[";
        out_ += set;
        out_ += ']';
      }
      ++i_;
      return;
    }
    if (onig_ && e == 'u' && i_ + 5 < p_.size() &&
        std::all_of(p_.begin() + static_cast<std::ptrdiff_t>(i_) + 2, p_.begin() + static_cast<std::ptrdiff_t>(i_) + 6,
                    [](char h) { return std::isxdigit(static_cast<unsigned char>(h)) != 0; })) {
      out_ += "\\x{" + std::string(p_.substr(i_ + 2, 4)) + "}";
      i_ += 5;
      return;
    }
    out_ += '\\';
    out_ += e;
    ++i_;
    // \p{..} \x{..} and the like: their braces are not an interval.
    if (i_ + 1 < p_.size() && p_[i_ + 1] == '{' && std::string_view("pPxoNkg").find(e) != std::string_view::npos) {
      const auto close = p_.find('}', i_ + 1);
      if (close != std::string_view::npos) {
        out_.append(p_.substr(i_ + 1, close - i_));
        i_ = close;
      }
    }
  }

  void class_member(char c) {
    if (c == '[' && i_ + 1 < p_.size() && p_[i_ + 1] == ':') {  // [:alpha:]
      const auto close = p_.find(":]", i_ + 2);
      if (close != std::string_view::npos) {
        out_.append(p_.substr(i_, close + 2 - i_));
        i_ = close + 1;
        return;
      }
    }
    if (c == ']') in_class_ = false;
    out_ += c;
  }

  void open_class() {
    atom_ = out_.size();
    in_class_ = true;
    out_ += '[';
    // A ']' right after '[' or '[^' is a literal member.
    if (i_ + 1 < p_.size() && p_[i_ + 1] == '^') out_ += p_[++i_];
    if (i_ + 1 < p_.size() && p_[i_ + 1] == ']') out_ += p_[++i_];
  }

  void open_group() {
    groups_.push_back(out_.size());
    atom_ = npos;
    out_ += '(';
    if (onig_ && i_ + 1 < p_.size() && p_[i_ + 1] == '?') {  // (?imx-imx) or (?imx-imx:
      std::size_t j = i_ + 2;
      while (j < p_.size() && std::string_view("imx-").find(p_[j]) != std::string_view::npos) ++j;
      if (j > i_ + 2 && j < p_.size() && (p_[j] == ')' || p_[j] == ':')) {
        out_ += '?';
        for (std::size_t k = i_ + 2; k < j; ++k) out_ += p_[k] == 'm' ? 's' : p_[k];
        i_ = j - 1;
      }
    }
  }

  void close_group() {
    out_ += ')';
    if (!groups_.empty()) {
      atom_ = groups_.back();
      groups_.pop_back();
    }
  }

  /// An Oniguruma interval after an atom; false (nothing read) when p_[i_] starts none.
  bool interval() {
    std::string interval;
    const std::size_t len = read_interval(p_, i_, interval);
    if (!len) return false;
    i_ += len - 1;
    std::string next;
    const bool repeated = i_ + 1 < p_.size() && (p_[i_ + 1] == '+' || p_[i_ + 1] == '*' ||
                                                 (p_[i_ + 1] == '{' && read_interval(p_, i_ + 1, next) > 0));
    if (repeated) {
      out_.insert(atom_, "(?:");
      out_ += interval;
      out_ += ')';
      // The group is the atom the next quantifier repeats.
    } else {
      out_ += interval;
      atom_ = npos;
    }
    return true;
  }

  std::string_view p_;
  bool onig_;
  std::string out_;
  std::size_t i_ = 0;
  bool in_class_ = false;
  std::vector<std::size_t> groups_;  // where each open group starts in out_
  std::size_t atom_ = npos;          // where the last complete atom starts in out_, npos if none
};

/// Rewrites a pattern into PCRE2's syntax with its own engine's meaning. Both dialects: \s \S
/// \w \W become explicit classes (inside a bracket class \s and \w expand in place; \S and \W
/// there keep PCRE2's meaning). Oniguruma (Ruby syntax) also: an interval followed by a
/// quantifier (`\p{N}{1,3}+`) repeats the repetition, where PCRE2 would read `{n,m}+` as
/// possessive, so the quantified atom is grouped; {,m} is {0,m}; \h \H are hex digits, not
/// horizontal space; \uHHHH is a code point; the flag m is PCRE2's s (dot matches newline).
std::string rewrite(std::string_view p, RegexDialect dialect) { return Rewriter(p, dialect).run(); }

/// Per-thread match data, match context and JIT stack, shared by every pattern.
struct ThreadMatch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatch() {
    data = pcre2_match_data_create(16, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    if (!data || !context || !stack) throw Error("regex: out of memory creating PCRE2 match data");
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatch& thread_match() {
  thread_local ThreadMatch m;
  return m;
}

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  pcre2_get_error_message(code, buf.data(), buf.size());
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

}  // namespace

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

Regex::Regex(std::string pattern, RegexOptions options) : pattern_(std::move(pattern)), options_(options) {
  uint32_t flags = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  std::string source = pattern_;
  if (options_.literal) {
    flags |= PCRE2_LITERAL;
  } else {
    source = rewrite(pattern_, options_.dialect);
    flags |= PCRE2_UCP | (options_.dialect == RegexDialect::Oniguruma ? PCRE2_MULTILINE : PCRE2_DOLLAR_ENDONLY);
  }
  int code = 0;
  PCRE2_SIZE at = 0;
  auto compiled = std::make_shared<Compiled>();
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), flags, &code, &at, nullptr);
  if (!compiled->code)
    throw Error("regex '" + pattern_ + "': " + pcre2_message(code) +
                (options_.literal ? std::string() : " (near offset " + std::to_string(at) + ")"));
  compiled->jit = pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE) == 0;
  compiled_ = std::move(compiled);
}

bool Regex::find(std::string_view text, std::size_t from, std::size_t& begin, std::size_t& end) const {
  ThreadMatch& m = thread_match();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const int rc = compiled_->jit ? pcre2_jit_match(compiled_->code, subject, text.size(), from, 0, m.data, m.context)
                                : pcre2_match(compiled_->code, subject, text.size(), from, 0, m.data, m.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw Error("regex '" + pattern_ + "': matching failed: " + pcre2_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.data);
  begin = ov[0];
  end = ov[1];
  return true;
}

std::optional<std::string> named_split_pattern(std::string_view name, RegexDialect dialect) {
  const bool tiktoken = dialect == RegexDialect::Tiktoken;
  if (name == "gpt2" || name == "r50k_base" || name == "p50k_base" || name == "p50k_edit")
    return tiktoken ? R"('(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s)"
                    : R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  if (name == "cl100k" || name == "cl100k_base")
    // Oniguruma's {1,3}+ is not possessive: the tokenizer.json form (Llama 3's) has none.
    return tiktoken ? R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s)"
                    : R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  if (name == "o200k" || name == "o200k_base")
    return std::string(R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)") +
           R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)" +
           R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  return std::nullopt;
}

}  // namespace lathe::tokenizer
