#include "lathe/tokenizer/regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

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

/// Rewrites \s \S \w \W into explicit classes with the other engines' meaning. Inside a
/// bracket class \s and \w expand in place; \S and \W there keep PCRE2's meaning.
std::string rewrite_classes(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      std::string_view set = e == 's' || e == 'S' ? kSpaceSet : e == 'w' || e == 'W' ? kWordSet : std::string_view();
      const bool negated = e == 'S' || e == 'W';
      if (!set.empty() && !(in_class && negated)) {
        if (in_class) {
          out += set;
        } else {
          out += negated ? "[^" : "[";
          out += set;
          out += ']';
        }
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
      const auto close = p.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(p.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
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
    source = rewrite_classes(pattern_);
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
