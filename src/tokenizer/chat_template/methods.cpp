// The globals of transformers' template environment (range, namespace, dict, raise_exception,
// strftime_now), the argument binding the builtins share, and Python slicing.

#include <sys/time.h>
#include <ctime>

#include <algorithm>
#include <cstdio>

#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

Bound bind_args(const std::string& fname, const CallArgs& args, std::initializer_list<const char*> names,
                std::size_t required) {
  const std::vector<const char*> params(names);
  if (args.pos.size() > params.size())
    throw RunError("TypeError: " + fname + "() takes at most " + std::to_string(params.size()) + " argument(s) (" +
                   std::to_string(args.pos.size()) + " given)");
  Bound out(params.size());
  for (std::size_t k = 0; k < args.pos.size(); ++k) out[k] = args.pos[k];
  for (const auto& [name, value] : args.kw) {
    std::size_t j = 0;
    while (j < params.size() && name != params[j]) ++j;
    if (j == params.size())
      throw RunError("TypeError: " + fname + "() got an unexpected keyword argument '" + name + "'");
    if (out[j]) throw RunError("TypeError: " + fname + "() got multiple values for argument '" + name + "'");
    out[j] = value;
  }
  for (std::size_t k = 0; k < required; ++k)
    if (!out[k]) throw RunError("TypeError: " + fname + "() missing required argument '" + params[k] + "'");
  return out;
}

Value make_function(std::string name, std::function<Value(Interp&, CallArgs&)> call) {
  auto fn = std::make_shared<Function>();
  fn->name = std::move(name);
  fn->call = std::move(call);
  Value v;
  v.kind = Kind::Func;
  v.fn = std::move(fn);
  return v;
}

Value unsupported_function(const std::string& what) {
  return make_function(what, [what](Interp&, CallArgs&) -> Value { throw RunError("unsupported: " + what); });
}

int64_t int_arg(const std::optional<Value>& v, const std::string& fname, int64_t def) {
  if (!v) return def;
  if (!v->is_int())
    throw RunError("TypeError: " + fname + "(): '" + type_name(*v) + "' object cannot be interpreted as an integer");
  return v->kind == Kind::Bool ? v->b : v->i;
}

std::string str_arg(const std::optional<Value>& v, const std::string& fname) {
  if (!v || v->kind != Kind::Str)
    throw RunError("TypeError: " + fname + "() argument must be str, not " + (v ? type_name(*v) : "nothing"));
  return v->s;
}

std::optional<std::string> opt_str_arg(const std::optional<Value>& v, const std::string& fname) {
  if (!v || v->kind == Kind::None) return std::nullopt;
  return str_arg(v, fname);
}

DictData make_dict(const CallArgs& args, const std::string& fname) {
  if (args.pos.size() > 1)
    throw RunError("TypeError: " + fname + " expected at most 1 argument, got " + std::to_string(args.pos.size()));
  DictData d;
  if (!args.pos.empty()) {
    const Value& src = args.pos[0];
    if (src.kind == Kind::Dict) {
      d = *src.dict;
    } else {
      for (const auto& item : iterate(src)) {
        const ValueList pair = iterate(item);
        if (pair.size() != 2)
          throw RunError("ValueError: dictionary update sequence element has length " + std::to_string(pair.size()) +
                         "; 2 is required");
        check_hashable(pair[0]);
        d.set(pair[0], pair[1]);
      }
    }
  }
  for (const auto& [name, value] : args.kw) d.set(Value::str(name), value);
  return d;
}

namespace {

// ------------------------------------------------------------------ globals

Value range_function(Interp&, CallArgs& args) {
  if (!args.kw.empty()) throw RunError("TypeError: range() takes no keyword arguments");
  if (args.pos.empty() || args.pos.size() > 3) throw RunError("TypeError: range expected 1 to 3 arguments");
  int64_t v[3] = {0, 0, 1};
  for (std::size_t k = 0; k < args.pos.size(); ++k) v[args.pos.size() == 1 ? 1 : k] = int_arg(args.pos[k], "range", 0);
  if (v[2] == 0) throw RunError("ValueError: range() arg 3 must not be zero");
  return Value::range(v[0], v[1], v[2]);
}

Value namespace_function(Interp&, CallArgs& args) {
  Value v;
  v.kind = Kind::Namespace;
  v.ns = std::make_shared<NamespaceData>();
  v.ns->attrs = make_dict(args, "namespace");
  for (const auto& [k, _] : v.ns->attrs.entries)
    if (k.kind == Kind::Str && k.s.starts_with("_"))
      throw RunError(
          "SecurityError: Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + k.s +
          "'. Please rename the attribute.");
  return v;
}

/// datetime.now().strftime(fmt): Python handles %f, %z and %Z itself (a naive datetime has no
/// offset or zone: both are empty) and gives the rest to the C library.
Value strftime_now(Interp&, CallArgs& args) {
  const auto a = bind_args("strftime_now", args, {"format"}, 1);
  const std::string fmt = str_arg(a[0], "strftime_now");
  timeval tv{};
  gettimeofday(&tv, nullptr);
  std::tm tm{};
  const time_t now = tv.tv_sec;
  localtime_r(&now, &tm);
  std::string c_fmt;
  for (std::size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%' || k + 1 >= fmt.size()) {
      c_fmt.push_back(fmt[k]);
      continue;
    }
    const char c = fmt[++k];
    if (c == 'f') {
      char us[16];
      std::snprintf(us, sizeof us, "%06ld", static_cast<long>(tv.tv_usec));
      c_fmt += us;
    } else if (c != 'z' && c != 'Z') {
      c_fmt += '%';
      c_fmt += c;
    }
  }
  if (c_fmt.empty()) return Value::str("");
  for (std::size_t size = 256; size <= (1u << 20); size *= 4) {
    std::string buf(size, '\0');
    const std::size_t n = std::strftime(buf.data(), size, c_fmt.c_str(), &tm);
    if (n > 0) return Value::str(buf.substr(0, n));
  }
  return Value::str("");
}

}  // namespace

