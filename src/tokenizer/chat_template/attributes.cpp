// The attributes Python gives values: the methods of str, dict, list and tuple (bound to their
// receiver), namespace attributes and the loop object's. A method Python has and the
// interpreter does not model is refused when called, never treated as missing.

#include <algorithm>

#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

using Method = Value (*)(const Value& self, Interp& in, const CallArgs& args);

bool one_of(const std::string& name, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

Value bind_method(const Value& self, const std::string& name, Method m) {
  return make_function(type_name(self) + "." + name,
                       [self, m](Interp& in, CallArgs& args) { return m(self, in, args); });
}

/// str.startswith / endswith: a str or a tuple of str; start / end offsets are refused.
bool affix_match(const Value& self, const CallArgs& args, const char* fname, bool prefix) {
  const auto a = bind_args(fname, args, {"affix", "start", "end"}, 1);
  if (a[1] || a[2]) throw RunError(std::string("unsupported: ") + fname + "() with start / end");
  ValueList candidates;
  if (a[0]->kind == Kind::Seq && a[0]->seq == SeqKind::Tuple) candidates = *a[0]->items;
  else candidates.push_back(*a[0]);
  for (const auto& c : candidates) {
    if (c.kind != Kind::Str)
      throw RunError(std::string("TypeError: ") + fname + " first arg must be str or a tuple of str, not " +
                     type_name(c));
    if (prefix ? self.s.starts_with(c.s) : self.s.ends_with(c.s)) return true;
  }
  return false;
}

Value str_find(const Value& self, const CallArgs& args, const char* fname, bool from_right, bool raise) {
  const auto a = bind_args(fname, args, {"sub", "start", "end"}, 1);
  if (a[1] || a[2]) throw RunError(std::string("unsupported: ") + fname + "() with start / end");
  const int64_t at = py_find(self.s, str_arg(a[0], fname), from_right);
  if (at < 0 && raise) throw RunError("ValueError: substring not found");
  return Value::integer(at);
}

Value str_split(const Value& self, const CallArgs& args, const char* fname, bool from_right) {
  const auto a = bind_args(fname, args, {"sep", "maxsplit"});
  ValueList out;
  for (auto& part : py_split(self.s, opt_str_arg(a[0], fname), int_arg(a[1], fname, -1), from_right))
    out.push_back(Value::str(std::move(part)));
  return Value::list(std::move(out));
}

Value str_strip(const Value& self, const CallArgs& args, const char* fname, bool left, bool right) {
  const auto a = bind_args(fname, args, {"chars"});
  return Value::str(py_strip(self.s, opt_str_arg(a[0], fname), left, right));
}

Value str_join(const Value& self, const CallArgs& args) {
  const auto a = bind_args("join", args, {"iterable"}, 1);
  const ValueList items = iterate(*a[0]);
  std::string out;
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (items[k].kind != Kind::Str)
      throw RunError("TypeError: sequence item " + std::to_string(k) + ": expected str instance, " +
                     type_name(items[k]) + " found");
    if (k) out += self.s;
    out += items[k].s;
  }
  return Value::str(std::move(out));
}

/// str.format with plain fields ({}, {0}, {name}, optionally !s / !r); format specs, nested
/// fields and attribute or index lookups in a field are refused.
Value str_format(const Value& self, const CallArgs& args) {
  const std::string& f = self.s;
  std::string out;
  std::size_t auto_index = 0;
  bool manual = false, automatic = false;
  for (std::size_t k = 0; k < f.size(); ++k) {
    if (f[k] == '}') {
      if (k + 1 < f.size() && f[k + 1] == '}') ++k, out += '}';
      else throw RunError("ValueError: Single '}' encountered in format string");
      continue;
    }
    if (f[k] != '{') {
      out += f[k];
      continue;
    }
    if (k + 1 < f.size() && f[k + 1] == '{') {
      out += '{', ++k;
      continue;
    }
    const std::size_t close = f.find('}', k);
    if (close == std::string::npos) throw RunError("ValueError: Single '{' encountered in format string");
    std::string field = f.substr(k + 1, close - k - 1);
    k = close;
    bool repr = false;
    if (field.ends_with("!r") || field.ends_with("!s")) repr = field.back() == 'r', field.resize(field.size() - 2);
    if (field.find_first_of("{:![.") != std::string::npos)
      throw RunError("unsupported: the str.format field '{" + field + "}' (format specs, conversions, lookups)");
    const Value* v = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
      (field.empty() ? automatic : manual) = true;
      if (manual && automatic) throw RunError("ValueError: cannot switch between automatic and manual field numbering");
      const std::size_t i = field.empty() ? auto_index++ : std::stoul(field);
      if (i >= args.pos.size())
        throw RunError("IndexError: Replacement index " + std::to_string(i) +
                       " out of range for positional args tuple");
      v = &args.pos[i];
    } else {
      for (const auto& [name, value] : args.kw)
        if (name == field) v = &value;
      if (!v) throw RunError("KeyError: '" + field + "'");
    }
    out += repr ? py_repr(*v) : py_str(*v);
  }
  return Value::str(std::move(out));
}

