#define PCRE2_CODE_UNIT_WIDTH 8
#include "py_regex.hpp"

#include <pcre2.h>

#include "lathe/core/error.hpp"

namespace lathe::eval::detail {

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

std::string PyRegex::remove(std::string_view text) const {
  std::string out;
  std::size_t prev = 0;
  each(text, [&](const PCRE2_SIZE* ov, int) {
    out.append(text.substr(prev, ov[0] - prev));
    prev = ov[1];
  });
  out.append(text.substr(prev));
  return out;
}

}  // namespace lathe::eval::detail
