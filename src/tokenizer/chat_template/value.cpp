#include "value.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

Value Value::undefined(std::string why) {
  Value v;
  v.s = std::move(why);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.b = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.i = i;
  return v;
}
Value Value::number(double f) {
  Value v;
  v.kind = Kind::Float;
  v.f = f;
  return v;
}
Value Value::str(std::string s, bool safe) {
  Value v;
  v.kind = Kind::Str;
  v.s = std::move(s);
  v.safe = safe;
  return v;
}
Value Value::list(ValueList items, SeqKind kind) {
  Value v;
  v.kind = Kind::Seq;
  v.seq = kind;
  v.items = std::make_shared<const ValueList>(std::move(items));
  if (kind == SeqKind::Generator) v.gen = std::make_shared<GeneratorState>();
  return v;
}
Value Value::generator(ValueList items) { return list(std::move(items), SeqKind::Generator); }
Value Value::dictionary(DictData d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<const DictData>(std::move(d));
  return v;
}
Value Value::range(int64_t start, int64_t stop, int64_t step) {
  using Wide = __int128;
  const Wide n = step > 0 ? (stop > start ? (Wide{stop} - start - 1) / step + 1 : 0)
                          : (start > stop ? (Wide{start} - stop - 1) / -Wide{step} + 1 : 0);
  if (n > 100000)
    throw RunError("OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  ValueList items;
  for (int64_t k = 0; k < n; ++k) items.push_back(integer(start + k * step));
  Value v = list(std::move(items), SeqKind::Range);
  v.s = std::to_string(start) + " " + std::to_string(stop) + " " + std::to_string(step);
  return v;
}

Value Value::opaque(std::string error) {
  Value v;
  v.kind = Kind::Opaque;
  v.s = std::move(error);
  return v;
}

const Value* DictData::find(const Value& key) const {
  for (const auto& [k, v] : entries)
    if (py_eq(k, key)) return &v;
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.kind == Kind::Str && k.s == key) return &v;
  return nullptr;
}

void DictData::set(const Value& key, Value value) {
  for (auto& [k, v] : entries)
    if (py_eq(k, key)) {
      v = std::move(value);
      return;
    }
  entries.emplace_back(key, std::move(value));
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return v.safe ? "Markup" : "str";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Func: return "function";
    case Kind::Loop: return "LoopContext";
    case Kind::Opaque: return "object";
    case Kind::Seq: break;
  }
  switch (v.seq) {
    case SeqKind::List: return "list";
    case SeqKind::Tuple: return "tuple";
    case SeqKind::Generator: return "generator";
    case SeqKind::DictItems: return "dict_items";
    case SeqKind::DictKeys: return "dict_keys";
    case SeqKind::DictValues: return "dict_values";
    case SeqKind::Range: return "range";
  }
  return "object";
}

std::string object_type_repr(const Value& v) {
  if (v.kind == Kind::None) return "None";
  return type_name(v) + " object";
}

void check_usable(const Value& v) {
  if (v.kind == Kind::Undefined) {
    if (v.s.starts_with("SecurityError:")) throw RunError(v.s);
    throw RunError("UndefinedError: " + (v.s.empty() ? "undefined value" : v.s));
  }
  if (v.kind == Kind::Opaque) throw RunError(v.s);
}

std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  const auto e = sci.find('e');
  std::string digits = sci.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // the '.'
  const int exp10 = std::stoi(sci.substr(e + 1));
  const int decpt = exp10 + 1;
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    std::string out = sign + digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    const int x = decpt - 1;
    out += x < 0 ? "e-" : "e+";
    const std::string xs = std::to_string(std::abs(x));
    return out + (xs.size() < 2 ? "0" : "") + xs;
  }
  if (decpt <= 0) return sign + "0." + std::string(static_cast<std::size_t>(-decpt), '0') + digits;
  if (decpt >= n) return sign + digits + std::string(static_cast<std::size_t>(decpt - n), '0') + ".0";
  return sign + digits.substr(0, static_cast<std::size_t>(decpt)) + "." +
         digits.substr(static_cast<std::size_t>(decpt));
}

namespace {

std::string join_repr(const ValueList& items, const char* open, const char* close, bool one_tuple) {
  std::string out = open;
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (k) out += ", ";
    out += py_repr(items[k]);
  }
  if (one_tuple && items.size() == 1) out += ",";
  return out + close;
}

