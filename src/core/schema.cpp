#include "lathe/core/schema.hpp"

#include <fmt/format.h>

namespace lathe {

std::string Range::describe() const {
  auto num = [](double x) { return fmt::format("{}", x); };
  const bool has_lo = lo > -std::numeric_limits<double>::infinity();
  const bool has_hi = hi < std::numeric_limits<double>::infinity();
  if (has_lo && has_hi)
    return "in " + std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
  if (has_lo) return std::string(lo_open ? "> " : ">= ") + num(lo);
  if (has_hi) return std::string(hi_open ? "< " : "<= ") + num(hi);
  return "any value";
}

}  // namespace lathe
