// jinja2's filters over sequences and mappings: first, last, length, list, join, map, select /
// reject (and their attr forms), unique, sort, reverse, items, dictsort, min, max, sum, attr.

#include <algorithm>

#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

bool flag(const std::optional<Value>& v) { return v && truthy(*v); }

/// jinja2's make_attrgetter: a dotted path looked up with getitem, integer parts as indexes;
/// `def` replaces an undefined step, `lower` lowers a str result (case-insensitive keys).
Value get_path(Interp& in, Value item, const std::optional<Value>& attribute, bool lower,
               const std::optional<Value>& def = std::nullopt) {
  if (attribute && attribute->kind != Kind::None) {
    ValueList parts;
    if (attribute->kind == Kind::Str) {
      for (auto& p : py_split(attribute->s, std::string("."), -1, false)) {
        const bool digits = !p.empty() && std::all_of(p.begin(), p.end(), ::isdigit);
        parts.push_back(digits ? Value::integer(std::stoll(p)) : Value::str(p));
      }
    } else {
      parts.push_back(*attribute);
    }
    for (const auto& p : parts) {
      item = in.getitem(item, p);
      if (def && item.is_undefined()) item = *def;
    }
  }
  if (lower && item.kind == Kind::Str) item = Value::str(py_lower(item.s));
  return item;
}

/// sort's key: the values of "a,b" attributes, as a list.
Value sort_key(Interp& in, const Value& item, const std::optional<Value>& attribute, bool lower) {
  if (!attribute || attribute->kind != Kind::Str) return Value::list({get_path(in, item, attribute, lower)});
  ValueList key;
  for (auto& part : py_split(attribute->s, std::string(","), -1, false))
    key.push_back(get_path(in, item, Value::str(part), lower));
  return Value::list(std::move(key));
}

Value first(Interp&, const Value& v, CallArgs& a) {
  bind_args("first", a, {});
  if (v.kind == Kind::Seq && v.seq == SeqKind::Generator) {
    if (v.gen->pos < v.items->size()) return (*v.items)[v.gen->pos++];
  } else {
    const ValueList items = iterate(v);
    if (!items.empty()) return items.front();
  }
  return Value::undefined("No first item, sequence was empty.");
}

Value last(Interp&, const Value& v, CallArgs& a) {
  bind_args("last", a, {});
  if (v.kind == Kind::Seq && v.seq == SeqKind::Generator)
    throw RunError("TypeError: 'generator' object is not reversible");
  if (v.kind != Kind::Undefined && v.kind != Kind::Str && v.kind != Kind::Seq && v.kind != Kind::Dict) {
    check_usable(v);
    throw RunError("TypeError: '" + type_name(v) + "' object is not reversible");
  }
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value join(Interp& in, const Value& v, CallArgs& a) {
  const auto b = bind_args("join", a, {"d", "attribute"});
  const std::string sep = b[0] ? py_str(*b[0]) : "";
  std::string out;
  const ValueList items = iterate(v);
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (k) out += sep;
    out += py_str(b[1] ? get_path(in, items[k], b[1], false) : items[k]);
  }
  return Value::str(std::move(out));
}

Value map(Interp& in, const Value& v, CallArgs& a) {
  if (!truthy(v)) return Value::generator({});
  const ValueList items = iterate(v);
  ValueList out;
  if (a.pos.empty()) {
    std::optional<Value> attribute, def;
    for (const auto& [name, value] : a.kw) {
      if (name == "attribute") attribute = value;
      else if (name == "default") def = value;
      else throw RunError("FilterArgumentError: Unexpected keyword argument '" + name + "'");
    }
    if (!attribute) throw RunError("FilterArgumentError: map requires a filter argument");
    for (const auto& item : items) out.push_back(get_path(in, item, attribute, false, def));
    return Value::generator(std::move(out));
  }
  if (a.pos[0].kind != Kind::Str) throw RunError("TypeError: map() filter name must be a string");
  const std::string filter = a.pos[0].s;
  if (!known_filter(filter)) throw RunError("No filter named '" + filter + "'");
  for (const auto& item : items) {
    CallArgs rest{ValueList(a.pos.begin() + 1, a.pos.end()), a.kw};
    out.push_back(in.apply_filter(filter, item, rest));
  }
  return Value::generator(std::move(out));
}

