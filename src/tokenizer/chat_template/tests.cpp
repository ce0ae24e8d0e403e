// jinja2's tests (jinja2/tests.py): `x is defined`, `x is string`, `x is divisibleby 3`, ...

#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

bool is_seq(const Value& v, std::initializer_list<SeqKind> kinds) {
  if (v.kind != Kind::Seq) return false;
  for (SeqKind k : kinds)
    if (v.seq == k) return true;
  return false;
}

/// Python's `is`: the singletons, CPython's cached small ints, and the same container.
bool same_as(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::None: return true;
    case Kind::Bool: return a.b == b.b;
    case Kind::Int:
      if (a.i >= -5 && a.i <= 256) return a.i == b.i;
      break;
    case Kind::Seq: return a.items == b.items;
    case Kind::Dict: return a.dict == b.dict;
    case Kind::Namespace: return a.ns == b.ns;
    case Kind::Func: return a.fn == b.fn;
    default: break;
  }
  throw RunError("unsupported: `is sameas` on a " + type_name(a) + " (Python compares object identity)");
}

bool divisible(const Value& v, const Value& n, int64_t rest) {
  return py_eq(binary_op("%", v, n), Value::integer(rest));
}

/// The tests that take no argument.
bool unary_test(const std::string& name, const Value& v, bool& found) {
  found = true;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.kind == Kind::None;
  if (name == "boolean") return v.kind == Kind::Bool;
  if (name == "true") return v.kind == Kind::Bool && v.b;
  if (name == "false") return v.kind == Kind::Bool && !v.b;
  if (name == "integer") return v.kind == Kind::Int;
  if (name == "float") return v.kind == Kind::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.kind == Kind::Str;
  if (name == "mapping") return v.kind == Kind::Dict;
  if (name == "escaped") return v.kind == Kind::Str && v.safe;
  if (name == "callable") return v.kind == Kind::Func || v.kind == Kind::Loop || v.kind == Kind::Undefined;
  if (name == "sequence")
    return v.kind == Kind::Str || v.kind == Kind::Dict || v.kind == Kind::Undefined ||
           is_seq(v, {SeqKind::List, SeqKind::Tuple, SeqKind::Range});
  if (name == "iterable")
    return v.kind == Kind::Str || v.kind == Kind::Dict || v.kind == Kind::Undefined || v.kind == Kind::Seq ||
           v.kind == Kind::Loop;
  if (name == "odd") return divisible(v, Value::integer(2), 1);
  if (name == "even") return divisible(v, Value::integer(2), 0);
  if (name == "lower") return py_islower(py_str(v));
  if (name == "upper") return py_isupper(py_str(v));
  if (name == "filter" || name == "test") {
    check_hashable(v);  // Python looks the value up in a dict
    return v.kind == Kind::Str && (name == "filter" ? known_filter(v.s) : known_test(v.s));
  }
  found = false;
  return false;
}

}  // namespace

bool Interp::apply_test(const std::string& name, const Value& value, CallArgs& args) {
  if (value.kind == Kind::Opaque && name != "defined" && name != "undefined") check_usable(value);
  bool found = false;
  if (args.pos.empty() && args.kw.empty()) {
    const bool r = unary_test(name, value, found);
    if (found) return r;
  }
  const auto a = bind_args(name, args, {"other"}, 1);
  const Value& other = *a[0];
  if (name == "divisibleby") return divisible(value, other, 0);
  if (name == "sameas") return same_as(value, other);
  if (name == "in") return py_contains(other, value);
  if (name == "==" || name == "eq" || name == "equalto") return py_eq(value, other);
  if (name == "!=" || name == "ne") return !py_eq(value, other);
  if (name == ">" || name == "gt" || name == "greaterthan") return py_order(">", value, other);
  if (name == ">=" || name == "ge") return py_order(">=", value, other);
  if (name == "<" || name == "lt" || name == "lessthan") return py_order("<", value, other);
  if (name == "<=" || name == "le") return py_order("<=", value, other);
  throw RunError("TypeError: the test '" + name + "' takes no argument");
}

}  // namespace lathe::tokenizer::jinja
