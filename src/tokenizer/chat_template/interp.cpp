#include "interp.hpp"

#include <algorithm>

#include "pystr.hpp"

namespace lathe::tokenizer::jinja {

namespace {

/// Counts nested calls: Python stops a runaway recursion with RecursionError.
struct DepthGuard {
  explicit DepthGuard(int& depth) : depth(depth) {
    if (++depth > 400) {
      --depth;
      throw RunError("RecursionError: maximum recursion depth exceeded");
    }
  }
  ~DepthGuard() { --depth; }
  int& depth;
};

bool is_dunder(const std::string& name) { return name.size() > 4 && name.starts_with("__") && name.ends_with("__"); }

Value unsafe(const Value& obj, const std::string& name) {
  return Value::undefined("SecurityError: access to attribute '" + name + "' of '" + type_name(obj) +
                          "' object is unsafe.");
}

}  // namespace

Interp::Interp(const Program& program, const DictData& context) : program_(program), context_(context) {}

std::string Interp::run(std::vector<std::pair<std::size_t, std::size_t>>& generation) {
  exec(program_.body, child(nullptr));
  // Character offsets -> byte offsets of the text (clamped to its end, as Python's slicing is).
  std::vector<std::size_t> byte_at{0};
  for (std::size_t k = 0; k < root_.size(); ++k)
    if (k + 1 == root_.size() || (static_cast<unsigned char>(root_[k + 1]) & 0xC0) != 0x80) byte_at.push_back(k + 1);
  auto to_bytes = [&](std::size_t chars) { return byte_at[std::min(chars, byte_at.size() - 1)]; };
  generation.clear();
  for (const auto& [b, e] : generation_) generation.emplace_back(to_bytes(b), to_bytes(e));
  // Macros hold plain pointers into frames_; nothing outlives this render.
  return std::move(root_);
}

Frame* Interp::child(Frame* parent) {
  frames_.emplace_back();
  frames_.back().parent = parent;
  return &frames_.back();
}

Value Interp::lookup(const std::string& name, Frame* frame) {
  for (Frame* f = frame; f; f = f->parent)
    if (auto it = f->vars.find(name); it != f->vars.end()) return it->second;
  if (const Value* v = context_.find(name)) return *v;
  Value g = global_value(name);
  if (!g.is_undefined()) return g;
  return Value::undefined("'" + name + "' is undefined");
}

// ------------------------------------------------------------------ statements

Flow Interp::exec(const Body& body, Frame* frame) {
  for (const auto& s : body) {
    const Flow flow = exec(s, frame);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

Flow Interp::exec(const Stmt& s, Frame* frame) try {
  switch (s.kind) {
    case StmtKind::Text: *out_ += s.text; break;
    case StmtKind::Print: {
      const Value v = eval(*s.expr, frame);
      if (program_.strict_undefined && v.is_undefined()) throw RunError(v.s.empty() ? "undefined value" : v.s, s.line);
      *out_ += py_str(v);
      break;
    }
    case StmtKind::If:
      for (std::size_t k = 0; k < s.conditions.size(); ++k)
        if (truthy(eval(*s.conditions[k], frame))) return exec(s.bodies[k], frame);
      return exec(s.bodies.back(), frame);
    case StmtKind::For: return exec_for(s, frame);
    case StmtKind::Set: assign(*s.target, eval(*s.expr, frame), frame); break;
    case StmtKind::SetBlock: {
      Value v = Value::str(render(s.bodies[0], child(frame)));
      if (s.expr) v = filter_chain(*s.expr, v, frame);
      assign(*s.target, v, frame);
      break;
    }
    case StmtKind::Macro: frame->vars[s.text] = make_macro(s, frame); break;
    case StmtKind::Generation: exec_generation(s, frame); break;
    case StmtKind::Break: return Flow::Break;
    case StmtKind::Continue: return Flow::Continue;
    case StmtKind::With: {
      Frame* inner = child(frame);
      for (std::size_t k = 0; k < s.targets.size(); ++k) assign(*s.targets[k], eval(*s.defaults[k], frame), inner);
      return exec(s.bodies[0], inner);
    }
    case StmtKind::FilterBlock: {
      const Value v = filter_chain(*s.expr, Value::str(render(s.bodies[0], child(frame))), frame);
      *out_ += py_str(v);
      break;
    }
  }
  return Flow::Normal;
} catch (RunError& e) {
  if (e.line == 0) e.line = s.line;
  throw;
}

Flow Interp::exec_for(const Stmt& s, Frame* frame) {
  ValueList items = iterate(eval(*s.expr, frame));
  if (s.test) {
    ValueList kept;
    for (auto& item : items) {
      Frame* f = child(frame);
      assign(*s.target, item, f);
      if (truthy(eval(*s.test, f))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  auto state = std::make_shared<LoopState>();
  state->items = std::make_shared<const ValueList>(std::move(items));
  Value loop;
  loop.kind = Kind::Loop;
  loop.loop = state;
  // jinja2 clears its "no iteration" flag at the end of the body, so the else branch also runs
  // when every iteration ended in continue or break.
  bool completed = false;
  for (std::size_t k = 0; k < state->items->size(); ++k) {
    state->index0 = k;
    Frame* f = child(frame);
    assign(*s.target, (*state->items)[k], f);
    f->vars["loop"] = loop;
    const Flow flow = exec(s.bodies[0], f);
    completed = completed || flow == Flow::Normal;
    if (flow == Flow::Break) break;
  }
  if (!completed) return exec(s.bodies[1], child(frame));
  return Flow::Normal;
}

/// transformers' AssistantTracker: the block renders as a caller macro, and its span starts at
/// the length of what the template has yielded so far, in characters (turned into bytes of the
/// final text by run(); for a block inside a macro or another block that is where transformers
/// puts it too).
void Interp::exec_generation(const Stmt& s, Frame* frame) {
  const std::string text = render(s.bodies[0], child(frame));
  const std::size_t start = u32_length(root_);
  generation_.emplace_back(start, start + u32_length(text));
  *out_ += text;
}

std::string Interp::render(const Body& body, Frame* frame) {
  std::string buffer;
  std::string* saved = out_;
  out_ = &buffer;
  struct Restore {
    std::string*& out;
    std::string* saved;
    ~Restore() { out = saved; }
  } restore{out_, saved};
  if (exec(body, frame) != Flow::Normal)
    throw RunError("unsupported: break or continue inside a block set, filter block or generation block");
  return buffer;
}

void Interp::assign(const Expr& target, const Value& value, Frame* frame) {
  if (target.kind == ExprKind::Name) {
    frame->vars[target.name] = value;
  } else if (target.kind == ExprKind::Tuple) {
    const ValueList items = iterate(value);
    const std::size_t n = target.args.size();
    if (items.size() > n) throw RunError("ValueError: too many values to unpack (expected " + std::to_string(n) + ")");
    if (items.size() < n)
      throw RunError("ValueError: not enough values to unpack (expected " + std::to_string(n) + ", got " +
                     std::to_string(items.size()) + ")");
    for (std::size_t k = 0; k < n; ++k) assign(*target.args[k], items[k], frame);
  } else {
    const Value ns = lookup(target.name, frame);
    if (ns.kind != Kind::Namespace)
      throw RunError("TemplateRuntimeError: cannot assign attribute on non-namespace object");
    if (target.attr.starts_with("_"))
      throw RunError(
          "SecurityError: Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" +
          target.attr + "'. Please rename the attribute.");
    ns.ns->attrs.set(Value::str(target.attr), value);
  }
}

Value Interp::make_macro(const Stmt& s, Frame* frame) {
  auto fn = std::make_shared<Function>();
  fn->name = s.text;
  const Stmt* stmt = &s;
  fn->call = [stmt, frame](Interp& in, CallArgs& args) { return in.call_macro(*stmt, frame, args); };
  Value v;
  v.kind = Kind::Func;
  v.fn = std::move(fn);
  return v;
}

Value Interp::call_macro(const Stmt& s, Frame* defining, CallArgs& args) {
  Frame* f = child(defining);
  const std::size_t n = s.params.size();
  if (args.pos.size() > n && !s.varargs)
    throw RunError("TypeError: macro '" + s.text + "' takes not more than " + std::to_string(n) + " argument(s)");
  std::vector<bool> given(n, false);
  for (std::size_t k = 0; k < n && k < args.pos.size(); ++k) f->vars[s.params[k]] = args.pos[k], given[k] = true;
  DictData extra;
  for (auto& [name, value] : args.kw) {
    std::size_t j = args.pos.size();
    while (j < n && s.params[j] != name) ++j;
    if (j < n && !given[j]) {
      f->vars[name] = value;
      given[j] = true;
    } else if (s.kwargs) {
      extra.set(Value::str(name), value);
    } else {
      throw RunError("TypeError: macro '" + s.text + "' takes no keyword argument '" + name + "'");
    }
  }
  const std::size_t first_default = n - s.defaults.size();
  for (std::size_t k = 0; k < n; ++k) {
    if (given[k]) continue;
    f->vars[s.params[k]] = k >= first_default ? eval(*s.defaults[k - first_default], f)
                                              : Value::undefined("parameter '" + s.params[k] + "' was not provided");
  }
  if (s.varargs)
    f->vars["varargs"] =
        Value::tuple(args.pos.size() > n ? ValueList(args.pos.begin() + static_cast<std::ptrdiff_t>(n), args.pos.end())
                                         : ValueList{});
  if (s.kwargs) f->vars["kwargs"] = Value::dictionary(std::move(extra));
  return Value::str(render(s.bodies[0], f));
}

// ------------------------------------------------------------------ expressions

Value Interp::eval(const Expr& e, Frame* frame) try { return eval_node(e, frame); } catch (RunError& err) {
  if (err.line == 0) err.line = e.line;
  throw;
}

Value Interp::eval_node(const Expr& e, Frame* frame) {
  switch (e.kind) {
    case ExprKind::Const: return e.value;
    case ExprKind::Name: return lookup(e.name, frame);
    case ExprKind::List:
    case ExprKind::Tuple: {
      ValueList items;
      for (const auto& a : e.args) items.push_back(eval(*a, frame));
      return Value::list(std::move(items), e.kind == ExprKind::List ? SeqKind::List : SeqKind::Tuple);
    }
    case ExprKind::Dict: {
      DictData d;
      for (std::size_t k = 0; k + 1 < e.args.size(); k += 2) {
        Value key = eval(*e.args[k], frame);
        check_hashable(key);
        d.set(key, eval(*e.args[k + 1], frame));
      }
      return Value::dictionary(std::move(d));
    }
    case ExprKind::Getattr: return getattr(eval(*e.node, frame), e.name);
    case ExprKind::Getitem: return eval_getitem(e, frame);
    case ExprKind::Call: return eval_call(e, frame);
    case ExprKind::Filter: {
      const Value v = eval(*e.node, frame);
      CallArgs args = eval_args(e, frame);
      return apply_filter(e.name, v, args);
    }
    case ExprKind::Test: {
      const Value v = eval(*e.node, frame);
      CallArgs args = eval_args(e, frame);
      return Value::boolean(apply_test(e.name, v, args));
    }
    case ExprKind::Neg: return unary_op("-", eval(*e.node, frame));
    case ExprKind::Pos: return unary_op("+", eval(*e.node, frame));
    case ExprKind::Not: return Value::boolean(!truthy(eval(*e.node, frame)));
    case ExprKind::And:
    case ExprKind::Or: {
      Value a = eval(*e.args[0], frame);
      if (truthy(a) == (e.kind == ExprKind::Or)) return a;
      return eval(*e.args[1], frame);
    }
    case ExprKind::Binary:
      if (!e.attr.empty())  // see parse_pow
        return unary_op("-", binary_op(e.name, unary_op("-", eval(*e.args[0], frame)), eval(*e.args[1], frame)));
      return binary_op(e.name, eval(*e.args[0], frame), eval(*e.args[1], frame));
    case ExprKind::Concat: {
      std::string out;
      for (const auto& a : e.args) out += py_str(eval(*a, frame));
      return Value::str(std::move(out));
    }
    case ExprKind::Compare: return eval_compare(e, frame);
    case ExprKind::CondExpr:
      if (truthy(eval(*e.args[0], frame))) return eval(*e.args[1], frame);
      if (e.args[2]) return eval(*e.args[2], frame);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    case ExprKind::NsRef:
    case ExprKind::Slice: break;
  }
  throw RunError("internal error: an expression that cannot be evaluated here");
}

Value Interp::eval_compare(const Expr& e, Frame* frame) {
  Value left = eval(*e.args[0], frame);
  for (std::size_t k = 0; k < e.ops.size(); ++k) {
    Value right = eval(*e.args[k + 1], frame);
    const std::string& op = e.ops[k];
    bool ok;
    if (op == "==") ok = py_eq(left, right);
    else if (op == "!=") ok = !py_eq(left, right);
    else if (op == "in") ok = py_contains(right, left);
    else if (op == "notin") ok = !py_contains(right, left);
    else ok = py_order(op, left, right);
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interp::eval_getitem(const Expr& e, Frame* frame) {
  const Value obj = eval(*e.node, frame);
  const Expr& key = *e.args[0];
  if (key.kind != ExprKind::Slice) return getitem(obj, eval(key, frame));
  Value bounds[3];
  for (int k = 0; k < 3; ++k) bounds[k] = key.args[k] ? eval(*key.args[k], frame) : Value::none();
  return slice_value(obj, bounds[0], bounds[1], bounds[2]);
}

CallArgs Interp::eval_args(const Expr& e, Frame* frame) {
  CallArgs args;
  for (const auto& a : e.args) args.pos.push_back(eval(*a, frame));
  for (const auto& kw : e.kwargs) args.kw.emplace_back(kw.name, eval(*kw.value, frame));
  return args;
}

Value Interp::eval_call(const Expr& e, Frame* frame) {
  const Value fn = eval(*e.node, frame);
  CallArgs args = eval_args(e, frame);
  return call(fn, args);
}

Value Interp::call(const Value& fn, CallArgs& args) {
  if (fn.kind == Kind::Func) {
    DepthGuard guard(depth_);
    return fn.fn->call(*this, args);
  }
  check_usable(fn);
  throw RunError("TypeError: '" + type_name(fn) + "' object is not callable");
}

Value Interp::filter_chain(const Expr& filter, Value value, Frame* frame) {
  if (filter.node) value = filter_chain(*filter.node, std::move(value), frame);
  CallArgs args = eval_args(filter, frame);
  try {
    return apply_filter(filter.name, value, args);
  } catch (RunError& err) {
    if (err.line == 0) err.line = filter.line;
    throw;
  }
}

Value Interp::getattr(const Value& obj, const std::string& name) {
  check_usable(obj);
  if (is_dunder(name)) return unsafe(obj, name);
  Value attr = attribute_of(*this, obj, name);
  if (!attr.is_undefined() || !attr.s.empty()) return attr;
  if (obj.kind == Kind::Dict)
    if (const Value* v = obj.dict->find(name)) return *v;
  return Value::undefined("'" + object_type_repr(obj) + "' has no attribute '" + name + "'");
}

Value Interp::getitem(const Value& obj, const Value& key) {
  check_usable(obj);
  if (obj.kind == Kind::Dict) {
    bool hashable = true;
    try {
      check_hashable(key);
    } catch (const RunError&) {
      hashable = false;
    }
    if (hashable)
      if (const Value* v = obj.dict->find(key)) return *v;
  }
  const bool indexable =
      obj.kind == Kind::Str ||
      (obj.kind == Kind::Seq && (obj.seq == SeqKind::List || obj.seq == SeqKind::Tuple || obj.seq == SeqKind::Range));
  if (indexable && key.is_int()) {
    const int64_t n = py_len(obj);
    int64_t k = key.kind == Kind::Bool ? key.b : key.i;
    if (k < 0) k += n;
    if (k >= 0 && k < n) {
      if (obj.kind != Kind::Str) return (*obj.items)[static_cast<std::size_t>(k)];
      return slice_value(obj, Value::integer(k), Value::integer(k + 1), Value::none());
    }
  }
  if (key.kind == Kind::Str) {
    if (is_dunder(key.s)) return unsafe(obj, key.s);
    Value attr = attribute_of(*this, obj, key.s);
    if (!attr.is_undefined() || !attr.s.empty()) return attr;
    return Value::undefined("'" + object_type_repr(obj) + "' has no attribute '" + key.s + "'");
  }
  return Value::undefined("'" + object_type_repr(obj) + "' has no element " + py_repr(key));
}

}  // namespace lathe::tokenizer::jinja