std::string dict_repr(const DictData& d) {
  std::string out = "{";
  for (std::size_t k = 0; k < d.entries.size(); ++k) {
    if (k) out += ", ";
    out += py_repr(d.entries[k].first) + ": " + py_repr(d.entries[k].second);
  }
  return out + "}";
}

std::string seq_repr(const Value& v) {
  switch (v.seq) {
    case SeqKind::List: return join_repr(*v.items, "[", "]", false);
    case SeqKind::Tuple: return join_repr(*v.items, "(", ")", true);
    case SeqKind::DictItems: return join_repr(*v.items, "dict_items([", "])", false);
    case SeqKind::DictKeys: return join_repr(*v.items, "dict_keys([", "])", false);
    case SeqKind::DictValues: return join_repr(*v.items, "dict_values([", "])", false);
    case SeqKind::Generator: throw RunError("unsupported: printing a generator (Python prints its address); add |list");
    case SeqKind::Range: {
      long long start = 0, stop = 0, step = 1;
      std::sscanf(v.s.c_str(), "%lld %lld %lld", &start, &stop, &step);
      return "range(" + std::to_string(start) + ", " + std::to_string(stop) +
             (step != 1 ? ", " + std::to_string(step) : std::string()) + ")";
    }
  }
  return {};
}

}  // namespace

std::string py_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.b ? "True" : "False";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return float_repr(v.f);
    case Kind::Str: return v.s;
    case Kind::Seq: return seq_repr(v);
    case Kind::Dict: return dict_repr(*v.dict);
    case Kind::Namespace: return "<Namespace " + dict_repr(v.ns->attrs) + ">";
    case Kind::Loop:
      return "<LoopContext " + std::to_string(v.loop->index0 + 1) + "/" + std::to_string(v.loop->items->size()) + ">";
    case Kind::Func:
      throw RunError("unsupported: printing the function '" + v.fn->name + "' (Python prints its address)");
    case Kind::Opaque: throw RunError(v.s);
  }
  return {};
}

std::string py_repr(const Value& v) {
  if (v.kind == Kind::Str) return v.safe ? "Markup(" + py_repr_str(v.s) + ")" : py_repr_str(v.s);
  if (v.kind == Kind::Undefined) return "Undefined";
  return py_str(v);
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return v.b;
    case Kind::Int: return v.i != 0;
    case Kind::Float: return v.f != 0;
    case Kind::Str: return !v.s.empty();
    case Kind::Seq: return v.seq == SeqKind::Generator || !v.items->empty();
    case Kind::Dict: return !v.dict->entries.empty();
    case Kind::Loop: return !v.loop->items->empty();
    case Kind::Namespace:
    case Kind::Func: return true;
    case Kind::Opaque: throw RunError(v.s);
  }
  return false;
}

namespace {

double as_double(const Value& v) {
  if (v.kind == Kind::Float) return v.f;
  if (v.kind == Kind::Bool) return v.b ? 1.0 : 0.0;
  return static_cast<double>(v.i);
}

int64_t as_int(const Value& v) { return v.kind == Kind::Bool ? (v.b ? 1 : 0) : v.i; }

bool same_elements_as_set(const ValueList& a, const ValueList& b) {
  if (a.size() != b.size()) return false;
  for (const auto& x : a) {
    bool found = false;
    for (const auto& y : b) found = found || py_eq(x, y);
    if (!found) return false;
  }
  return true;
}

bool seq_eq(const Value& a, const Value& b) {
  const bool set_like_a = a.seq == SeqKind::DictKeys || a.seq == SeqKind::DictItems;
  const bool set_like_b = b.seq == SeqKind::DictKeys || b.seq == SeqKind::DictItems;
  if (set_like_a || set_like_b) return set_like_a && set_like_b && same_elements_as_set(*a.items, *b.items);
  const auto identity = [](SeqKind k) { return k == SeqKind::Generator || k == SeqKind::DictValues; };
  if (identity(a.seq) || identity(b.seq)) return a.items == b.items;
  if (a.seq != b.seq || a.items->size() != b.items->size()) return false;
  for (std::size_t k = 0; k < a.items->size(); ++k)
    if (!py_eq((*a.items)[k], (*b.items)[k])) return false;
  return true;
}

bool dict_eq(const DictData& a, const DictData& b) {
  if (a.entries.size() != b.entries.size()) return false;
  for (const auto& [k, v] : a.entries) {
    const Value* other = b.find(k);
    if (!other || !py_eq(v, *other)) return false;
  }
  return true;
}

}  // namespace

