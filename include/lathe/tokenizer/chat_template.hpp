// Hugging Face chat templates: a Jinja interpreter that renders a conversation exactly as
// transformers' apply_chat_template(..., tokenize=False) does (jinja2's ImmutableSandboxedEnvironment
// with trim_blocks, lstrip_blocks, loop controls, transformers' tojson / raise_exception /
// strftime_now / namespace / dict and its {% generation %} block), and the lookup of the template
// that belongs with a tokenizer.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lathe::tokenizer {

namespace jinja {
struct Program;
}

/// A rendered conversation: the text, and the byte ranges [begin, end) of `text` that
/// {% generation %} ... {% endgeneration %} blocks produced (transformers' assistant masks), in order.
struct ChatRender {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> generation;
};

/// A parsed chat template. Values follow Python's rules as jinja2 applies them (str() of lists,
/// dicts, floats and booleans, integer and float arithmetic, truthiness, undefined variables);
/// everything the interpreter does not model is an error naming the template line, never a
/// different text. Rendering is const and may run on several threads at once.
class ChatTemplate {
 public:
  /// Parses `source`. A construct the interpreter does not support, or a syntax error, throws
  /// lathe::Error naming `origin`, the template line and the construct.
  explicit ChatTemplate(std::string source, std::string origin = "chat_template");
  /// Renders with `context` (a JSON object: messages, add_generation_prompt, tools, documents,
  /// bos_token, eos_token, ... as apply_chat_template passes them). Runtime errors (raise_exception,
  /// an unsupported filter or method on a value, a type error) throw lathe::Error with the line.
  /// As apply_chat_template, it drops the keys of a message whose value is null, copies a message's
  /// reasoning_content / thinking / reasoning to both "thinking" and "reasoning_content", and
  /// passes tools and documents as None and add_generation_prompt as False when the context has
  /// none. continue_final_message is not done here.
  /// nlohmann::json keeps object keys sorted, so a template that prints a dict or iterates over
  /// its keys sees them in that order; pass an ordered_json to keep the order Python would see.
  ChatRender render(const nlohmann::json& context) const;
  ChatRender render(const nlohmann::ordered_json& context) const;
  const std::string& source() const;

 private:
  std::string origin_;
  std::shared_ptr<const jinja::Program> program_;
};

/// A Jinja template rendered as jinja2's own Environment renders it with StrictUndefined and
/// keep_trailing_newline=True: how lm-evaluation-harness renders a task's doc_to_text,
/// doc_to_target and doc_to_choice over a document. Values follow Python's rules as in
/// ChatTemplate; printing an undefined variable is an error.
class TextTemplate {
 public:
  /// Parses `source`; errors as ChatTemplate's, naming `origin`.
  explicit TextTemplate(std::string source, std::string origin = "template");
  /// Renders with the keys of `variables` (a JSON object) as the template's variables.
  std::string render(const nlohmann::ordered_json& variables) const;
  const std::string& source() const;

 private:
  std::string origin_;
  std::shared_ptr<const jinja::Program> program_;
};

/// The chat template that belongs with a tokenizer: `path` is a tokenizer.json or its directory;
/// looked up as transformers does: chat_template.jinja beside it, else tokenizer_config.json's
/// "chat_template" (a string, or a list of {name, template} where "default" is taken). nullopt when none.
std::optional<std::string> find_chat_template(const std::filesystem::path& path);

}  // namespace lathe::tokenizer
