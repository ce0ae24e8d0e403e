// Runs a parsed chat template: jinja2's scoping (a for-loop iteration, a macro call, a with block,
// a block set and a {% generation %} body each get a scope of their own; if does not), its
// attribute and item lookup, and the output, with the byte spans of {% generation %} blocks.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ast.hpp"
#include "value.hpp"

namespace lathe::tokenizer::jinja {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  Frame* parent = nullptr;
};

enum class Flow : uint8_t { Normal, Break, Continue };

class Interp {
 public:
  Interp(const Program& program, const DictData& context);

  /// Renders the template; `generation` receives the {% generation %} spans.
  std::string run(std::vector<std::pair<std::size_t, std::size_t>>& generation);

  Value eval(const Expr& e, Frame* frame);
  Value call(const Value& fn, CallArgs& args);
  /// jinja2's sandboxed getattr (attribute first, then item) and getitem (item first, then attribute).
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  Value apply_filter(const std::string& name, const Value& value, CallArgs& args);
  bool apply_test(const std::string& name, const Value& value, CallArgs& args);

 private:
  const Program& program_;
  const DictData& context_;
  std::deque<Frame> frames_;  // every scope of this render; macros point into it
  std::string root_;          // what jinja2 has yielded so far: the top level's output
  std::string* out_ = &root_;
  std::vector<std::pair<std::size_t, std::size_t>> generation_;
  int depth_ = 0;

  Frame* child(Frame* parent);
  Value lookup(const std::string& name, Frame* frame);
  Flow exec(const Body& body, Frame* frame);
  Flow exec(const Stmt& s, Frame* frame);
  Flow exec_for(const Stmt& s, Frame* frame);
  void exec_generation(const Stmt& s, Frame* frame);
  std::string render(const Body& body, Frame* frame);
  void assign(const Expr& target, const Value& value, Frame* frame);
  Value make_macro(const Stmt& s, Frame* frame);
  Value call_macro(const Stmt& s, Frame* defining, CallArgs& args);
  Value eval_node(const Expr& e, Frame* frame);
  Value eval_compare(const Expr& e, Frame* frame);
  Value eval_getitem(const Expr& e, Frame* frame);
  Value eval_call(const Expr& e, Frame* frame);
  CallArgs eval_args(const Expr& e, Frame* frame);
  Value filter_chain(const Expr& filter, Value value, Frame* frame);
};

/// The globals of transformers' environment: range, namespace, dict, raise_exception,
/// strftime_now (jinja2's lipsum / cycler / joiner are refused when used). Undefined when none.
Value global_value(const std::string& name);
/// A Python attribute of a value that is not an item: bound methods of str / dict / list,
/// loop.index and the like. Undefined when Python has no such attribute.
Value attribute_of(Interp& in, const Value& obj, const std::string& name);
/// Python slicing obj[start:stop:step] (each bound None or an int).
Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step);

}  // namespace lathe::tokenizer::jinja