bool py_eq(const Value& a, const Value& b) {
  if (a.kind == Kind::Opaque) throw RunError(a.s);
  if (b.kind == Kind::Opaque) throw RunError(b.s);
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return as_double(a) == as_double(b);
    return as_int(a) == as_int(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::Str: return a.s == b.s;
    case Kind::Seq: return seq_eq(a, b);
    case Kind::Dict: return dict_eq(*a.dict, *b.dict);
    case Kind::Namespace: return a.ns == b.ns;
    case Kind::Func: return a.fn == b.fn;
    case Kind::Loop: return a.loop == b.loop;
    default: return false;
  }
}

namespace {

bool apply_order(const std::string& op, int cmp) {
  if (op == "<") return cmp < 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">") return cmp > 0;
  return cmp >= 0;
}

}  // namespace

bool py_order(const std::string& op, const Value& a, const Value& b) {
  check_usable(a);
  check_usable(b);
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) {
      const double x = as_double(a), y = as_double(b);
      if (std::isnan(x) || std::isnan(y)) return false;
      return apply_order(op, x < y ? -1 : x > y ? 1 : 0);
    }
    const int64_t x = as_int(a), y = as_int(b);
    return apply_order(op, x < y ? -1 : x > y ? 1 : 0);
  }
  if (a.kind == Kind::Str && b.kind == Kind::Str) return apply_order(op, a.s.compare(b.s));
  const bool seqs = a.kind == Kind::Seq && b.kind == Kind::Seq && a.seq == b.seq &&
                    (a.seq == SeqKind::List || a.seq == SeqKind::Tuple);
  if (seqs) {
    const auto &x = *a.items, &y = *b.items;
    for (std::size_t k = 0; k < x.size() && k < y.size(); ++k)
      if (!py_eq(x[k], y[k])) return py_order(op, x[k], y[k]);
    return apply_order(op, x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0);
  }
  throw RunError("TypeError: '" + op + "' not supported between instances of '" + type_name(a) + "' and '" +
                 type_name(b) + "'");
}

bool py_lt(const Value& a, const Value& b) { return py_order("<", a, b); }

namespace {

[[noreturn]] void operand_error(const std::string& op, const Value& a, const Value& b) {
  throw RunError("TypeError: unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) +
                 "'");
}

int64_t checked(bool overflow, int64_t v) {
  if (overflow) throw RunError("unsupported: an integer result past 64 bits");
  return v;
}

Value repeat(const Value& seq, int64_t n) {
  if (seq.kind == Kind::Str) {
    std::string out;
    for (int64_t k = 0; k < n; ++k) out += seq.s;
    return Value::str(std::move(out), seq.safe);
  }
  ValueList out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.items->begin(), seq.items->end());
  return Value::list(std::move(out), seq.seq);
}

bool repeatable(const Value& v) {
  return v.kind == Kind::Str || (v.kind == Kind::Seq && (v.seq == SeqKind::List || v.seq == SeqKind::Tuple));
}

Value add(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return Value::number(as_double(a) + as_double(b));
    int64_t r;
    const bool overflow = __builtin_add_overflow(as_int(a), as_int(b), &r);
    return Value::integer(checked(overflow, r));
  }
  if (a.kind == Kind::Str && b.kind == Kind::Str) {
    // markupsafe escapes the plain side of Markup + str.
    if (a.safe != b.safe)
      return Value::str((a.safe ? a.s : html_escape(a.s)) + (b.safe ? b.s : html_escape(b.s)), true);
    return Value::str(a.s + b.s, a.safe);
  }
  if (a.kind == Kind::Str) throw RunError("TypeError: can only concatenate str (not \"" + type_name(b) + "\") to str");
  if (a.kind == Kind::Seq && (a.seq == SeqKind::List || a.seq == SeqKind::Tuple)) {
    if (b.kind != Kind::Seq || b.seq != a.seq)
      throw RunError("TypeError: can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " +
                     type_name(a));
    ValueList out = *a.items;
    out.insert(out.end(), b.items->begin(), b.items->end());
    return Value::list(std::move(out), a.seq);
  }
  operand_error("+", a, b);
}