template <bool Prefix>
Value remove_affix(const Value& s, Interp&, const CallArgs& args) {
  const auto a = bind_args(Prefix ? "removeprefix" : "removesuffix", args, {"affix"}, 1);
  const std::string affix = str_arg(a[0], Prefix ? "removeprefix" : "removesuffix");
  if (Prefix && s.s.starts_with(affix)) return Value::str(s.s.substr(affix.size()));
  if (!Prefix && s.s.ends_with(affix)) return Value::str(s.s.substr(0, s.s.size() - affix.size()));
  return Value::str(s.s);
}

template <bool Left>
Value pad(const Value& s, Interp&, const CallArgs& args) {
  const char* fname = Left ? "ljust" : "rjust";
  const auto a = bind_args(fname, args, {"width", "fillchar"}, 1);
  const int64_t width = int_arg(a[0], fname, 0);
  const std::string fill = a[1] ? str_arg(a[1], fname) : " ";
  if (u32_length(fill) != 1) throw RunError("TypeError: The fill character must be exactly one character long");
  const int64_t n = static_cast<int64_t>(u32_length(s.s));
  std::string padding;
  for (int64_t k = n; k < width; ++k) padding += fill;
  return Value::str(Left ? s.s + padding : padding + s.s);
}

Value partition(const Value& s, const CallArgs& args, bool from_right) {
  const char* fname = from_right ? "rpartition" : "partition";
  const auto a = bind_args(fname, args, {"sep"}, 1);
  const std::string sep = str_arg(a[0], fname);
  if (sep.empty()) throw RunError("ValueError: empty separator");
  const auto at = from_right ? s.s.rfind(sep) : s.s.find(sep);
  if (at == std::string::npos)
    return from_right ? Value::tuple({Value::str(""), Value::str(""), Value::str(s.s)})
                      : Value::tuple({Value::str(s.s), Value::str(""), Value::str("")});
  return Value::tuple({Value::str(s.s.substr(0, at)), Value::str(sep), Value::str(s.s.substr(at + sep.size()))});
}

Value str_predicate(const Value& self, const std::string& name) {
  using Pred = bool (*)(std::string_view);
  Pred pred = nullptr;
  if (name == "isalpha") pred = py_isalpha;
  if (name == "isalnum") pred = py_isalnum;
  if (name == "isdecimal") pred = py_isdecimal;
  if (name == "islower") pred = py_islower;
  if (name == "isupper") pred = py_isupper;
  if (name == "isspace")
    pred = [](std::string_view s) {
      const auto u = to_u32(s);
      return !u.empty() && std::all_of(u.begin(), u.end(), py_isspace);
    };
  if (!pred) return Value::undefined();
  return make_function("str." + name, [self, pred, name](Interp&, CallArgs& a) {
    bind_args(name, a, {});
    return Value::boolean(pred(self.s));
  });
}

