// The pieces of a field declaration shared by every options struct that declares its fields
// once in a `visit(V&, Options&)` function (recipe sections, model options): the allowed range
// of a number and what else a visitor needs to know about a field.
//
// A visitor gets `v.field(key, value, doc, range, traits)` for each field, in order; the
// recipe binds YAML through it, the model store writes JSON through it, comparisons and
// checks walk it. Declaring a field there is all it takes for every one of them to know it.
#pragma once

#include <limits>
#include <string>

namespace lathe {

/// Allowed interval of a numeric field, with open or closed ends.
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

/// Which models a model option applies to.
enum class Applies { All, Gpt, Bert };

/// What a field is besides its value. The defaults describe a plain recipe key.
struct Traits {
  /// A key of the recipe (bound from YAML, shown by `recipe show` and `recipe keys`). A field
  /// that is not (e.g. the [PAD] id a model takes from its tokenizer) is still stored with the
  /// model.
  bool recipe_key = true;
  /// Changes the parameters or what they compute: a checkpoint made with another value cannot
  /// be resumed or loaded into this model. Dropout and initialisation are not.
  bool shape = false;
  Applies applies = Applies::All;
};

constexpr Traits shape_key(Applies a = Applies::All) { return {.recipe_key = true, .shape = true, .applies = a}; }
constexpr Traits setting(Applies a = Applies::All) { return {.recipe_key = true, .shape = false, .applies = a}; }

}  // namespace lathe
