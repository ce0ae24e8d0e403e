// Allowed interval of a numeric recipe key, with open or closed ends.
#pragma once

#include <limits>
#include <string>

namespace lathe::recipe {

struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;
  bool hi_open = false;

  bool contains(double x) const {
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  }
  bool bounded() const { return lo > -std::numeric_limits<double>::infinity() || hi < std::numeric_limits<double>::infinity(); }
  /// "> 0", ">= 1", "in [0, 1)".
  std::string describe() const;
};

constexpr Range any_value() { return {}; }
constexpr Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
constexpr Range greater_than(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
constexpr Range between(double lo, double hi) { return {lo, hi, false, false}; }
constexpr Range in_closed_open(double lo, double hi) { return {lo, hi, false, true}; }
constexpr Range in_open_closed(double lo, double hi) { return {lo, hi, true, false}; }

}  // namespace lathe::recipe
