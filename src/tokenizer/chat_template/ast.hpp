// The parsed form of a chat template: jinja2's node types for the subset the interpreter runs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lexer.hpp"
#include "value.hpp"

namespace lathe::tokenizer::jinja {

enum class ExprKind : uint8_t {
  Const,     // value
  Name,      // name
  NsRef,     // name.attr as an assignment target
  List,      // args
  Tuple,     // args
  Dict,      // args: key, value, key, value, ...
  Getattr,   // node.name
  Getitem,   // node[args[0]]
  Slice,     // args: start, stop, step (each may be null)
  Call,      // node(args, kwargs)
  Filter,    // node | name(args, kwargs); node is null in a filter block or a block set
  Test,      // node is name(args, kwargs)
  Neg,       // -node
  Pos,       // +node
  Not,       // not node
  And,       // args[0] and args[1]
  Or,        // args[0] or args[1]
  Binary,    // args[0] name args[1]: + - * / // % **
  Concat,    // args joined with ~
  Compare,   // args[0] ops[0] args[1] ops[1] args[2] ...
  CondExpr,  // args: test, then, else (may be null)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Keyword {
  std::string name;
  ExprPtr value;
};

struct Expr {
  ExprKind kind = ExprKind::Const;
  int line = 0;
  std::string name;
  std::string attr;  // NsRef: the attribute; Binary "**": set when jinja2 would fold a negative base
  Value value;
  ExprPtr node;
  std::vector<ExprPtr> args;
  std::vector<Keyword> kwargs;
  std::vector<std::string> ops;
};

enum class StmtKind : uint8_t {
  Text,        // text
  Print,       // expr
  If,          // conditions[k] -> bodies[k]; bodies[conditions.size()] is the else branch
  For,         // for target in expr if test: bodies[0], else bodies[1]
  Set,         // target = expr
  SetBlock,    // target = bodies[0] rendered, through expr (a filter chain) when set
  Macro,       // text(params = defaults): bodies[0]
  Generation,  // bodies[0]
  Break,
  Continue,
  With,         // targets = defaults (values): bodies[0]
  FilterBlock,  // bodies[0] rendered through expr
};

struct Stmt;
using Body = std::vector<Stmt>;

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0;
  std::string text;
  ExprPtr target;
  ExprPtr expr;
  ExprPtr test;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;
  std::vector<ExprPtr> targets;
  bool varargs = false;  // Macro: the body reads `varargs`
  bool kwargs = false;   // Macro: the body reads `kwargs`
};

struct Program {
  std::string source;
  Body body;
  /// jinja2's StrictUndefined: printing an undefined value is an error, not "".
  bool strict_undefined = false;
};

/// Parses a template; a syntax error or an unsupported construct throws RunError with its line.
/// `plain`: jinja2's own Environment with keep_trailing_newline and StrictUndefined (no
/// trim_blocks / lstrip_blocks), as lm-evaluation-harness renders task templates; otherwise
/// transformers' chat template environment.
std::shared_ptr<Program> parse(const std::string& source, bool plain = false);

/// Whether jinja2 (with transformers' additions) has a filter / test of this name.
bool known_filter(const std::string& name);
bool known_test(const std::string& name);

}  // namespace lathe::tokenizer::jinja