Value global_value(const std::string& name) {
  if (name == "range") return make_function("range", range_function);
  if (name == "namespace") return make_function("namespace", namespace_function);
  if (name == "dict")
    return make_function("dict", [](Interp&, CallArgs& a) { return Value::dictionary(make_dict(a, "dict")); });
  if (name == "raise_exception")
    return make_function("raise_exception", [](Interp&, CallArgs& a) -> Value {
      const auto b = bind_args("raise_exception", a, {"message"}, 1);
      throw RunError("raise_exception: " + py_str(*b[0]));
    });
  if (name == "strftime_now") return make_function("strftime_now", strftime_now);
  if (name == "lipsum" || name == "cycler" || name == "joiner")
    return unsupported_function("the global " + name + "()");
  return Value::undefined();
}

// ------------------------------------------------------------------ slicing

Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  check_usable(obj);
  const bool sliceable =
      obj.kind == Kind::Str ||
      (obj.kind == Kind::Seq && (obj.seq == SeqKind::List || obj.seq == SeqKind::Tuple || obj.seq == SeqKind::Range));
  if (obj.kind == Kind::Dict) throw RunError("TypeError: unhashable type: 'slice'");
  if (!sliceable) throw RunError("TypeError: '" + type_name(obj) + "' object is not subscriptable");
  auto bound = [](const Value& v, int64_t def) {
    if (v.kind == Kind::None) return def;
    if (!v.is_int()) throw RunError("TypeError: slice indices must be integers or None or have an __index__ method");
    return v.kind == Kind::Bool ? int64_t{v.b} : v.i;
  };
  const int64_t st = bound(step, 1);
  if (st == 0) throw RunError("ValueError: slice step cannot be zero");
  const std::u32string text = obj.kind == Kind::Str ? to_u32(obj.s) : std::u32string();
  const int64_t n = obj.kind == Kind::Str ? static_cast<int64_t>(text.size()) : static_cast<int64_t>(obj.items->size());
  const int64_t lower = st > 0 ? 0 : -1, upper = st > 0 ? n : n - 1;
  auto adjust = [&](const Value& v, int64_t def) {
    if (v.kind == Kind::None) return def;
    int64_t x = bound(v, 0);
    if (x < 0) {
      x += n;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  const int64_t b = adjust(start, st > 0 ? lower : upper), e = adjust(stop, st > 0 ? upper : lower);
  std::u32string out_text;
  ValueList out;
  for (int64_t k = b; st > 0 ? k < e : k > e; k += st) {
    if (obj.kind == Kind::Str) out_text.push_back(text[static_cast<std::size_t>(k)]);
    else out.push_back((*obj.items)[static_cast<std::size_t>(k)]);
  }
  if (obj.kind == Kind::Str) return Value::str(to_utf8(out_text), obj.safe);
  if (obj.seq == SeqKind::Range) {
    long long r0 = 0, r1 = 0, r2 = 1;
    std::sscanf(obj.s.c_str(), "%lld %lld %lld", &r0, &r1, &r2);
    const __int128 first = __int128{r0} + __int128{b} * r2, last = __int128{r0} + __int128{e} * r2,
                   stride = __int128{r2} * st;
    auto narrow = [](__int128 x) {
      if (x < INT64_MIN || x > INT64_MAX) throw RunError("unsupported: a range bound past 64 bits");
      return static_cast<int64_t>(x);
    };
    return Value::range(narrow(first), narrow(last), narrow(stride));
  }
  return Value::list(std::move(out), obj.seq);
}

}  // namespace lathe::tokenizer::jinja
