// jinja2's parser (jinja2/parser.py) for the statements and expressions the interpreter runs,
// with its operator precedence: conditional < or < and < not < comparisons < + - < ~ < * / // %
// < ** < unary - + < filters, tests, calls, subscripts.

#include <algorithm>
#include <initializer_list>
#include <optional>

#include "ast.hpp"
#include "lexer.hpp"

namespace lathe::tokenizer::jinja {

namespace {

using Names = std::initializer_list<const char*>;

class Parser {
 public:
  Parser(std::vector<Token> tokens, bool plain) : toks_(std::move(tokens)), plain_(plain) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != Tok::Eof) fail("unexpected '" + describe(cur()) + "'");
    return body;
  }

 private:
  std::vector<Token> toks_;
  bool plain_;  // lm-evaluation-harness's environment: regex_replace is a filter there
  std::size_t k_ = 0;
  int nesting_ = 0;  // open brackets, operands and blocks: bounds the recursion

  /// Counts one level of nesting for the scope it lives in; past kMaxNesting levels it fails, as
  /// Python's recursion limit stops jinja2's parser.
  struct Nest {
    static constexpr int kMaxNesting = 200;
    explicit Nest(Parser& p) : p(p) {
      if (++p.nesting_ > kMaxNesting) p.fail("the template nests too deeply");
    }
    ~Nest() { --p.nesting_; }
    Parser& p;
  };
  int loop_depth_ = 0;  // for {% break %} / {% continue %}

  const Token& cur() const { return toks_[k_]; }
  const Token& look() const { return toks_[std::min(k_ + 1, toks_.size() - 1)]; }
  const Token& advance() { return toks_[k_ < toks_.size() - 1 ? k_++ : k_]; }
  [[noreturn]] void fail(const std::string& msg) const { throw RunError(msg, cur().line); }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Name:
      case Tok::Op: return t.text;
      case Tok::String: return "string";
      case Tok::Integer: return "integer";
      case Tok::Float: return "float";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::VarEnd: return "end of print statement";
      case Tok::BlockBegin: return "begin of statement block";
      case Tok::VarBegin: return "begin of print statement";
      case Tok::Data: return "template data";
      case Tok::Eof: return "end of template";
    }
    return "token";
  }

  bool is_name(const char* v) const { return cur().type == Tok::Name && cur().text == v; }
  bool is_op(const char* v) const { return cur().type == Tok::Op && cur().text == v; }
  bool skip_name(const char* v) { return is_name(v) ? (advance(), true) : false; }
  bool skip_op(const char* v) { return is_op(v) ? (advance(), true) : false; }
  void expect_op(const char* v) {
    if (!skip_op(v)) fail(std::string("expected '") + v + "', got '" + describe(cur()) + "'");
  }
  const Token& expect(Tok type, const char* what) {
    if (cur().type != type) fail(std::string("expected ") + what + ", got '" + describe(cur()) + "'");
    return advance();
  }
  std::string expect_name() { return expect(Tok::Name, "a name").text; }
  bool at_any(Names names) const {
    return cur().type == Tok::Name &&
           std::any_of(names.begin(), names.end(), [&](const char* n) { return cur().text == n; });
  }

  static ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ------------------------------------------------------------------ statements
  Body subparse(Names end_names);
  Body parse_statements(Names end_names, bool drop_needle);
  void parse_statement(Body& body);
  Stmt parse_for();
  Stmt parse_if();
  Stmt parse_set();
  Stmt parse_macro();
  Stmt parse_with();
  Stmt parse_filter_block();
  Stmt parse_generation();
  ExprPtr parse_assign_target(bool with_tuple, Names extra_end, bool with_namespace);

  // ------------------------------------------------------------------ expressions
  ExprPtr parse_expression(bool with_condexpr = true) { return with_condexpr ? parse_condexpr() : parse_or(); }
  ExprPtr parse_condexpr();
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter = true);
  ExprPtr parse_primary(bool with_namespace = false);
  ExprPtr parse_tuple(bool simplified, bool with_condexpr, Names extra_end, bool explicit_parentheses,
                      bool with_namespace = false);
  bool is_tuple_end(Names extra_end) const;
  ExprPtr parse_list();
  ExprPtr parse_dict();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  ExprPtr parse_subscribed();
  void parse_call_args(Expr& call);
  ExprPtr parse_filter(ExprPtr node, bool start_inline);
  ExprPtr parse_test(ExprPtr node);
};