Value multiply(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return Value::number(as_double(a) * as_double(b));
    int64_t r;
    const bool overflow = __builtin_mul_overflow(as_int(a), as_int(b), &r);
    return Value::integer(checked(overflow, r));
  }
  if (repeatable(a) && b.is_int()) return repeat(a, as_int(b));
  if (repeatable(b) && a.is_int()) return repeat(b, as_int(a));
  if (repeatable(a) || repeatable(b))
    throw RunError("TypeError: can't multiply sequence by non-int of type '" + type_name(repeatable(a) ? b : a) + "'");
  operand_error("*", a, b);
}

Value floor_divide(const Value& a, const Value& b) {
  if (a.kind == Kind::Float || b.kind == Kind::Float) {
    const double x = as_double(a), y = as_double(b);
    if (y == 0) throw RunError("ZeroDivisionError: float floor division by zero");
    double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0 && ((y < 0) != (mod < 0))) div -= 1.0;
    if (div == 0) return Value::number(std::copysign(0.0, x / y));
    double fl = std::floor(div);
    if (div - fl > 0.5) fl += 1.0;
    return Value::number(fl);
  }
  const int64_t x = as_int(a), y = as_int(b);
  if (y == 0) throw RunError("ZeroDivisionError: integer division or modulo by zero");
  if (x == std::numeric_limits<int64_t>::min() && y == -1) checked(true, 0);
  int64_t q = x / y;
  if (x % y != 0 && ((x < 0) != (y < 0))) --q;
  return Value::integer(q);
}

Value modulo(const Value& a, const Value& b) {
  if (a.kind == Kind::Str) throw RunError("unsupported: printf-style string formatting with %");
  if (!a.is_number() || !b.is_number()) operand_error("%", a, b);
  if (a.kind == Kind::Float || b.kind == Kind::Float) {
    const double x = as_double(a), y = as_double(b);
    if (y == 0) throw RunError("ZeroDivisionError: float modulo");
    double mod = std::fmod(x, y);
    if (mod != 0) {
      if ((y < 0) != (mod < 0)) mod += y;
    } else {
      mod = std::copysign(0.0, y);
    }
    return Value::number(mod);
  }
  const int64_t x = as_int(a), y = as_int(b);
  if (y == 0) throw RunError("ZeroDivisionError: integer division or modulo by zero");
  if (y == -1) return Value::integer(0);
  int64_t r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) r += y;
  return Value::integer(r);
}

Value power(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) operand_error("** or pow()", a, b);
  if (a.kind != Kind::Float && b.kind != Kind::Float && as_int(b) >= 0) {
    int64_t base = as_int(a), e = as_int(b), r = 1;
    while (e > 0) {
      if (e & 1 && __builtin_mul_overflow(r, base, &r)) checked(true, 0);
      e >>= 1;
      if (e > 0 && __builtin_mul_overflow(base, base, &base)) checked(true, 0);
    }
    return Value::integer(r);
  }
  const double x = as_double(a), y = as_double(b);
  if (x == 0 && y < 0) throw RunError("ZeroDivisionError: 0.0 cannot be raised to a negative power");
  if (x < 0 && y != std::floor(y)) throw RunError("unsupported: a negative number to a fractional power (complex)");
  const double r = std::pow(x, y);
  if (std::isinf(r) && std::isfinite(x) && std::isfinite(y))
    throw RunError("OverflowError: (34, 'Numerical result out of range')");
  return Value::number(r);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  check_usable(a);
  check_usable(b);
  if (op == "+") return add(a, b);
  if (op == "*") return multiply(a, b);
  if (op == "%") return modulo(a, b);
  if (op == "**") return power(a, b);
  if (!a.is_number() || !b.is_number()) operand_error(op, a, b);
  if (op == "//") return floor_divide(a, b);
  if (op == "/") {
    if (as_double(b) == 0) throw RunError("ZeroDivisionError: division by zero");
    return Value::number(as_double(a) / as_double(b));
  }
  if (a.kind == Kind::Float || b.kind == Kind::Float) return Value::number(as_double(a) - as_double(b));
  int64_t r;
  const bool overflow = __builtin_sub_overflow(as_int(a), as_int(b), &r);
  return Value::integer(checked(overflow, r));
}

