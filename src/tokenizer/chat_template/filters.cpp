// jinja2's filters (jinja2/filters.py) as they behave without autoescaping. Filters that return a
// generator in Python (map, select, reject, unique, items, reverse) return one here too: it
// iterates once, is always true and refuses len() and printing, as Python's does.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/py_regex.hpp"
#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

using Filter = Value (*)(Interp&, const Value&, CallArgs&);

bool flag(const std::optional<Value>& v) { return v && truthy(*v); }

// ------------------------------------------------------------------ strings

Value f_upper(Interp&, const Value& v, CallArgs& a) {
  bind_args("upper", a, {});
  return Value::str(py_upper(py_str(v)));
}
Value f_lower(Interp&, const Value& v, CallArgs& a) {
  bind_args("lower", a, {});
  return Value::str(py_lower(py_str(v)));
}
Value f_capitalize(Interp&, const Value& v, CallArgs& a) {
  bind_args("capitalize", a, {});
  return Value::str(py_capitalize(py_str(v)));
}

/// Words start after runs of [-\s({\[<]; each gets its first character upper-cased, the rest lowered.
Value f_title(Interp&, const Value& v, CallArgs& a) {
  bind_args("title", a, {});
  const auto u = to_u32(py_str(v));
  auto sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c); };
  std::string out;
  for (std::size_t k = 0; k < u.size();) {
    std::size_t e = k;
    const bool is_sep = sep(u[k]);
    while (e < u.size() && sep(u[e]) == is_sep) ++e;
    const std::u32string_view item(u.data() + k, e - k);
    if (is_sep) out += to_utf8(item);
    else out += py_upper(to_utf8(item.substr(0, 1))) + py_lower(to_utf8(item.substr(1)));
    k = e;
  }
  return Value::str(std::move(out));
}

Value f_trim(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("trim", a, {"chars"});
  return Value::str(py_strip(py_str(v), opt_str_arg(b[0], "trim"), true, true));
}

Value f_replace(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("replace", a, {"old", "new", "count"}, 2);
  const int64_t count = b[2] && b[2]->kind != Kind::None ? int_arg(b[2], "replace", -1) : -1;
  return Value::str(py_replace(py_str(v), py_str(*b[0]), py_str(*b[1]), count));
}

/// lm-evaluation-harness's regex_replace(string, pattern, repl, count=0): Python's re.sub (only
/// in the plain dialect its task templates use).
Value f_regex_replace(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("regex_replace", a, {"pattern", "repl", "count"}, 2);
  const int64_t count = b[2] ? int_arg(b[2], "regex_replace", 0) : 0;
  try {
    return Value::str(PyRegex(py_str(*b[0])).sub(py_str(v), py_str(*b[1]), count));
  } catch (const Error& e) {
    throw RunError(e.what());
  }
}

Value f_indent(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("indent", a, {"width", "first", "blank"});
  const std::string indention =
      b[0] && b[0]->kind == Kind::Str
          ? b[0]->s
          : std::string(static_cast<std::size_t>(std::max<int64_t>(0, int_arg(b[0], "indent", 4))), ' ');
  check_usable(v);
  // jinja2 appends "\n" to the value itself: anything but a string fails there.
  if (v.kind != Kind::Str)
    throw RunError("TypeError: unsupported operand type(s) for +=: '" + type_name(v) + "' and 'str'");
  const auto lines = py_splitlines(v.s + "\n");
  std::string rv;
  for (std::size_t k = 0; k < lines.size(); ++k) {
    if (k) rv += "\n";
    if (k && (flag(b[2]) || !lines[k].empty())) rv += indention;
    rv += lines[k];
  }
  if (flag(b[1])) rv = indention + rv;
  return Value::str(std::move(rv));
}