Body Parser::subparse(Names end_names) {
  const Nest nest(*this);
  Body body;
  while (cur().type != Tok::Eof) {
    const Token& t = cur();
    if (t.type == Tok::Data) {
      Stmt s;
      s.kind = StmtKind::Text;
      s.line = t.line;
      s.text = t.text;
      body.push_back(std::move(s));
      advance();
    } else if (t.type == Tok::VarBegin) {
      advance();
      Stmt s;
      s.kind = StmtKind::Print;
      s.line = cur().line;
      s.expr = parse_tuple(false, true, {}, false);
      expect(Tok::VarEnd, "the end of the print tag");
      body.push_back(std::move(s));
    } else if (t.type == Tok::BlockBegin) {
      advance();
      if (end_names.size() && at_any(end_names)) return body;
      parse_statement(body);
      expect(Tok::BlockEnd, "the end of the tag");
    } else {
      fail("unexpected '" + describe(t) + "'");
    }
  }
  return body;
}

Body Parser::parse_statements(Names end_names, bool drop_needle) {
  skip_op(":");
  expect(Tok::BlockEnd, "the end of the tag");
  Body body = subparse(end_names);
  if (cur().type == Tok::Eof) {
    std::string expected;
    for (const char* n : end_names) expected += std::string(expected.empty() ? "'" : " or '") + n + "'";
    fail("unexpected end of template: the tag that needs closing was looking for " + expected);
  }
  if (drop_needle) advance();
  return body;
}

void Parser::parse_statement(Body& body) {
  if (cur().type != Tok::Name) fail("tag name expected");
  const std::string name = cur().text;
  if (name == "for") return body.push_back(parse_for());
  if (name == "if") return body.push_back(parse_if());
  if (name == "set") return body.push_back(parse_set());
  if (name == "macro") return body.push_back(parse_macro());
  if (name == "with") return body.push_back(parse_with());
  if (name == "filter") return body.push_back(parse_filter_block());
  if (name == "generation") return body.push_back(parse_generation());
  if (name == "print") {
    const int line = advance().line;
    for (bool first = true; cur().type != Tok::BlockEnd; first = false) {
      if (!first) expect_op(",");
      Stmt s;
      s.kind = StmtKind::Print;
      s.line = line;
      s.expr = parse_expression();
      body.push_back(std::move(s));
    }
    return;
  }
  if (name == "break" || name == "continue") {
    if (loop_depth_ == 0) fail("'" + name + "' outside a loop");
    Stmt s;
    s.kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
    s.line = advance().line;
    return body.push_back(std::move(s));
  }
  static const char* kUnsupported[] = {"block", "extends", "include", "import", "from", "autoescape", "call"};
  for (const char* u : kUnsupported)
    if (name == u) fail("unsupported: the {% " + name + " %} tag");
  fail("Encountered unknown tag '" + name + "'");
}

Stmt Parser::parse_for() {
  Stmt s;
  s.kind = StmtKind::For;
  s.line = advance().line;
  s.target = parse_assign_target(true, {"in"}, false);
  if (!skip_name("in")) fail("expected 'in' in a for loop");
  s.expr = parse_tuple(false, false, {"recursive"}, false);
  if (skip_name("if")) s.test = parse_expression();
  if (is_name("recursive")) fail("unsupported: recursive for loops");
  ++loop_depth_;
  s.bodies.push_back(parse_statements({"endfor", "else"}, false));
  --loop_depth_;
  if (advance().text == "endfor") s.bodies.emplace_back();
  else s.bodies.push_back(parse_statements({"endfor"}, true));
  return s;
}