/// select / reject / selectattr / rejectattr.
Value select_or_reject(Interp& in, const Value& v, CallArgs& a, bool keep_if, bool by_attr) {
  if (!truthy(v)) return Value::generator({});
  std::size_t off = 0;
  std::optional<Value> attribute;
  if (by_attr) {
    if (a.pos.empty()) throw RunError("FilterArgumentError: Missing parameter for attribute name");
    attribute = a.pos[0];
    off = 1;
  }
  const bool has_test = a.pos.size() > off;
  std::string test;
  if (has_test) {
    if (a.pos[off].kind != Kind::Str) throw RunError("TypeError: the test name must be a string");
    test = a.pos[off].s;
    if (!known_test(test)) throw RunError("No test named '" + test + "'");
  }
  ValueList out;
  for (const auto& item : iterate(v)) {
    const Value x = by_attr ? get_path(in, item, attribute, false) : item;
    bool ok;
    if (has_test) {
      CallArgs rest{ValueList(a.pos.begin() + static_cast<std::ptrdiff_t>(off) + 1, a.pos.end()), a.kw};
      ok = in.apply_test(test, x, rest);
    } else {
      ok = truthy(x);
    }
    if (ok == keep_if) out.push_back(item);
  }
  return Value::generator(std::move(out));
}

Value unique(Interp& in, const Value& v, CallArgs& a) {
  const auto b = bind_args("unique", a, {"case_sensitive", "attribute"});
  ValueList out, seen;
  for (const auto& item : iterate(v)) {
    const Value key = get_path(in, item, b[1], !flag(b[0]));
    check_hashable(key);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return py_eq(s, key); })) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return Value::generator(std::move(out));
}

Value sort(Interp& in, const Value& v, CallArgs& a) {
  const auto b = bind_args("sort", a, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = flag(b[0]);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& item : iterate(v)) keyed.emplace_back(sort_key(in, item, b[2], !flag(b[1])), item);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? py_lt(y.first, x.first) : py_lt(x.first, y.first);
  });
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::list(std::move(out));
}

Value reverse(Interp&, const Value& v, CallArgs& a) {
  bind_args("reverse", a, {});
  if (v.kind == Kind::Str) {
    auto u = to_u32(v.s);
    std::reverse(u.begin(), u.end());
    return Value::str(to_utf8(u), v.safe);
  }
  if (v.kind == Kind::Seq || v.kind == Kind::Dict || v.kind == Kind::Undefined) {
    ValueList items = iterate(v);
    std::reverse(items.begin(), items.end());
    // reversed() of a generator fails, and jinja2 falls back to a reversed list.
    if (v.kind == Kind::Seq && v.seq == SeqKind::Generator) return Value::list(std::move(items));
    return Value::generator(std::move(items));
  }
  check_usable(v);
  throw RunError("FilterArgumentError: argument must be iterable");
}

Value items(Interp&, const Value& v, CallArgs& a) {
  bind_args("items", a, {});
  if (v.is_undefined()) return Value::generator({});
  if (v.kind != Kind::Dict) throw RunError("TypeError: Can only get item pairs from a mapping.");
  ValueList out;
  for (const auto& [k, x] : v.dict->entries) out.push_back(Value::tuple({k, x}));
  return Value::generator(std::move(out));
}

Value dictsort(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("dictsort", a, {"case_sensitive", "by", "reverse"});
  const std::string by = b[1] ? str_arg(b[1], "dictsort") : "key";
  if (by != "key" && by != "value")
    throw RunError("FilterArgumentError: You can only sort by either \"key\" or \"value\"");
  if (v.kind != Kind::Dict) throw RunError("unsupported: dictsort of a " + type_name(v));
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& [k, x] : v.dict->entries) {
    Value key = by == "key" ? k : x;
    if (!flag(b[0]) && key.kind == Kind::Str) key = Value::str(py_lower(key.s));
    keyed.emplace_back(key, Value::tuple({k, x}));
  }
  const bool rev = flag(b[2]);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return rev ? py_lt(y.first, x.first) : py_lt(x.first, y.first);
  });
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::list(std::move(out));
}