Value f_center(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("center", a, {"width"});
  const std::string s = py_str(v);
  const int64_t width = int_arg(b[0], "center", 80), n = static_cast<int64_t>(u32_length(s));
  const int64_t marg = width - n;
  if (marg <= 0) return Value::str(s);
  const int64_t left = marg / 2 + (marg & width & 1);
  return Value::str(std::string(static_cast<std::size_t>(left), ' ') + s +
                    std::string(static_cast<std::size_t>(marg - left), ' '));
}

Value f_wordcount(Interp&, const Value& v, CallArgs& a) {
  bind_args("wordcount", a, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : to_u32(py_str(v))) {
    const bool w = py_isword(c);
    n += w && !in_word;
    in_word = w;
  }
  return Value::integer(n);
}

Value f_safe(Interp&, const Value& v, CallArgs& a) {
  bind_args("safe", a, {});
  return Value::str(py_str(v), true);
}
Value f_escape(Interp&, const Value& v, CallArgs& a) {
  bind_args("escape", a, {});
  if (v.kind == Kind::Str && v.safe) return v;
  return Value::str(html_escape(py_str(v)), true);
}
Value f_forceescape(Interp&, const Value& v, CallArgs& a) {
  bind_args("forceescape", a, {});
  return Value::str(html_escape(py_str(v)), true);
}
Value f_string(Interp&, const Value& v, CallArgs& a) {
  bind_args("string", a, {});
  return v.kind == Kind::Str ? v : Value::str(py_str(v));
}

/// printf-style formatting with %s, %d, %i, %r and %%; other conversions or flags are refused.
Value f_format(Interp&, const Value& v, CallArgs& a) {
  if (!a.pos.empty() && !a.kw.empty())
    throw RunError("FilterArgumentError: can't handle positional and keyword arguments at the same time");
  if (!a.kw.empty()) throw RunError("unsupported: format() with keyword arguments");
  const std::string f = py_str(v);
  std::string out;
  std::size_t next = 0;
  for (std::size_t k = 0; k < f.size(); ++k) {
    if (f[k] != '%') {
      out += f[k];
      continue;
    }
    const char c = k + 1 < f.size() ? f[++k] : 0;
    if (c == '%') {
      out += '%';
      continue;
    }
    if (c != 's' && c != 'd' && c != 'i' && c != 'r')
      throw RunError(std::string("unsupported: the format conversion %") + c);
    if (next >= a.pos.size()) throw RunError("TypeError: not enough arguments for format string");
    const Value& x = a.pos[next++];
    if (c == 'r') out += py_repr(x);
    else if (c == 's') out += py_str(x);
    else if (x.is_int()) out += std::to_string(x.kind == Kind::Bool ? x.b : x.i);
    else if (x.kind == Kind::Float) out += std::to_string(static_cast<int64_t>(std::trunc(x.f)));
    else throw RunError("TypeError: %d format: a real number is required, not " + type_name(x));
  }
  if (next < a.pos.size()) throw RunError("TypeError: not all arguments converted during string formatting");
  return Value::str(std::move(out));
}

// ------------------------------------------------------------------ numbers

Value f_int(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("int", a, {"default", "base"});
  const Value def = b[0] ? *b[0] : Value::integer(0);
  if (v.kind == Kind::Str) {
    if (auto i = parse_py_int(v.s, static_cast<int>(int_arg(b[1], "int", 10)))) return Value::integer(*i);
    const auto f = parse_py_float(v.s);
    if (!f || !std::isfinite(*f)) return def;
    if (std::fabs(*f) >= 9.2e18) throw RunError("unsupported: an integer past 64 bits");
    return Value::integer(static_cast<int64_t>(std::trunc(*f)));
  }
  if (v.is_int()) return Value::integer(v.kind == Kind::Bool ? v.b : v.i);
  if (v.kind == Kind::Float) {
    if (std::isnan(v.f)) return def;
    if (std::isinf(v.f)) throw RunError("OverflowError: cannot convert float infinity to integer");
    if (std::fabs(v.f) >= 9.2e18) throw RunError("unsupported: an integer past 64 bits");
    return Value::integer(static_cast<int64_t>(std::trunc(v.f)));
  }
  check_usable(v);  // int(Undefined) raises UndefinedError
  return def;
}

