// Chat templates against transformers' apply_chat_template machinery (render_jinja_template,
// jinja2 3.1.6): real-world templates over seeded conversations, every construct on its own,
// {% generation %} spans as transformers' assistant masks, errors naming the template line.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "support.hpp"

using lathe::test::error_of;
using lathe::test::TempDir;
using lathe::tokenizer::ChatRender;
using lathe::tokenizer::ChatTemplate;
using lathe::tokenizer::find_chat_template;
using ojson = nlohmann::ordered_json;

namespace {

ojson reference(const std::string& command, const std::string& count) {
  TempDir dir;
  const auto out = dir.path() / "out.json";
  lathe::test::run_reference("chat_templates.py", {command, out.string(), count});
  std::ifstream in(out);
  return ojson::parse(in);
}

using Spans = std::vector<std::pair<std::size_t, std::size_t>>;

Spans spans_of(const ojson& j) {
  Spans out;
  for (const auto& s : j) out.emplace_back(s[0].get<std::size_t>(), s[1].get<std::size_t>());
  return out;
}

/// The 1-based line of `source` holding `needle`.
int line_of(const std::string& source, const std::string& needle) {
  const auto at = source.find(needle);
  if (at == std::string::npos) return -1;
  return 1 + static_cast<int>(std::count(source.begin(), source.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
}

struct Tally {
  int compared = 0, mismatched = 0, errors = 0, with_spans = 0;
};

/// Renders one reference case and checks it: the same text and spans, or an error where
/// transformers raised one. At most a few mismatches are reported in full.
void check_case(const ChatTemplate& t, const std::string& origin, const ojson& c, Tally& tally) {
  ++tally.compared;
  if (c.contains("error")) {
    ++tally.errors;
    const std::string message = error_of([&] { t.render(c["context"]); });
    INFO("template " << origin << "\nreference error: " << c["error"].get<std::string>());
    CHECK_THAT(message, Catch::Matchers::StartsWith(origin + ":"));
    CHECK(message != "no error");
    return;
  }
  ChatRender r;
  std::string error;
  try {
    r = t.render(c["context"]);
  } catch (const lathe::Error& e) {
    error = e.what();
  }
  const auto want = c["text"].get<std::string>();
  const auto want_spans = spans_of(c["generation"]);
  tally.with_spans += !want_spans.empty();
  if (error.empty() && r.text == want && r.generation == want_spans) return;
  if (++tally.mismatched <= 5) {
    INFO("template " << origin << "\ncontext " << c["context"].dump() << "\nerror " << error);
    CHECK(r.text == want);
    CHECK(r.generation == want_spans);
  }
}

}  // namespace

TEST_CASE("chat template: real templates render as transformers' apply_chat_template",
          "[tokenizer][chat][reference][python]") {
  const ojson ref = reference("conversations", "50");
  std::map<std::string, ChatTemplate> templates;
  for (const auto& [name, source] : ref["templates"].items())
    templates.emplace(name, ChatTemplate(source.get<std::string>(), name));
  Tally tally;
  std::map<std::string, int> per_template;
  for (const auto& c : ref["cases"]) {
    const auto name = c["template"].get<std::string>();
    check_case(templates.at(name), name, c, tally);
    ++per_template[name];
  }
  // 11 templates x 50 conversations x with / without the generation prompt, and the refused ones.
  CHECK(per_template.size() == 11);
  for (const auto& [name, n] : per_template) CHECK(n >= 100);
  CHECK(tally.compared >= 1100);
  CHECK(tally.errors >= 8);
  CHECK(tally.with_spans >= 100);  // the generation spans are compared, not only empty lists
  CHECK(tally.mismatched == 0);
}

TEST_CASE("chat template: raise_exception names the template line, as transformers raises",
          "[tokenizer][chat][reference][python]") {
  const ojson ref = reference("conversations", "1");
  int checked = 0;
  for (const auto& c : ref["cases"]) {
    if (!c.contains("error")) continue;
    const auto name = c["template"].get<std::string>();
    const auto source = ref["templates"][name].get<std::string>();
    const auto python = c["error"].get<std::string>();
    const ChatTemplate t(source, name);
    const auto message = error_of([&] { t.render(c["context"]); });
    INFO(name << ": " << message << "\ntransformers: " << python);
    const int line = line_of(source, python);
    REQUIRE(line > 0);
    CHECK(message == name + ":" + std::to_string(line) + ": raise_exception: " + python);
    ++checked;
  }
  CHECK(checked == 8);
}

TEST_CASE("chat template: every construct renders as jinja2 does", "[tokenizer][chat][reference][python]") {
  const ojson ref = reference("snippets", "600");
  Tally tally;
  for (const auto& c : ref) {
    const auto source = c["template"].get<std::string>();
    std::unique_ptr<ChatTemplate> t;
    try {
      t = std::make_unique<ChatTemplate>(source, "snippet");
    } catch (const lathe::Error& e) {
      ++tally.compared;
      INFO("template: " << source << "\nparse error: " << e.what());
      CHECK(c.contains("error"));  // jinja2 refuses it too
      continue;
    }
    INFO("template: " << source);
    check_case(*t, "snippet", c, tally);
  }
  CHECK(tally.compared >= 650);
  CHECK(tally.mismatched == 0);
}

TEST_CASE("chat template: raw messages render as a tokenizer's apply_chat_template",
          "[tokenizer][chat][reference][python]") {
  // None-valued keys, reasoning under its three names, no tools / documents in the context.
  const ojson ref = reference("apply", "30");
  Tally tally;
  for (const auto& c : ref) {
    const ChatTemplate t(c["template"].get<std::string>(), "apply");
    ojson with_spans = c;
    with_spans["generation"] = ojson::array();
    check_case(t, "apply", with_spans, tally);
  }
  CHECK(tally.compared == 120);
  CHECK(tally.mismatched == 0);
}

TEST_CASE("chat template: constructs it does not run are errors naming the line", "[tokenizer][chat]") {
  struct Case {
    std::string source, expect;
    int line;
  };
  const std::vector<Case> parse_errors = {
      {"a\n{% include 'x.jinja' %}", "unsupported: the {% include %} tag", 2},
      {"{% import 'x' as y %}", "unsupported: the {% import %} tag", 1},
      {"\n\n{% extends 'base' %}", "unsupported: the {% extends %} tag", 3},
      {"{% block body %}{% endblock %}", "unsupported: the {% block %} tag", 1},
      {"{% call m() %}x{% endcall %}", "unsupported: the {% call %} tag", 1},
      {"{% macro m() %}\n{{ caller() }}{% endmacro %}", "unsupported: caller()", 1},
      {"{% for x in y recursive %}{% endfor %}", "unsupported: recursive for loops", 1},
      {"\n{{ f(*args) }}", "unsupported: *args / **kwargs", 2},
      {"{{ f(**kw) }}", "unsupported: *args / **kwargs", 1},
      {"{% do x.append(1) %}", "Encountered unknown tag 'do'", 1},
      {"\n\n\n{{ x | nosuchfilter }}", "No filter named 'nosuchfilter'", 4},
      {"{% if x is nosuchtest %}{% endif %}", "No test named 'nosuchtest'", 1},
      {"{% for x in y %}\nunclosed", "unexpected end of template", 2},
      {"{{ 'a' ! 'b' }}", "unexpected char '!'", 1},
      {"{# never closed", "Missing end of comment tag", 1},
      {"{% break %}", "'break' outside a loop", 1},
      {"{{ 'é'|x\\u }}", "unexpected char", 1},
      {"{{ 99999999999999999999 }}", "unsupported: an integer literal past 64 bits", 1},
  };
  for (const auto& c : parse_errors) {
    INFO(c.source);
    const auto message = error_of([&] { ChatTemplate t(c.source); });
    CHECK_THAT(message, Catch::Matchers::StartsWith("chat_template:" + std::to_string(c.line) + ": "));
    CHECK_THAT(message, Catch::Matchers::Contains(c.expect));
  }
  const nlohmann::json ctx = {{"s", "text"}, {"l", {1, 2}}, {"d", {{"k", 1}}}, {"n", 3}};
  const std::vector<Case> runtime_errors = {
      {"\n{{ s|wordwrap(3) }}", "unsupported: the filter 'wordwrap'", 2},
      {"{{ l|groupby('x') }}", "unsupported: the filter 'groupby'", 1},
      {"{{ s|urlize }}", "unsupported: the filter 'urlize'", 1},
      {"{{ s.zfill(5) }}", "unsupported: the str method zfill()", 1},
      {"{{ s.casefold() }}", "unsupported: the str method casefold()", 1},
      {"\n\n{{ l|select('odd') }}", "unsupported: printing a generator", 3},
      {"{{ s.upper }}", "unsupported: printing the function 'str.upper'", 1},
      {"{{ '%s!' % s }}", "unsupported: printf-style string formatting", 1},
      {"{{ n.real }}", "unsupported: the int attribute 'real'", 1},
      {"{{ s is sameas 'text' }}", "unsupported: `is sameas` on a str", 1},
      {"{{ lipsum() }}", "unsupported: the global lipsum()", 1},
      {"{{ '{:>8}'.format(s) }}", "unsupported: the str.format field", 1},
      {"{{ 2 ** 70 }}", "unsupported: an integer result past 64 bits", 1},
      {"{{ round(1.5, -1) if false else 1.5|round(-1) }}", "unsupported: round() with a negative precision", 1},
      // What ImmutableSandboxedEnvironment and transformers refuse.
      {"{% set x = l.append(3) %}", "SecurityError: access to attribute 'append' of 'list' object is unsafe.", 1},
      {"{{ d.update({'a': 1}) }}", "SecurityError: access to attribute 'update' of 'dict' object is unsafe.", 1},
      {"{{ d.__class__() }}", "SecurityError: access to attribute '__class__'", 1},
      {"{% set ns = namespace() %}\n{% set ns._x = 1 %}", "SecurityError: Chat templates cannot store underscore", 2},
      {"{% set d.k = 2 %}", "cannot assign attribute on non-namespace object", 1},
      {"{{ range(200000)|length }}", "OverflowError: Range too big", 1},
      // Python's own errors.
      {"{{ s + 1 }}", "TypeError: can only concatenate str (not \"int\") to str", 1},
      {"{{ missing.attr }}", "UndefinedError: 'missing' is undefined", 1},
      {"{{ d.k.j.i }}", "UndefinedError: 'int object' has no attribute 'j'", 1},
      {"{{ n / 0 }}", "ZeroDivisionError: division by zero", 1},
      {"{% for x in n %}{% endfor %}", "TypeError: 'int' object is not iterable", 1},
      {"{{ x|tojson }}", "TypeError: Object of type Undefined is not JSON serializable", 1},
  };
  for (const auto& c : runtime_errors) {
    INFO(c.source);
    const ChatTemplate t(c.source);
    const auto message = error_of([&] { t.render(ctx); });
    CHECK_THAT(message, Catch::Matchers::StartsWith("chat_template:" + std::to_string(c.line) + ": "));
    CHECK_THAT(message, Catch::Matchers::Contains(c.expect));
  }
}

TEST_CASE("chat template: raise_exception and a bad context name the template", "[tokenizer][chat]") {
  const ChatTemplate t(
      "{% for m in messages %}\n{% if m.role == 'bot' %}\n{{ raise_exception('no ' ~ m.role) }}\n"
      "{% endif %}{% endfor %}",
      "my_model/chat_template.jinja");
  const nlohmann::json ok = {{"messages", {{{"role", "user"}}}}};
  CHECK(t.render(ok).text.empty());
  const nlohmann::json bad = {{"messages", {{{"role", "bot"}}}}};
  CHECK(error_of([&] { t.render(bad); }) == "my_model/chat_template.jinja:3: raise_exception: no bot");
  CHECK(error_of([&] { t.render(nlohmann::json::array()); }) ==
        "my_model/chat_template.jinja: the context of a chat template must be a JSON object");
}

TEST_CASE("chat template: strftime_now is datetime.now().strftime", "[tokenizer][chat][reference][python]") {
  TempDir dir;
  const std::string source = "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %A %B %j %y %% %z%Z') }}";
  const auto tpl = dir.write("t.jinja", source);
  const auto ctx = dir.write("ctx.json", "{}");
  const ChatTemplate t(source);
  std::string ours, theirs;
  for (int attempt = 0; attempt < 2 && (ours.empty() || ours != theirs); ++attempt) {  // once more across midnight
    ours = t.render(nlohmann::json::object()).text;
    lathe::test::run_reference("chat_templates.py",
                               {"render", tpl.string(), ctx.string(), (dir.path() / "o.json").string()});
    std::ifstream in(dir.path() / "o.json");
    theirs = ojson::parse(in)["text"].get<std::string>();
  }
  CHECK(ours == theirs);
  CHECK(ours.size() > 20);
}

TEST_CASE("chat template: dict order follows the context (ordered_json) or sorted keys (json)", "[tokenizer][chat]") {
  const ChatTemplate t("{{ messages[0] }}|{% for k in messages[0] %}{{ k }} {% endfor %}|{{ messages[0]|tojson }}");
  const auto ordered = ojson::parse(R"({"messages": [{"role": "user", "content": "hi"}]})");
  CHECK(t.render(ordered).text ==
        R"({'role': 'user', 'content': 'hi'}|role content |{"role": "user", "content": "hi"})");
  const auto sorted = nlohmann::json::parse(R"({"messages": [{"role": "user", "content": "hi"}]})");
  CHECK(t.render(sorted).text ==
        R"({'content': 'hi', 'role': 'user'}|content role |{"content": "hi", "role": "user"})");
  CHECK(t.source().starts_with("{{ messages[0] }}"));
}

TEST_CASE("chat template: generation spans are byte ranges of the text", "[tokenizer][chat]") {
  const ChatTemplate t(
      "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}</s>"
      "{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}");
  const nlohmann::json ctx = {{"messages",
                               {{{"role", "user"}, {"content", "héllo"}},
                                {{"role", "assistant"}, {"content", "wörld 😀"}},
                                {{"role", "user"}, {"content", "again"}},
                                {{"role", "assistant"}, {"content", ""}}}}};
  const auto r = t.render(ctx);
  REQUIRE(r.generation.size() == 2);
  CHECK(r.text.substr(r.generation[0].first, r.generation[0].second - r.generation[0].first) == "wörld 😀</s>");
  CHECK(r.text.substr(r.generation[1].first, r.generation[1].second - r.generation[1].first) == "</s>");
  CHECK(r.text == "<user>héllo<assistant>wörld 😀</s><user>again<assistant></s>");  // trim_blocks took the newlines
}

TEST_CASE("find_chat_template looks where transformers looks", "[tokenizer][chat]") {
  TempDir dir;
  const auto tok = dir.write("m/tokenizer.json", "{}");
  CHECK(!find_chat_template(tok).has_value());
  dir.write("m/tokenizer_config.json", R"({"bos_token": "<s>"})");
  CHECK(!find_chat_template(dir.path() / "m").has_value());
  dir.write("m/tokenizer_config.json", R"({"chat_template": "{{ messages }}"})");
  CHECK(find_chat_template(tok) == std::optional<std::string>("{{ messages }}"));
  dir.write("m/tokenizer_config.json",
            R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  CHECK(find_chat_template(dir.path() / "m") == std::optional<std::string>("D"));
  dir.write("m/tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}]})");
  CHECK_THAT(error_of([&] { find_chat_template(tok); }),
             Catch::Matchers::Contains("lists templates (tool_use) but none named \"default\""));
  dir.write("m/chat_template.jinja", "{{ bos_token }}jinja\n");
  CHECK(find_chat_template(tok) == std::optional<std::string>("{{ bos_token }}jinja\n"));
}