Stmt Parser::parse_if() {
  Stmt s;
  s.kind = StmtKind::If;
  s.line = advance().line;
  while (true) {
    s.conditions.push_back(parse_tuple(false, false, {}, false));
    s.bodies.push_back(parse_statements({"elif", "else", "endif"}, false));
    const std::string tag = advance().text;
    if (tag == "elif") continue;
    s.bodies.push_back(tag == "else" ? parse_statements({"endif"}, true) : Body{});
    break;
  }
  return s;
}

Stmt Parser::parse_set() {
  Stmt s;
  s.line = advance().line;
  s.target = parse_assign_target(true, {}, true);
  if (skip_op("=")) {
    s.kind = StmtKind::Set;
    s.expr = parse_tuple(false, true, {}, false);
    return s;
  }
  s.kind = StmtKind::SetBlock;
  if (is_op("|")) s.expr = parse_filter(nullptr, false);
  s.bodies.push_back(parse_statements({"endset"}, true));
  return s;
}

/// Whether any expression under `body` reads the variable `name`.
bool reads(const Expr* e, const std::string& name) {
  if (!e) return false;
  if (e->kind == ExprKind::Name && e->name == name) return true;
  if (reads(e->node.get(), name)) return true;
  for (const auto& a : e->args)
    if (reads(a.get(), name)) return true;
  for (const auto& kw : e->kwargs)
    if (reads(kw.value.get(), name)) return true;
  return false;
}

bool reads(const Body& body, const std::string& name) {
  for (const auto& s : body) {
    if (reads(s.expr.get(), name) || reads(s.test.get(), name)) return true;
    for (const auto* list : {&s.conditions, &s.defaults})
      for (const auto& e : *list)
        if (reads(e.get(), name)) return true;
    for (const auto& b : s.bodies)
      if (reads(b, name)) return true;
  }
  return false;
}

Stmt Parser::parse_macro() {
  Stmt s;
  s.kind = StmtKind::Macro;
  s.line = advance().line;
  s.text = expect_name();
  expect_op("(");
  while (!is_op(")")) {
    if (!s.params.empty()) expect_op(",");
    s.params.push_back(expect_name());
    if (skip_op("=")) s.defaults.push_back(parse_expression());
    else if (!s.defaults.empty()) fail("non-default argument follows default argument");
  }
  expect_op(")");
  const int saved = loop_depth_;
  loop_depth_ = 0;
  s.bodies.push_back(parse_statements({"endmacro"}, true));
  loop_depth_ = saved;
  s.varargs = reads(s.bodies[0], "varargs");
  s.kwargs = reads(s.bodies[0], "kwargs");
  if (reads(s.bodies[0], "caller")) throw RunError("unsupported: caller() in a macro ({% call %} blocks)", s.line);
  return s;
}

Stmt Parser::parse_with() {
  Stmt s;
  s.kind = StmtKind::With;
  s.line = advance().line;
  while (cur().type != Tok::BlockEnd) {
    if (!s.targets.empty()) expect_op(",");
    s.targets.push_back(parse_assign_target(true, {}, false));
    expect_op("=");
    s.defaults.push_back(parse_expression());
  }
  s.bodies.push_back(parse_statements({"endwith"}, true));
  return s;
}

Stmt Parser::parse_filter_block() {
  Stmt s;
  s.kind = StmtKind::FilterBlock;
  s.line = advance().line;
  s.expr = parse_filter(nullptr, true);
  s.bodies.push_back(parse_statements({"endfilter"}, true));
  return s;
}