Value str_method(const Value& self, const std::string& name) {
  using S = const Value&;
  using I = Interp&;
  using A = const CallArgs&;
  auto nullary = [&](std::string (*f)(std::string_view)) {
    return make_function("str." + name, [self, f, name](Interp&, CallArgs& a) {
      bind_args(name, a, {});
      return Value::str(f(self.s));
    });
  };
  if (name == "upper") return nullary(py_upper);
  if (name == "lower") return nullary(py_lower);
  if (name == "title") return nullary(py_title);
  if (name == "capitalize") return nullary(py_capitalize);
  if (name == "startswith")
    return bind_method(self, name, [](S s, I, A a) { return Value::boolean(affix_match(s, a, "startswith", true)); });
  if (name == "endswith")
    return bind_method(self, name, [](S s, I, A a) { return Value::boolean(affix_match(s, a, "endswith", false)); });
  if (name == "strip") return bind_method(self, name, [](S s, I, A a) { return str_strip(s, a, "strip", true, true); });
  if (name == "lstrip")
    return bind_method(self, name, [](S s, I, A a) { return str_strip(s, a, "lstrip", true, false); });
  if (name == "rstrip")
    return bind_method(self, name, [](S s, I, A a) { return str_strip(s, a, "rstrip", false, true); });
  if (name == "split") return bind_method(self, name, [](S s, I, A a) { return str_split(s, a, "split", false); });
  if (name == "rsplit") return bind_method(self, name, [](S s, I, A a) { return str_split(s, a, "rsplit", true); });
  if (name == "find") return bind_method(self, name, [](S s, I, A a) { return str_find(s, a, "find", false, false); });
  if (name == "rfind") return bind_method(self, name, [](S s, I, A a) { return str_find(s, a, "rfind", true, false); });
  if (name == "index") return bind_method(self, name, [](S s, I, A a) { return str_find(s, a, "index", false, true); });
  if (name == "rindex")
    return bind_method(self, name, [](S s, I, A a) { return str_find(s, a, "rindex", true, true); });
  if (name == "join") return bind_method(self, name, [](S s, I, A a) { return str_join(s, a); });
  if (name == "format") return bind_method(self, name, [](S s, I, A a) { return str_format(s, a); });
  if (name == "removeprefix") return bind_method(self, name, remove_affix<true>);
  if (name == "removesuffix") return bind_method(self, name, remove_affix<false>);
  if (name == "ljust") return bind_method(self, name, pad<true>);
  if (name == "rjust") return bind_method(self, name, pad<false>);
  if (name == "partition") return bind_method(self, name, [](S s, I, A a) { return partition(s, a, false); });
  if (name == "rpartition") return bind_method(self, name, [](S s, I, A a) { return partition(s, a, true); });
  if (name == "count")
    return bind_method(self, name, [](S s, I, A a) {
      const auto b = bind_args("count", a, {"sub"}, 1);
      return Value::integer(py_count(s.s, str_arg(b[0], "count")));
    });
  if (name == "replace")
    return bind_method(self, name, [](S s, I, A a) {
      const auto b = bind_args("replace", a, {"old", "new", "count"}, 2);
      return Value::str(
          py_replace(s.s, str_arg(b[0], "replace"), str_arg(b[1], "replace"), int_arg(b[2], "replace", -1)));
    });
  if (name == "splitlines")
    return bind_method(self, name, [](S s, I, A a) {
      const auto b = bind_args("splitlines", a, {"keepends"});
      if (b[0] && truthy(*b[0])) throw RunError("unsupported: splitlines(keepends=True)");
      ValueList out;
      for (auto& line : py_splitlines(s.s)) out.push_back(Value::str(std::move(line)));
      return Value::list(std::move(out));
    });
  if (Value p = str_predicate(self, name); !p.is_undefined()) return p;
  static const char* kOther[] = {"casefold", "center",    "encode",       "expandtabs", "format_map",
                                 "isascii",  "isdigit",   "isidentifier", "isnumeric",  "isprintable",
                                 "istitle",  "maketrans", "swapcase",     "translate",  "zfill"};
  for (const char* o : kOther)
    if (name == o) return unsupported_function("the str method " + name + "()");
  return Value::undefined();
}

Value dict_method(const Value& self, const std::string& name) {
  auto view = [&](SeqKind kind) {
    return make_function("dict." + name, [self, kind, name](Interp&, CallArgs& a) {
      bind_args(name, a, {});
      ValueList out;
      for (const auto& [k, v] : self.dict->entries)
        out.push_back(kind == SeqKind::DictItems ? Value::tuple({k, v}) : kind == SeqKind::DictKeys ? k : v);
      return Value::list(std::move(out), kind);
    });
  };
  if (name == "items") return view(SeqKind::DictItems);
  if (name == "keys") return view(SeqKind::DictKeys);
  if (name == "values") return view(SeqKind::DictValues);
  if (name == "get")
    return make_function("dict.get", [self](Interp&, CallArgs& a) {
      const auto b = bind_args("get", a, {"key", "default"}, 1);
      check_hashable(*b[0]);
      const Value* v = self.dict->find(*b[0]);
      return v ? *v : b[1] ? *b[1] : Value::none();
    });
  if (name == "copy")
    return make_function("dict.copy", [self](Interp&, CallArgs& a) {
      bind_args("copy", a, {});
      return self;
    });
  if (one_of(name, {"clear", "pop", "popitem", "setdefault", "update"}))
    return Value::undefined("SecurityError: access to attribute '" + name + "' of 'dict' object is unsafe.");
  if (name == "fromkeys") return unsupported_function("dict.fromkeys()");
  return Value::undefined();
}

