#define PCRE2_CODE_UNIT_WIDTH 8
#include "lathe/tokenizer/py_regex.hpp"

#include <pcre2.h>

#include "lathe/core/error.hpp"

namespace lathe::tokenizer {

struct PyRegex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

PyRegex::PyRegex(const std::string& pattern) : code_(std::make_unique<Code>()), pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE at = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                              &err, &at, nullptr);
  if (!code_->code) {
    std::string msg(256, '\0');
    pcre2_get_error_message(err, reinterpret_cast<PCRE2_UCHAR*>(msg.data()), msg.size());
    throw Error("regex '" + pattern + "': " + std::string(msg.c_str()) + " at offset " + std::to_string(at));
  }
  uint32_t n = 0;
  pcre2_pattern_info(code_->code, PCRE2_INFO_CAPTURECOUNT, &n);
  groups_ = static_cast<int>(n);
}

PyRegex::~PyRegex() = default;
PyRegex::PyRegex(PyRegex&&) noexcept = default;

template <class F>
void PyRegex::each(std::string_view text, F&& f) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t at = 0;
  // Python (3.7+): an empty match may follow a non-empty one at the same place; after an empty
  // match the next one is non-empty there or starts further on.
  bool last_empty = false;
  while (at <= text.size()) {
    const uint32_t flags = last_empty ? PCRE2_NOTEMPTY_ATSTART : 0;
    const int rc = pcre2_match(code_->code, subject, text.size(), at, flags, data, nullptr);
    if (rc < 0) break;  // (after an empty match the search above already looked further on)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    f(ov, rc);
    last_empty = ov[0] == ov[1];
    at = ov[1];
  }
  pcre2_match_data_free(data);
}

std::vector<std::vector<std::string>> PyRegex::findall(std::string_view text) const {
  std::vector<std::vector<std::string>> out;
  each(text, [&](const PCRE2_SIZE* ov, int rc) {
    std::vector<std::string> m;
    if (groups_ == 0) {
      m.emplace_back(text.substr(ov[0], ov[1] - ov[0]));
    } else {
      for (int g = 1; g <= groups_; ++g) {
        const bool set = g < rc && ov[2 * g] != PCRE2_UNSET;
        m.emplace_back(set ? std::string(text.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g])) : std::string());
      }
    }
    out.push_back(std::move(m));
  });
  return out;
}

namespace {

/// One piece of a replacement template: literal text, or a group's number.
struct ReplPiece {
  std::string text;
  int group = -1;
};

std::vector<ReplPiece> parse_repl(std::string_view repl, int groups, const std::string& pattern) {
  std::vector<ReplPiece> out(1);
  auto bad = [&](const std::string& what) {
    throw Error("regex '" + pattern + "': replacement '" + std::string(repl) + "': " + what);
  };
  auto group = [&](int g) {
    if (g > groups) bad("invalid group reference " + std::to_string(g));
    out.push_back({"", g});
    out.push_back({});
  };
  for (std::size_t i = 0; i < repl.size(); ++i) {
    const char c = repl[i];
    if (c != '\\') {
      out.back().text.push_back(c);
      continue;
    }
    if (++i >= repl.size()) bad("bad escape (end of pattern)");
    const char e = repl[i];
    if (e == '0') {
      out.back().text.push_back('\0');  // an octal escape, as Python reads \0
    } else if (e >= '1' && e <= '9') {
      int g = e - '0';
      if (i + 1 < repl.size() && repl[i + 1] >= '0' && repl[i + 1] <= '9') g = g * 10 + (repl[++i] - '0');
      group(g);
    } else if (e == 'g') {
      const auto close = repl.find('>', i);
      if (i + 1 >= repl.size() || repl[i + 1] != '<' || close == std::string_view::npos) bad("missing group name");
      const std::string name(repl.substr(i + 2, close - i - 2));
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
        bad("named groups are not supported (\\g<" + name + ">)");
      group(std::stoi(name));
      i = close;
    } else {
      static const std::string_view from = "ntrfvab\\", to = "\n\t\r\f\v\a\b\\";
      const auto k = from.find(e);
      if (k == std::string_view::npos) bad(std::string("bad escape \\") + e);
      out.back().text.push_back(to[k]);
    }
  }
  return out;
}

}  // namespace

std::string PyRegex::sub(std::string_view text, std::string_view repl, int64_t count) const {
  const auto pieces = parse_repl(repl, groups_, pattern_);
  std::string out;
  std::size_t prev = 0;
  int64_t done = 0;
  each(text, [&](const PCRE2_SIZE* ov, int rc) {
    if (count > 0 && done >= count) return;
    out.append(text.substr(prev, ov[0] - prev));
    for (const auto& p : pieces) {
      if (p.group < 0) out += p.text;
      else if (p.group < rc && ov[2 * p.group] != PCRE2_UNSET)
        out.append(text.substr(ov[2 * p.group], ov[2 * p.group + 1] - ov[2 * p.group]));
    }
    prev = ov[1];
    ++done;
  });
  out.append(text.substr(prev));
  return out;
}

}  // namespace lathe::tokenizer
