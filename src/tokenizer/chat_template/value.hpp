// The values a chat template computes with, and Python's rules for them as jinja2 applies them:
// str() and repr(), truthiness, ==, <, the arithmetic operators, `in`, iteration and len().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lathe::tokenizer::jinja {

/// An error while rendering; `line` is filled in by the innermost template node that sees it
/// (0 until then).
struct RunError : std::runtime_error {
  explicit RunError(const std::string& message, int line = 0) : std::runtime_error(message), line(line) {}
  int line;
};

/// What Python calls the type of a value.
enum class Kind : uint8_t {
  Undefined,  // jinja2's default Undefined: prints as "", is false, iterates as empty
  None,
  Bool,
  Int,
  Float,
  Str,  // UTF-8; `safe` marks markupsafe's Markup
  Seq,  // list, tuple, dict views, range, generator: see SeqKind
  Dict,
  Namespace,  // jinja2's namespace(): the only mutable value
  Func,       // builtins, bound methods, macros
  Loop,       // the `loop` of a for loop
  Opaque,     // a Python object the interpreter does not model: any use is an error
};

enum class SeqKind : uint8_t { List, Tuple, Generator, DictItems, DictKeys, DictValues, Range };

struct Value;
using ValueList = std::vector<Value>;
struct DictData;
struct NamespaceData;
struct Function;
struct LoopState;

/// A generator's position: Python generators are consumed by iterating them.
struct GeneratorState {
  std::size_t pos = 0;
};

struct Value {
  Kind kind = Kind::Undefined;
  SeqKind seq = SeqKind::List;
  bool safe = false;  // Str: a Markup string
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // Str: the text; Undefined: why it is undefined; Opaque: the error to report;
                  // a range: its start, stop and step
  std::shared_ptr<const ValueList> items;  // Seq
  std::shared_ptr<GeneratorState> gen;     // Seq of SeqKind::Generator
  std::shared_ptr<const DictData> dict;    // Dict
  std::shared_ptr<NamespaceData> ns;       // Namespace
  std::shared_ptr<const Function> fn;      // Func
  std::shared_ptr<LoopState> loop;         // Loop

  static Value undefined(std::string why = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value str(std::string v, bool safe = false);
  static Value list(ValueList v, SeqKind kind = SeqKind::List);
  static Value tuple(ValueList v) { return list(std::move(v), SeqKind::Tuple); }
  static Value generator(ValueList v);
  static Value dictionary(DictData d);
  static Value opaque(std::string error);
  /// range(start, stop, step) with its items.
  static Value range(int64_t start, int64_t stop, int64_t step);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_str() const { return kind == Kind::Str; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_int() const { return kind == Kind::Int || kind == Kind::Bool; }
  bool is_list() const { return kind == Kind::Seq && seq == SeqKind::List; }
  const ValueList& list_items() const { return *items; }
};

/// An insertion-ordered dict (Python's order); keys compare with Python's ==.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  /// Sets key to value, keeping the position of an existing key.
  void set(const Value& key, Value value);
};

struct NamespaceData {
  DictData attrs;
};

/// Positional and keyword arguments of a call.
struct CallArgs {
  ValueList pos;
  std::vector<std::pair<std::string, Value>> kw;
};

class Interp;
struct Function {
  std::string name;
  std::function<Value(Interp&, CallArgs&)> call;
};

/// The state behind `loop` in one iteration of a for loop.
struct LoopState {
  std::shared_ptr<const ValueList> items;
  std::size_t index0 = 0;
  std::optional<Value> changed_last;
};

/// Python's type name of a value ("str", "list", "dict", ...).
std::string type_name(const Value& v);
/// jinja2's object_type_repr: "dict object", "None", ...
std::string object_type_repr(const Value& v);

/// Throws the error a use of `v` raises when it is Undefined (jinja2's UndefinedError) or Opaque.
void check_usable(const Value& v);

/// Python's str(v): what {{ v }} prints.
std::string py_str(const Value& v);
/// Python's repr(v).
std::string py_repr(const Value& v);
/// Python's bool(v).
bool truthy(const Value& v);
/// Python's a == b.
bool py_eq(const Value& a, const Value& b);
/// Python's a < b; a TypeError when the types do not order.
bool py_lt(const Value& a, const Value& b);
/// Python's ordering operators ("<", "<=", ">", ">=").
bool py_order(const std::string& op, const Value& a, const Value& b);
/// Python's binary operators: "+", "-", "*", "/", "//", "%", "**".
Value binary_op(const std::string& op, const Value& a, const Value& b);
/// Python's unary minus and plus ("-", "+").
Value unary_op(const std::string& op, const Value& a);
/// Python's `needle in haystack`. Consumes a generator as far as Python would.
bool py_contains(const Value& haystack, const Value& needle);
/// The items Python's iter(v) yields (the keys of a dict, the characters of a string); consumes
/// a generator; a TypeError for a value that does not iterate.
ValueList iterate(const Value& v);
/// Python's len(v).
int64_t py_len(const Value& v);
/// Raises Python's "unhashable type" TypeError for a value that cannot be a dict key.
void check_hashable(const Value& v);

/// The value of a JSON document (objects keep the order they have in `j`).
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

/// A short Python float repr: "1.0", "0.1", "1e+16", "inf".
std::string float_repr(double v);

}  // namespace lathe::tokenizer::jinja