Value seq_method(const Value& self, const std::string& name) {
  const bool list = self.seq == SeqKind::List;
  if (self.seq != SeqKind::List && self.seq != SeqKind::Tuple) {
    if (one_of(name, {"mapping", "isdisjoint", "send", "throw", "close", "gi_code", "gi_frame", "gi_running",
                      "gi_yieldfrom", "gi_suspended", "start", "stop", "step", "count", "index"}))
      return unsupported_function("the " + type_name(self) + " attribute " + name);
    return Value::undefined();
  }
  if (name == "count")
    return make_function("count", [self](Interp&, CallArgs& a) {
      const auto b = bind_args("count", a, {"value"}, 1);
      return Value::integer(
          std::count_if(self.items->begin(), self.items->end(), [&](const Value& x) { return py_eq(x, *b[0]); }));
    });
  if (name == "index")
    return make_function("index", [self](Interp&, CallArgs& a) {
      const auto b = bind_args("index", a, {"value"}, 1);
      for (std::size_t k = 0; k < self.items->size(); ++k)
        if (py_eq((*self.items)[k], *b[0])) return Value::integer(static_cast<int64_t>(k));
      throw RunError("ValueError: " + py_repr(*b[0]) + " is not in " + type_name(self));
    });
  if (list && name == "copy")
    return make_function("list.copy", [self](Interp&, CallArgs& a) {
      bind_args("copy", a, {});
      return self;
    });
  if (list && one_of(name, {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"}))
    return Value::undefined("SecurityError: access to attribute '" + name + "' of 'list' object is unsafe.");
  return Value::undefined();
}

Value loop_attribute(const Value& self, const std::string& name) {
  const LoopState& st = *self.loop;
  const auto n = static_cast<int64_t>(st.items->size());
  const auto i = static_cast<int64_t>(st.index0);
  if (name == "index0") return Value::integer(i);
  if (name == "index") return Value::integer(i + 1);
  if (name == "revindex") return Value::integer(n - i);
  if (name == "revindex0") return Value::integer(n - i - 1);
  if (name == "first") return Value::boolean(i == 0);
  if (name == "last") return Value::boolean(i == n - 1);
  if (name == "length") return Value::integer(n);
  if (name == "depth") return Value::integer(1);
  if (name == "depth0") return Value::integer(0);
  if (name == "previtem") return i == 0 ? Value::undefined("there is no previous item") : (*st.items)[st.index0 - 1];
  if (name == "nextitem") return i == n - 1 ? Value::undefined("there is no next item") : (*st.items)[st.index0 + 1];
  auto loop = self.loop;
  if (name == "cycle")
    return make_function("loop.cycle", [loop](Interp&, CallArgs& a) {
      if (a.pos.empty()) throw RunError("TypeError: no items for cycling given");
      return a.pos[loop->index0 % a.pos.size()];
    });
  if (name == "changed")
    return make_function("loop.changed", [loop](Interp&, CallArgs& a) {
      const Value now = Value::tuple(a.pos);
      if (loop->changed_last && py_eq(*loop->changed_last, now)) return Value::boolean(false);
      loop->changed_last = now;
      return Value::boolean(true);
    });
  return Value::undefined();
}

}  // namespace

Value attribute_of(Interp&, const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Str: return str_method(obj, name);
    case Kind::Dict: return dict_method(obj, name);
    case Kind::Seq: return seq_method(obj, name);
    case Kind::Loop: return loop_attribute(obj, name);
    case Kind::Namespace: {
      const Value* v = obj.ns->attrs.find(name);
      return v ? *v : Value::undefined();
    }
    case Kind::Int:
    case Kind::Bool:
    case Kind::Float:
      if (one_of(name, {"real", "imag", "numerator", "denominator", "conjugate", "bit_length", "bit_count", "to_bytes",
                        "from_bytes", "as_integer_ratio", "is_integer", "hex", "fromhex"}))
        return Value::opaque("unsupported: the " + type_name(obj) + " attribute '" + name + "'");
      return Value::undefined();
    default: return Value::undefined();
  }
}

}  // namespace lathe::tokenizer::jinja