Value min_max(Interp& in, const Value& v, CallArgs& a, bool want_max) {
  const auto b = bind_args(want_max ? "max" : "min", a, {"case_sensitive", "attribute"});
  const ValueList xs = iterate(v);
  if (xs.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  std::size_t best = 0;
  Value best_key = get_path(in, xs[0], b[1], !flag(b[0]));
  for (std::size_t k = 1; k < xs.size(); ++k) {
    Value key = get_path(in, xs[k], b[1], !flag(b[0]));
    if (want_max ? py_order(">", key, best_key) : py_lt(key, best_key)) best = k, best_key = std::move(key);
  }
  return xs[best];
}

Value sum(Interp& in, const Value& v, CallArgs& a) {
  const auto b = bind_args("sum", a, {"attribute", "start"});
  Value total = b[1] ? *b[1] : Value::integer(0);
  if (total.kind == Kind::Str) throw RunError("TypeError: sum() can't sum strings [use ''.join(seq) instead]");
  for (const auto& item : iterate(v)) total = binary_op("+", total, b[0] ? get_path(in, item, b[0], false) : item);
  return total;
}

Value batch(Interp&, const Value& v, CallArgs& a) {
  const auto b = bind_args("batch", a, {"linecount", "fill_with"}, 1);
  const int64_t n = int_arg(b[0], "batch", 1);
  ValueList out, tmp;
  for (const auto& item : iterate(v)) {
    if (static_cast<int64_t>(tmp.size()) == n) out.push_back(Value::list(std::move(tmp))), tmp.clear();
    tmp.push_back(item);
  }
  if (!tmp.empty()) {
    if (b[1] && b[1]->kind != Kind::None)
      while (static_cast<int64_t>(tmp.size()) < n) tmp.push_back(*b[1]);
    out.push_back(Value::list(std::move(tmp)));
  }
  return Value::generator(std::move(out));
}

Value attr(Interp& in, const Value& v, CallArgs& a) {
  const auto b = bind_args("attr", a, {"name"}, 1);
  check_usable(v);
  const std::string name = str_arg(b[0], "attr");
  if (name.starts_with("__")) return in.getattr(v, name);
  Value found = attribute_of(in, v, name);
  if (!found.is_undefined() || !found.s.empty()) return found;
  std::string why = object_type_repr(v);
  why.insert(why.begin(), '\'');
  return Value::undefined(why + "' has no attribute '" + name + "'");
}

}  // namespace

Value filter_sequence(Interp& in, const std::string& name, const Value& v, CallArgs& a, bool& found) {
  found = true;
  if (name == "first") return first(in, v, a);
  if (name == "last") return last(in, v, a);
  if (name == "length" || name == "count") {
    bind_args(name, a, {});
    return Value::integer(py_len(v));
  }
  if (name == "list") {
    bind_args("list", a, {});
    return Value::list(iterate(v));
  }
  if (name == "join") return join(in, v, a);
  if (name == "map") return map(in, v, a);
  if (name == "select") return select_or_reject(in, v, a, true, false);
  if (name == "reject") return select_or_reject(in, v, a, false, false);
  if (name == "selectattr") return select_or_reject(in, v, a, true, true);
  if (name == "rejectattr") return select_or_reject(in, v, a, false, true);
  if (name == "unique") return unique(in, v, a);
  if (name == "sort") return sort(in, v, a);
  if (name == "reverse") return reverse(in, v, a);
  if (name == "items") return items(in, v, a);
  if (name == "dictsort") return dictsort(in, v, a);
  if (name == "min") return min_max(in, v, a, false);
  if (name == "max") return min_max(in, v, a, true);
  if (name == "sum") return sum(in, v, a);
  if (name == "attr") return attr(in, v, a);
  if (name == "batch") return batch(in, v, a);
  found = false;
  return {};
}

}  // namespace lathe::tokenizer::jinja
