// jinja2's lexer with the options transformers compiles chat templates with (trim_blocks,
// lstrip_blocks, the trailing newline dropped): template text, tags and the tokens inside them,
// with {%- -%} / {{- -}} / {#- -#} and {%+ whitespace control applied to the text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer::jinja {

enum class Tok : uint8_t { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Op, Eof };

struct Token {
  Tok type = Tok::Eof;
  std::string text;  // Data: the text; Name / Op: the spelling; String: the unescaped value
  int64_t ival = 0;  // Integer
  double fval = 0;   // Float
  int line = 1;
};

/// How the template text around tags is treated. The defaults are transformers' chat template
/// environment; all false is jinja2's own Environment with keep_trailing_newline=True (how
/// lm-evaluation-harness renders a task's templates).
struct LexOptions {
  bool trim_blocks = true;             // a newline right after a block tag is dropped
  bool lstrip_blocks = true;           // spaces and tabs before a block tag on its line are dropped
  bool keep_trailing_newline = false;  // false: one newline at the end of the template is dropped
};

/// The tokens of a template; a syntax error throws RunError with its line.
std::vector<Token> lex(std::string_view source, const LexOptions& options = {});

}  // namespace lathe::tokenizer::jinja
