// The two uses the harness makes of Python's re on answers: findall (its regex filter) and sub
// with an empty replacement (exact_match's regexes_to_ignore), on PCRE2 with Unicode classes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::eval::detail {

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
  std::string remove(std::string_view text) const;
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

}  // namespace lathe::eval::detail
