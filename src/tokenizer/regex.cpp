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
  out = "{" + std::string(low.empty() ? "0" : low) + (comma ? "," + std::string(high) : std::string()) + "}";
  return j + 1 - i;
}

/// Rewrites a pattern into PCRE2's syntax with its own engine's meaning. Both dialects: \s \S
/// \w \W become explicit classes (inside a bracket class \s and \w expand in place; \S and \W
/// there keep PCRE2's meaning). Oniguruma (Ruby syntax) also: an interval followed by a
/// quantifier (`\p{N}{1,3}+`) repeats the repetition, where PCRE2 would read `{n,m}+` as
/// possessive, so the quantified atom is grouped; {,m} is {0,m}; \h \H are hex digits, not
/// horizontal space; \uHHHH is a code point; the flag m is PCRE2's s (dot matches newline).
std::string rewrite(std::string_view p, RegexDialect dialect) {
  const bool onig = dialect == RegexDialect::Oniguruma;
  constexpr std::size_t npos = std::string::npos;
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  std::vector<std::size_t> groups;  // where each open group starts in `out`
  std::size_t atom = npos;          // where the last complete atom starts in `out`, npos if none
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (!in_class) atom = out.size();
      std::string_view set = e == 's' || e == 'S' ? kSpaceSet : e == 'w' || e == 'W' ? kWordSet : std::string_view();
      if (onig && (e == 'h' || e == 'H')) set = "0-9a-fA-F";
      const bool negated = e == 'S' || e == 'W' || e == 'H';
      if (!set.empty() && !(in_class && negated)) {
        if (in_class) {
          out += set;
        } else {
          out += negated ? "[^" : "[";
          out += set;
          out += ']';
        }
        ++i;
        continue;
      }
      if (onig && e == 'u' && i + 5 < p.size() &&
          std::all_of(p.begin() + static_cast<std::ptrdiff_t>(i) + 2, p.begin() + static_cast<std::ptrdiff_t>(i) + 6,
                      [](char h) { return std::isxdigit(static_cast<unsigned char>(h)) != 0; })) {
        out += "\\x{" + std::string(p.substr(i + 2, 4)) + "}";
        i += 5;
        continue;
      }
      out += c;
      out += e;
      ++i;
      // \p{..} \x{..} and the like: their braces are not an interval.
      if (i + 1 < p.size() && p[i + 1] == '{' && std::string_view("pPxoNkg").find(e) != std::string_view::npos) {
        const auto close = p.find('}', i + 1);
        if (close != std::string_view::npos) {
          out.append(p.substr(i + 1, close - i));
          i = close;
        }
      }
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
        const auto close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out.append(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
      }
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      atom = out.size();
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == '(') {
      groups.push_back(out.size());
      atom = npos;
      out += c;
      if (onig && i + 1 < p.size() && p[i + 1] == '?') {  // (?imx-imx) or (?imx-imx:
        std::size_t j = i + 2;
        while (j < p.size() && std::string_view("imx-").find(p[j]) != std::string_view::npos) ++j;
        if (j > i + 2 && j < p.size() && (p[j] == ')' || p[j] == ':')) {
          out += '?';
          for (std::size_t k = i + 2; k < j; ++k) out += p[k] == 'm' ? 's' : p[k];
          i = j - 1;
        }
      }
      continue;
    }
    if (c == ')') {
      out += c;
      if (!groups.empty()) {
        atom = groups.back();
        groups.pop_back();
      }
      continue;
    }
    std::string interval;
    if (onig && c == '{' && atom != npos) {
      if (const std::size_t len = read_interval(p, i, interval)) {
        i += len - 1;
        std::string next;
        const bool repeated = i + 1 < p.size() && (p[i + 1] == '+' || p[i + 1] == '*' ||
                                                   (p[i + 1] == '{' && read_interval(p, i + 1, next) > 0));
        if (repeated) {
          out.insert(atom, "(?:");
          out += interval;
          out += ')';
          // The group is the atom the next quantifier repeats.
        } else {
          out += interval;
          atom = npos;
        }
        continue;
      }
    }
    if (c == '|' || c == '*' || c == '+' || c == '?' || c == '{') {
      atom = npos;
    } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {  // not inside a UTF-8 sequence
      atom = out.size();
    }
    out += c;
  }
  return out;
}

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
