// Python's re.findall and re.sub on PCRE2 with Unicode classes, for what lm-evaluation-harness
// does with Python's re: its regex filter (findall), exact_match's regexes_to_ignore and its
// templates' regex_replace filter (sub).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer {

class PyRegex {
 public:
  /// Throws lathe::Error naming the pattern and PCRE2's message.
  explicit PyRegex(const std::string& pattern);
  ~PyRegex();
  PyRegex(PyRegex&&) noexcept;

  /// re.findall: each match's groups (the whole match when the pattern has none; an
  /// unmatched group as ""), matches in order, empty matches included as Python does.
  std::vector<std::vector<std::string>> findall(std::string_view text) const;
  /// re.sub(pattern, "", text).
  std::string remove(std::string_view text) const { return sub(text, "", 0); }
  /// re.sub(pattern, repl, text, count): `repl` with Python's escapes (\n, \t, \\, ...) and
  /// group references (\1, \g<1>, \g<name>); count 0: every match. Throws lathe::Error on a
  /// bad escape or group.
  std::string sub(std::string_view text, std::string_view repl, int64_t count = 0) const;
  int groups() const { return groups_; }

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string pattern_;
  int groups_ = 0;
  /// Each match's [begin, end) and its groups' spans (-1 where unmatched), Python's iteration.
  template <class F>
  void each(std::string_view text, F&& f) const;
};

}  // namespace lathe::tokenizer