Value unary_op(const std::string& op, const Value& a) {
  check_usable(a);
  if (!a.is_number()) throw RunError("TypeError: bad operand type for unary " + op + ": '" + type_name(a) + "'");
  if (a.kind == Kind::Float) return Value::number(op == "-" ? -a.f : a.f);
  const int64_t x = as_int(a);
  if (op == "-" && x == std::numeric_limits<int64_t>::min()) checked(true, 0);
  return Value::integer(op == "-" ? -x : x);
}

void check_hashable(const Value& v) {
  if (v.kind == Kind::Opaque) throw RunError(v.s);
  const bool unhashable = v.kind == Kind::Dict || (v.kind == Kind::Seq && v.seq != SeqKind::Tuple &&
                                                   v.seq != SeqKind::Generator && v.seq != SeqKind::Range);
  if (unhashable) throw RunError("TypeError: unhashable type: '" + type_name(v) + "'");
  if (v.kind == Kind::Seq && v.seq == SeqKind::Tuple)
    for (const auto& x : *v.items) check_hashable(x);
}

bool py_contains(const Value& haystack, const Value& needle) {
  switch (haystack.kind) {
    case Kind::Undefined: return false;
    case Kind::Str:
      if (needle.kind != Kind::Str)
        throw RunError("TypeError: 'in <string>' requires string as left operand, not " + type_name(needle));
      return haystack.s.find(needle.s) != std::string::npos;
    case Kind::Dict: check_hashable(needle); return haystack.dict->find(needle) != nullptr;
    case Kind::Seq: {
      const auto& xs = *haystack.items;
      std::size_t k = haystack.seq == SeqKind::Generator ? haystack.gen->pos : 0;
      for (; k < xs.size(); ++k)
        if (py_eq(xs[k], needle)) {
          if (haystack.gen) haystack.gen->pos = k + 1;
          return true;
        }
      if (haystack.gen) haystack.gen->pos = xs.size();
      return false;
    }
    case Kind::Opaque: throw RunError(haystack.s);
    case Kind::Loop: throw RunError("unsupported: `in` on a loop object");
    default: throw RunError("TypeError: argument of type '" + type_name(haystack) + "' is not iterable");
  }
}

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::Str: {
      ValueList out;
      for (char32_t cp : to_u32(v.s)) out.push_back(Value::str(to_utf8(std::u32string(1, cp))));
      return out;
    }
    case Kind::Seq: {
      if (v.seq != SeqKind::Generator) return *v.items;
      ValueList out(v.items->begin() + static_cast<std::ptrdiff_t>(v.gen->pos), v.items->end());
      v.gen->pos = v.items->size();
      return out;
    }
    case Kind::Dict: {
      ValueList out;
      for (const auto& e : v.dict->entries) out.push_back(e.first);
      return out;
    }
    case Kind::Opaque: throw RunError(v.s);
    case Kind::Loop: throw RunError("unsupported: iterating over a loop object");
    default: throw RunError("TypeError: '" + type_name(v) + "' object is not iterable");
  }
}

int64_t py_len(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return 0;
    case Kind::Str: return static_cast<int64_t>(u32_length(v.s));
    case Kind::Seq:
      if (v.seq == SeqKind::Generator) throw RunError("TypeError: object of type 'generator' has no len()");
      return static_cast<int64_t>(v.items->size());
    case Kind::Dict: return static_cast<int64_t>(v.dict->entries.size());
    case Kind::Loop: return static_cast<int64_t>(v.loop->items->size());
    case Kind::Opaque: throw RunError(v.s);
    default: throw RunError("TypeError: object of type '" + type_name(v) + "' has no len()");
  }
}

namespace {

template <typename Json>
Value json_value(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw RunError("unsupported: an integer past 64 bits in the context");
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::number(j.template get<double>());
    case nlohmann::json::value_t::string: return Value::str(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      ValueList items;
      for (const auto& x : j) items.push_back(json_value(x));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      DictData d;
      for (auto it = j.begin(); it != j.end(); ++it) d.entries.emplace_back(Value::str(it.key()), json_value(*it));
      return Value::dictionary(std::move(d));
    }
    default: throw RunError("unsupported: a binary value in the context");
  }
}

}  // namespace

Value from_json(const nlohmann::json& j) { return json_value(j); }
Value from_json(const nlohmann::ordered_json& j) { return json_value(j); }

}  // namespace lathe::tokenizer::jinja