Stmt Parser::parse_generation() {
  Stmt s;
  s.kind = StmtKind::Generation;
  s.line = advance().line;
  const int saved = loop_depth_;
  loop_depth_ = 0;  // the body runs as a caller macro: a loop outside it cannot be broken from inside
  s.bodies.push_back(parse_statements({"endgeneration"}, true));
  loop_depth_ = saved;
  return s;
}

bool can_assign(const Expr& e) {
  if (e.kind == ExprKind::Name || e.kind == ExprKind::NsRef) return true;
  if (e.kind != ExprKind::Tuple) return false;
  return std::all_of(e.args.begin(), e.args.end(), [](const ExprPtr& a) { return can_assign(*a); });
}

ExprPtr Parser::parse_assign_target(bool with_tuple, Names extra_end, bool with_namespace) {
  const int line = cur().line;
  ExprPtr target =
      with_tuple ? parse_tuple(true, true, extra_end, false, with_namespace) : parse_primary(with_namespace);
  if (!can_assign(*target)) throw RunError("can't assign to this expression", line);
  return target;
}

// ------------------------------------------------------------------ expressions

ExprPtr Parser::parse_condexpr() {
  const Nest nest(*this);
  int line = cur().line;
  ExprPtr expr1 = parse_or();
  while (skip_name("if")) {
    auto cond = make(ExprKind::CondExpr, line);
    ExprPtr test = parse_or();
    ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
    cond->args.push_back(std::move(test));
    cond->args.push_back(std::move(expr1));
    cond->args.push_back(std::move(otherwise));
    expr1 = std::move(cond);
    line = cur().line;
  }
  return expr1;
}

ExprPtr Parser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    auto e = make(ExprKind::Or, advance().line);
    e->args.push_back(std::move(left));
    e->args.push_back(parse_and());
    left = std::move(e);
  }
  return left;
}

ExprPtr Parser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    auto e = make(ExprKind::And, advance().line);
    e->args.push_back(std::move(left));
    e->args.push_back(parse_not());
    left = std::move(e);
  }
  return left;
}

ExprPtr Parser::parse_not() {
  const Nest nest(*this);
  if (is_name("not")) {
    auto e = make(ExprKind::Not, advance().line);
    e->node = parse_not();
    return e;
  }
  return parse_compare();
}

ExprPtr Parser::parse_compare() {
  const int line = cur().line;
  ExprPtr expr = parse_math1();
  std::unique_ptr<Expr> cmp;
  while (true) {
    std::string op;
    if (cur().type == Tok::Op && (is_op("==") || is_op("!=") || is_op("<") || is_op("<=") || is_op(">") || is_op(">=")))
      op = advance().text;
    else if (skip_name("in")) op = "in";
    else if (is_name("not") && look().type == Tok::Name && look().text == "in") advance(), advance(), op = "notin";
    else break;
    if (!cmp) {
      cmp = make(ExprKind::Compare, line);
      cmp->args.push_back(std::move(expr));
    }
    cmp->ops.push_back(op);
    cmp->args.push_back(parse_math1());
  }
  return cmp ? std::move(cmp) : std::move(expr);
}

ExprPtr Parser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    auto e = make(ExprKind::Binary, cur().line);
    e->name = advance().text;
    e->args.push_back(std::move(left));
    e->args.push_back(parse_concat());
    left = std::move(e);
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  const int line = cur().line;
  ExprPtr first = parse_math2();
  if (!is_op("~")) return first;
  auto e = make(ExprKind::Concat, line);
  e->args.push_back(std::move(first));
  while (skip_op("~")) e->args.push_back(parse_math2());
  return e;
}

ExprPtr Parser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    auto e = make(ExprKind::Binary, cur().line);
    e->name = advance().text;
    e->args.push_back(std::move(left));
    e->args.push_back(parse_pow());
    left = std::move(e);
  }
  return left;
}