Value f_float(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("float", a, {"default"});
  const Value def = b[0] ? *b[0] : Value::number(0.0);
  if (v.kind == Kind::Str) {
    const auto f = parse_py_float(v.s);
    return f ? Value::number(*f) : def;
  }
  if (v.is_number())
    return Value::number(v.kind == Kind::Float ? v.f : v.kind == Kind::Bool ? v.b : static_cast<double>(v.i));
  check_usable(v);
  return def;
}

Value f_abs(Interp&, const Value& v, CallArgs& a) {
  bind_args("abs", a, {});
  if (v.kind == Kind::Float) return Value::number(std::fabs(v.f));
  if (v.is_int()) {
    const int64_t x = v.kind == Kind::Bool ? v.b : v.i;
    if (x == INT64_MIN) throw RunError("unsupported: an integer result past 64 bits");
    return Value::integer(x < 0 ? -x : x);
  }
  throw RunError("TypeError: bad operand type for abs(): '" + type_name(v) + "'");
}

/// round(value, precision) with Python's correctly rounded halves-to-even; ceil / floor as jinja2.
Value f_round(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("round", a, {"precision", "method"});
  const int64_t precision = int_arg(b[0], "round", 0);
  const std::string method = b[1] ? str_arg(b[1], "round") : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    throw RunError("FilterArgumentError: method must be common, ceil or floor");
  if (!v.is_number()) throw RunError("TypeError: type " + type_name(v) + " doesn't define __round__ method");
  if (precision < 0 || precision > 300) throw RunError("unsupported: round() with a negative precision");
  if (method == "common") {
    if (v.is_int()) return Value::integer(v.kind == Kind::Bool ? v.b : v.i);
    if (!std::isfinite(v.f)) return v;
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), v.f);
    return Value::number(std::strtod(buf, nullptr));
  }
  const double x = v.kind == Kind::Float ? v.f : v.kind == Kind::Bool ? v.b : static_cast<double>(v.i);
  const double scale = std::pow(10.0, static_cast<double>(precision));
  return Value::number((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
}

Value f_default(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("default", a, {"default_value", "boolean"});
  if (v.is_undefined() || (flag(b[1]) && !truthy(v))) return b[0] ? *b[0] : Value::str("");
  return v;
}

}  // namespace

Value Interp::apply_filter(const std::string& name, const Value& value, CallArgs& args) {
  static const std::unordered_map<std::string, Filter> kTable = {{"upper", f_upper},
                                                                 {"lower", f_lower},
                                                                 {"capitalize", f_capitalize},
                                                                 {"title", f_title},
                                                                 {"trim", f_trim},
                                                                 {"replace", f_replace},
                                                                 {"regex_replace", f_regex_replace},
                                                                 {"indent", f_indent},
                                                                 {"center", f_center},
                                                                 {"wordcount", f_wordcount},
                                                                 {"safe", f_safe},
                                                                 {"e", f_escape},
                                                                 {"escape", f_escape},
                                                                 {"forceescape", f_forceescape},
                                                                 {"string", f_string},
                                                                 {"format", f_format},
                                                                 {"int", f_int},
                                                                 {"float", f_float},
                                                                 {"abs", f_abs},
                                                                 {"round", f_round},
                                                                 {"d", f_default},
                                                                 {"default", f_default},
                                                                 {"tojson", tojson_filter}};
  if (auto it = kTable.find(name); it != kTable.end()) return it->second(*this, value, args);
  bool found = false;
  Value out = filter_sequence(*this, name, value, args, found);
  if (found) return out;
  throw RunError("unsupported: the filter '" + name + "'");
}

}  // namespace lathe::tokenizer::jinja
