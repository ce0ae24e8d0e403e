#include "lathe/tokenizer/chat_template.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "chat_template/ast.hpp"
#include "chat_template/interp.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/json_file.hpp"

namespace lathe::tokenizer {

namespace {

[[noreturn]] void rethrow(const std::string& origin, const jinja::RunError& e) {
  throw Error(fmt::format("{}:{}: {}", origin, e.line, e.what()));
}

using jinja::DictData;
using jinja::Value;

/// A message as apply_chat_template hands it over: keys whose value is None dropped, and reasoning
/// given as reasoning_content, thinking or reasoning copied to "thinking" (first) and "reasoning_content".
Value normalize_message(const DictData& m) {
  DictData d;
  for (const auto& [k, v] : m.entries)
    if (v.kind != jinja::Kind::None) d.entries.emplace_back(k, v);
  const Value* reasoning = nullptr;
  for (const char* key : {"reasoning_content", "thinking", "reasoning"})
    if ((reasoning = d.find(key))) break;
  if (!reasoning) return Value::dictionary(std::move(d));
  const Value r = *reasoning;
  DictData aliased;
  aliased.entries.emplace_back(Value::str("thinking"), r);
  for (const auto& [k, v] : d.entries) aliased.set(k, v);
  aliased.set(Value::str("reasoning_content"), r);
  return Value::dictionary(std::move(aliased));
}

/// The variables apply_chat_template gives the template: the context, its messages normalized,
/// and tools, documents and add_generation_prompt (None, None, False when the context has none).
DictData template_variables(const DictData& context) {
  DictData out = context;
  for (const char* key : {"tools", "documents"})
    if (!out.find(key)) out.entries.emplace_back(Value::str(key), Value::none());
  if (!out.find("add_generation_prompt"))
    out.entries.emplace_back(Value::str("add_generation_prompt"), Value::boolean(false));
  const Value* messages = out.find("messages");
  if (messages && messages->is_list()) {
    jinja::ValueList normalized;
    for (const auto& m : messages->list_items())
      normalized.push_back(m.kind == jinja::Kind::Dict ? normalize_message(*m.dict) : m);
    out.set(Value::str("messages"), Value::list(std::move(normalized)));
  }
  return out;
}

template <typename Json>
ChatRender render_with(const jinja::Program& program, const std::string& origin, const Json& context) {
  if (!context.is_object()) throw Error(origin + ": the context of a chat template must be a JSON object");
  try {
    const DictData variables = template_variables(*jinja::from_json(context).dict);
    jinja::Interp interp(program, variables);
    ChatRender out;
    out.text = interp.run(out.generation);
    return out;
  } catch (const jinja::RunError& e) {
    rethrow(origin, e);
  }
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::string origin) : origin_(std::move(origin)) {
  try {
    program_ = jinja::parse(source);
  } catch (const jinja::RunError& e) {
    rethrow(origin_, e);
  }
}

ChatRender ChatTemplate::render(const nlohmann::json& context) const {
  return render_with(*program_, origin_, context);
}

ChatRender ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render_with(*program_, origin_, context);
}

const std::string& ChatTemplate::source() const { return program_->source; }

TextTemplate::TextTemplate(std::string source, std::string origin) : origin_(std::move(origin)) {
  try {
    program_ = jinja::parse(source, /*plain=*/true);
  } catch (const jinja::RunError& e) {
    rethrow(origin_, e);
  }
}

std::string TextTemplate::render(const nlohmann::ordered_json& variables) const {
  if (!variables.is_object()) throw Error(origin_ + ": the variables of a template must be a JSON object");
  try {
    const jinja::Value context = jinja::from_json(variables);
    jinja::Interp interp(*program_, *context.dict);
    std::vector<std::pair<std::size_t, std::size_t>> unused;
    return interp.run(unused);
  } catch (const jinja::RunError& e) {
    rethrow(origin_, e);
  }
}

const std::string& TextTemplate::source() const { return program_->source; }

std::optional<std::string> find_chat_template(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  // transformers: template files take priority over tokenizer_config.json.
  for (const fs::path& file : {dir / "chat_template.jinja", dir / "additional_chat_templates" / "default.jinja"})
    if (fs::is_regular_file(file)) return read_text(file);
  const fs::path config = dir / "tokenizer_config.json";
  if (!fs::is_regular_file(config)) return std::nullopt;
  const nlohmann::json j = io::read_json(config);
  if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return std::nullopt;
  const auto& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (!t.is_array())
    throw Error(config.string() + ": \"chat_template\" must be a string or a list of {name, template}");
  std::string names;
  for (const auto& entry : t) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
        !entry["template"].is_string())
      throw Error(config.string() + ": each entry of \"chat_template\" needs a string \"name\" and \"template\"");
    if (entry["name"] == "default") return entry["template"].get<std::string>();
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  throw Error(config.string() + ": \"chat_template\" lists templates (" + names + ") but none named \"default\"");
}

}  // namespace lathe::tokenizer