/// The value of an arithmetic expression of constants (what jinja2's optimizer folds), or nullopt.
std::optional<Value> fold(const Expr& e) {
  try {
    switch (e.kind) {
      case ExprKind::Const: return e.value;
      case ExprKind::Neg:
      case ExprKind::Pos: {
        const auto v = fold(*e.node);
        if (!v) return std::nullopt;
        return unary_op(e.kind == ExprKind::Neg ? "-" : "+", *v);
      }
      case ExprKind::Binary: {
        const auto a = fold(*e.args[0]), b = fold(*e.args[1]);
        if (!a || !b) return std::nullopt;
        return binary_op(e.name, *a, *b);
      }
      default: return std::nullopt;
    }
  } catch (const RunError&) {
    return std::nullopt;
  }
}

ExprPtr Parser::parse_pow() {
  ExprPtr left = parse_unary();
  while (is_op("**")) {
    auto e = make(ExprKind::Binary, advance().line);
    e->name = "**";
    // jinja2 folds a constant base and, when the exponent is not constant too, writes it into
    // Python as a literal: "-3 ** y" then parses as -(3 ** y).
    const auto base = fold(*left);
    e->args.push_back(std::move(left));
    e->args.push_back(parse_unary());
    if (base && base->is_number() && py_lt(*base, Value::integer(0)) && !fold(*e->args[1]))
      e->attr = "negative constant base";
    left = std::move(e);
  }
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  const Nest nest(*this);
  ExprPtr node;
  if (is_op("-") || is_op("+")) {
    node = make(is_op("-") ? ExprKind::Neg : ExprKind::Pos, cur().line);
    advance();
    node->node = parse_unary(false);
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  if (with_filter) node = parse_filter_expr(std::move(node));
  return node;
}

ExprPtr Parser::parse_primary(bool with_namespace) {
  const Nest nest(*this);
  const Token& t = cur();
  ExprPtr node;
  if (t.type == Tok::Name) {
    advance();
    if (t.text == "true" || t.text == "false" || t.text == "True" || t.text == "False") {
      node = make(ExprKind::Const, t.line);
      node->value = Value::boolean(t.text == "true" || t.text == "True");
    } else if (t.text == "none" || t.text == "None") {
      node = make(ExprKind::Const, t.line);
      node->value = Value::none();
    } else if (with_namespace && is_op(".")) {
      advance();
      node = make(ExprKind::NsRef, t.line);
      node->name = t.text;
      node->attr = expect_name();
    } else {
      node = make(ExprKind::Name, t.line);
      node->name = t.text;
    }
  } else if (t.type == Tok::String) {
    node = make(ExprKind::Const, t.line);
    std::string s;
    while (cur().type == Tok::String) s += advance().text;
    node->value = Value::str(std::move(s));
  } else if (t.type == Tok::Integer || t.type == Tok::Float) {
    node = make(ExprKind::Const, t.line);
    node->value = t.type == Tok::Integer ? Value::integer(t.ival) : Value::number(t.fval);
    advance();
  } else if (is_op("(")) {
    advance();
    node = parse_tuple(false, true, {}, true);
    expect_op(")");
  } else if (is_op("[")) {
    node = parse_list();
  } else if (is_op("{")) {
    node = parse_dict();
  } else {
    fail("unexpected '" + describe(t) + "'");
  }
  return node;
}

bool Parser::is_tuple_end(Names extra_end) const {
  if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
  return extra_end.size() && at_any(extra_end);
}

ExprPtr Parser::parse_tuple(bool simplified, bool with_condexpr, Names extra_end, bool explicit_parentheses,
                            bool with_namespace) {
  const int line = cur().line;
  std::vector<ExprPtr> args;
  bool is_tuple = false;
  while (true) {
    if (!args.empty()) expect_op(",");
    if (is_tuple_end(extra_end)) break;
    args.push_back(simplified ? parse_primary(with_namespace) : parse_expression(with_condexpr));
    if (is_op(",")) is_tuple = true;
    else break;
  }
  if (!is_tuple) {
    if (!args.empty()) return std::move(args[0]);
    if (!explicit_parentheses) fail("Expected an expression, got '" + describe(cur()) + "'");
  }
  auto t = make(ExprKind::Tuple, line);
  t->args = std::move(args);
  return t;
}

ExprPtr Parser::parse_list() {
  auto e = make(ExprKind::List, advance().line);
  while (!is_op("]")) {
    if (!e->args.empty()) expect_op(",");
    if (is_op("]")) break;
    e->args.push_back(parse_expression());
  }
  expect_op("]");
  return e;
}

ExprPtr Parser::parse_dict() {
  auto e = make(ExprKind::Dict, advance().line);
  while (!is_op("}")) {
    if (!e->args.empty()) expect_op(",");
    if (is_op("}")) break;
    e->args.push_back(parse_expression());
    expect_op(":");
    e->args.push_back(parse_expression());
  }
  expect_op("}");
  return e;
}

ExprPtr Parser::parse_postfix(ExprPtr node) {
  while (true) {
    if (is_op(".") || is_op("[")) {
      node = parse_subscript(std::move(node));
    } else if (is_op("(")) {
      auto call = make(ExprKind::Call, cur().line);
      call->node = std::move(node);
      parse_call_args(*call);
      node = std::move(call);
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      node = parse_filter(std::move(node), false);
    } else if (is_name("is")) {
      node = parse_test(std::move(node));
    } else if (is_op("(")) {
      auto call = make(ExprKind::Call, cur().line);
      call->node = std::move(node);
      parse_call_args(*call);
      node = std::move(call);
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_subscript(ExprPtr node) {
  const Token& t = advance();
  if (t.text == ".") {
    const Token& a = advance();
    if (a.type == Tok::Name) {
      auto e = make(ExprKind::Getattr, t.line);
      e->node = std::move(node);
      e->name = a.text;
      return e;
    }
    if (a.type != Tok::Integer) throw RunError("expected name or number", a.line);
    auto e = make(ExprKind::Getitem, t.line);
    e->node = std::move(node);
    auto key = make(ExprKind::Const, a.line);
    key->value = Value::integer(a.ival);
    e->args.push_back(std::move(key));
    return e;
  }
  std::vector<ExprPtr> args;
  while (!is_op("]")) {
    if (!args.empty()) expect_op(",");
    args.push_back(parse_subscribed());
  }
  expect_op("]");
  auto e = make(ExprKind::Getitem, t.line);
  e->node = std::move(node);
  if (args.size() == 1) {
    e->args.push_back(std::move(args[0]));
  } else {
    auto tuple = make(ExprKind::Tuple, t.line);
    tuple->args = std::move(args);
    e->args.push_back(std::move(tuple));
  }
  return e;
}

ExprPtr Parser::parse_subscribed() {
  const int line = cur().line;
  std::vector<ExprPtr> parts;
  if (skip_op(":")) {
    parts.push_back(nullptr);
  } else {
    ExprPtr node = parse_expression();
    if (!skip_op(":")) return node;
    parts.push_back(std::move(node));
  }
  if (is_op(":") || is_op("]") || is_op(",")) parts.push_back(nullptr);
  else parts.push_back(parse_expression());
  if (skip_op(":")) parts.push_back(is_op("]") || is_op(",") ? nullptr : parse_expression());
  else parts.push_back(nullptr);
  auto e = make(ExprKind::Slice, line);
  e->args = std::move(parts);
  return e;
}

void Parser::parse_call_args(Expr& call) {
  expect_op("(");
  bool require_comma = false;
  while (!is_op(")")) {
    if (require_comma) {
      expect_op(",");
      if (is_op(")")) break;
    }
    if (is_op("*") || is_op("**")) fail("unsupported: *args / **kwargs in a call");
    if (cur().type == Tok::Name && look().type == Tok::Op && look().text == "=") {
      Keyword kw;
      kw.name = advance().text;
      advance();
      kw.value = parse_expression();
      call.kwargs.push_back(std::move(kw));
    } else {
      if (!call.kwargs.empty()) fail("invalid syntax for function call expression");
      call.args.push_back(parse_expression());
    }
    require_comma = true;
  }
  expect_op(")");
}

ExprPtr Parser::parse_filter(ExprPtr node, bool start_inline) {
  while (is_op("|") || start_inline) {
    if (!start_inline) advance();
    start_inline = false;
    const int line = cur().line;
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    if (!known_filter(name) || (name == "regex_replace" && !plain_))
      throw RunError("No filter named '" + name + "'", line);
    auto e = make(ExprKind::Filter, line);
    e->name = name;
    e->node = std::move(node);
    if (is_op("(")) parse_call_args(*e);
    node = std::move(e);
  }
  return node;
}

ExprPtr Parser::parse_test(ExprPtr node) {
  const int line = advance().line;
  const bool negated = skip_name("not");
  std::string name = expect_name();
  while (skip_op(".")) name += "." + expect_name();
  if (!known_test(name)) throw RunError("No test named '" + name + "'", line);
  auto e = make(ExprKind::Test, line);
  e->name = name;
  e->node = std::move(node);
  const bool arg_follows = cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Integer ||
                           cur().type == Tok::Float || is_op("[") || is_op("{");
  if (is_op("(")) {
    parse_call_args(*e);
  } else if (arg_follows && !at_any({"else", "or", "and"})) {
    if (is_name("is")) fail("You cannot chain multiple tests with is");
    e->args.push_back(parse_postfix(parse_primary()));
  }
  if (!negated) return e;
  auto n = make(ExprKind::Not, line);
  n->node = std::move(e);
  return n;
}

}  // namespace

std::shared_ptr<Program> parse(const std::string& source, bool plain) {
  auto program = std::make_shared<Program>();
  program->source = source;
  program->strict_undefined = plain;
  const LexOptions options = plain ? LexOptions{false, false, true} : LexOptions{};
  program->body = Parser(lex(source, options), plain).parse_template();
  return program;
}

bool known_filter(const std::string& name) {
  static const char* kFilters[] = {"abs",       "attr",       "batch",       "capitalize", "center",  "count",
                                   "d",         "default",    "dictsort",    "e",          "escape",  "filesizeformat",
                                   "first",     "float",      "forceescape", "format",     "groupby", "indent",
                                   "int",       "join",       "last",        "length",     "list",    "lower",
                                   "items",     "map",        "min",         "max",        "pprint",  "random",
                                   "reject",    "rejectattr", "replace",     "regex_replace", "reverse", "round",   "safe",
                                   "select",    "selectattr", "slice",       "sort",       "string",  "striptags",
                                   "sum",       "title",      "trim",        "truncate",   "unique",  "upper",
                                   "urlencode", "urlize",     "wordcount",   "wordwrap",   "xmlattr", "tojson"};
  return std::any_of(std::begin(kFilters), std::end(kFilters), [&](const char* f) { return name == f; });
}

bool known_test(const std::string& name) {
  static const char* kTests[] = {
      "odd",     "even",   "divisibleby", "defined",  "undefined", "filter", "test",    "none",
      "boolean", "false",  "true",        "integer",  "float",     "lower",  "upper",   "string",
      "mapping", "number", "sequence",    "iterable", "callable",  "sameas", "escaped", "in",
      "==",      "eq",     "equalto",     "!=",       "ne",        ">",      "gt",      "greaterthan",
      "ge",      ">=",     "<",           "lt",       "lessthan",  "<=",     "le"};
  return std::any_of(std::begin(kTests), std::end(kTests), [&](const char* t) { return name == t; });
}

}  // namespace lathe::tokenizer::jinja
