// transformers' tojson filter: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False), written as Python's json module writes it.

#include <algorithm>
#include <cmath>

#include "builtins.hpp"
#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

struct DumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};

std::string dumps(const Value& v, const DumpOptions& o, int level);

std::string json_float(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f < 0 ? "-Infinity" : "Infinity";
  return float_repr(f);
}

std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::Str: return k.s;
    case Kind::Int: return std::to_string(k.i);
    case Kind::Float: return json_float(k.f);
    case Kind::Bool: return k.b ? "true" : "false";
    case Kind::None: return "null";
    default: throw RunError("TypeError: keys must be str, int, float, bool or None, not " + type_name(k));
  }
}

/// The text between two items (and after the opening bracket) at nesting `level`.
std::string newline(const DumpOptions& o, int level) {
  std::string out = "\n";
  for (int k = 0; k < level; ++k) out += *o.indent;
  return out;
}

template <typename Items, typename Write>
std::string container(const Items& items, char open, char close, const DumpOptions& o, int level, Write write) {
  if (items.empty()) return std::string{open, close};
  std::string out(1, open);
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (k) out += o.item_sep;
    if (o.indent) out += newline(o, level + 1);
    out += write(items[k]);
  }
  if (o.indent) out += newline(o, level);
  out.push_back(close);
  return out;
}

std::string dumps(const Value& v, const DumpOptions& o, int level) {
  switch (v.kind) {
    case Kind::None: return "null";
    case Kind::Bool: return v.b ? "true" : "false";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return json_float(v.f);
    case Kind::Str: return json_quote(v.s, o.ensure_ascii);
    case Kind::Seq:
      if (v.seq == SeqKind::List || v.seq == SeqKind::Tuple)
        return container(*v.items, '[', ']', o, level, [&](const Value& x) { return dumps(x, o, level + 1); });
      break;
    case Kind::Dict: {
      auto entries = v.dict->entries;
      if (o.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return py_lt(a.first, b.first); });
      return container(entries, '{', '}', o, level, [&](const std::pair<Value, Value>& e) {
        return json_quote(json_key(e.first), o.ensure_ascii) + o.key_sep + dumps(e.second, o, level + 1);
      });
    }
    case Kind::Opaque: throw RunError(v.s);
    default: break;
  }
  throw RunError("TypeError: Object of type " + type_name(v) + " is not JSON serializable");
}

}  // namespace

Value tojson_filter(Interp&, const Value& v, CallArgs& args) {
  const auto a = bind_args("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  DumpOptions o;
  o.ensure_ascii = a[0] && truthy(*a[0]);
  o.sort_keys = a[3] && truthy(*a[3]);
  if (a[1] && a[1]->kind != Kind::None) {
    if (a[1]->kind == Kind::Str) o.indent = a[1]->s;
    else o.indent = std::string(static_cast<std::size_t>(std::max<int64_t>(0, int_arg(a[1], "tojson", 0))), ' ');
    o.item_sep = ",";
  }
  if (a[2] && a[2]->kind != Kind::None) {
    const ValueList seps = iterate(*a[2]);
    if (seps.size() != 2 || seps[0].kind != Kind::Str || seps[1].kind != Kind::Str)
      throw RunError("TypeError: tojson separators must be two strings");
    o.item_sep = seps[0].s;
    o.key_sep = seps[1].s;
  }
  return Value::str(dumps(v, o, 0));
}

}  // namespace lathe::tokenizer::jinja
