"""Reference side of the chat-template tests: transformers renders Hugging Face chat templates.

    chat_templates.py conversations OUT.json [COUNT]   real-world templates x seeded conversations
    chat_templates.py snippets OUT.json [COUNT]        small templates over every construct, plus seeded random ones
    chat_templates.py apply OUT.json [COUNT]            raw messages through a tokenizer's apply_chat_template
    chat_templates.py render TEMPLATE CONTEXT.json OUT.json   one template with one context

Every rendering goes through transformers.utils.chat_template_utils.render_jinja_template (what
apply_chat_template(..., tokenize=False) calls) with return_assistant_tokens_mask=True, so the
{% generation %} spans are transformers' own. Spans are written as UTF-8 byte offsets of the text.
An error is written as {"error": message} (the message of the exception transformers raised).
"""
import json
import random
import sys

from transformers.utils.chat_template_utils import render_jinja_template

# ------------------------------------------------------------------ real-world templates

CHATML_QWEN = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3 = r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"""

LLAMA31 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

MISTRAL_V1 = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

MISTRAL_V3 = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

GEMMA = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""

PHI3 = r"""{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}"""

ZEPHYR = r"""{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

# ChatML with assistant masks, in the style of templates that support return_assistant_tokens_mask.
CHATML_GENERATION = r"""{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' }}
    {%- if message['role'] == 'assistant' %}
        {%- generation %}
            {{- message['content'] | trim + '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- else %}
        {{- message['content'] + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

# Retrieval-augmented generation: documents, a macro, loop variables and the generation block.
RAG = r"""{%- macro render_document(doc, index, prefix='Document') -%}
{{ prefix }} {{ index }}{% if doc.title is defined %} — {{ doc.title }}{% endif %}:
{{ doc.text | trim }}
{%- endmacro -%}
{{ bos_token }}
{%- if messages[0].role == 'system' %}
<|system|>{{ messages[0].content }}
{%- set messages = messages[1:] %}
{%- endif %}
{%- if documents %}
<|documents|>
{%- for doc in documents %}
{{ render_document(doc, loop.index) }}
{%- if not loop.last %}

{% endif %}
{%- endfor %}
<|end_documents|>
{%- endif %}
{%- for message in messages %}
<|{{ message.role }}|>
{%- if message.role == 'assistant' %}{% generation %}{{ message.content }}{{ eos_token }}{% endgeneration %}
{%- else %}{{ message.content }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|assistant|>
{%- endif %}"""

# Everything the interpreter supports, in one template.
KITCHEN_SINK = r"""{#- Every supported construct: whitespace control, comments, raw, macros, namespaces, loops. -#}
{%- set ns = namespace(count=0, roles=[], last=none) -%}
{%- macro bullet(text, depth=1, mark='*') -%}
{{ '  ' * (depth - 1) }}{{ mark }} {{ text }}
{%- endmacro -%}
{%- macro header(role) -%}{{ '<<' ~ role|upper ~ '>>' }}{%- endmacro -%}
{%- set counts = {} -%}
{% raw %}{{ literal }}{% endraw %}
{%- for message in messages if message.role != 'tool' %}
{%- set ns.count = ns.count + 1 %}
{%- set ns.roles = ns.roles + [message.role] %}
{%- set content = message.content if message.content is string else message.content|tojson %}
{{ header(message.role) }} #{{ loop.index }}/{{ loop.length }} ({{ loop.revindex0 }} left, {{ loop.cycle('odd', 'even') }})
{%- if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}
{%- if loop.previtem is defined %} after {{ loop.previtem.role }}{% endif %}
{%- if loop.changed(message.role) %} changed{% endif %}
{%- if message.role == 'assistant' %}
{%- generation %}
{{ content|trim|replace('\n', ' / ') }}
{%- endgeneration %}
{%- elif message.role == 'system' %}
  {{ bullet(content|trim, 2, mark='-') }}
{%- else %}
{{ content }}|{{ content|length }}|{{ content|wordcount }}|{{ content.strip()|title }}|{{ content|lower|capitalize }}
{{- '|' ~ content.split()|first|default('∅') ~ '|' ~ (content.split()|last|default('∅')) }}
{{- '|' + content[:3] + '|' + content[::-1][:3] + '|' + content[1:-1]|e }}
{%- endif %}
{%- set ns.last = message %}
{%- else %}
(no messages)
{%- endfor %}
{%- set summary %}{{ ns.count }} message(s): {{ ns.roles|unique|join(', ') }}{% endset %}
{{ summary|indent(4, first=true) }}
{%- with total = ns.roles|length, users = ns.roles|select('equalto', 'user')|list|length %}
totals: {{ total }} {{ users }} {{ total - users }} {{ (users / total)|round(2) if total else 0 }} {{ total // 2 }} {{ total % 3 }} {{ 2 ** total }}
{%- endwith %}
{%- if tools %}
tools: {{ tools|map(attribute='function.name')|join(' ') }}
{%- for tool in tools|sort(attribute='function.name') %}
{{ tool.function.name }}({{ tool.function.parameters.properties|dictsort|map('first')|join(', ') }}) {{ tool|tojson(indent=2, sort_keys=true) }}
{%- for key, value in tool.function.parameters.properties.items() %}
 {{ key }}: {{ value.type|default('any') }}{{ ' — ' ~ value.description if value.description is defined }}
{%- endfor %}
{%- endfor %}
{%- endif %}
{%- filter upper %} filtered {{ ns.count is even }} {% endfilter %}
{{ ns.last.role if ns.last else 'none' }} {{ [1, 2.5, 'x', none, true, (1,), {'k': 'v'}] }} {{ messages|length is divisibleby 2 }}
{{ '%s=%d' | format('n', ns.count) }} {{ '{}-{x}'.format(ns.count, x='y') }} {{ range(ns.count)|list|reverse|list }}
{{- ' ' ~ (messages|map(attribute='role')|unique|list|sort) }} {{ messages|selectattr('role', 'in', ['user'])|list|count }}
{{- ' ' ~ messages|rejectattr('content', 'string')|list|length }} {{ 'x' in ns.roles }} {{ 'user' not in ns.roles }}
{% for i in range(5) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 3 %}{% break %}{% endif %}{{ i }}{% endfor %}
{%- for k, v in {'b': 1, 'a': 2}|dictsort(reverse=true) %} {{ k }}={{ v }}{% endfor %}

{#- Indented tags without "-": lstrip_blocks and trim_blocks decide the layout. #}
{% for m in messages[:3] %}
    {% if m.role == 'user' %}
    user turn {{ loop.index }}
    {% elif m.role == 'assistant' %}
        assistant turn {# inline comment #}
    {% endif %}
{% endfor %}
{%- if add_generation_prompt %}
{{ header('assistant') }}
{%- endif %}
"""

TEMPLATES = {
    "chatml_qwen": dict(template=CHATML_QWEN, system=True, tools=True, tool_calls="qwen"),
    "llama3": dict(template=LLAMA3, system=True),
    "llama3.1": dict(template=LLAMA31, system=True, tools=True, tool_calls="llama"),
    "mistral_v1": dict(template=MISTRAL_V1, system=False),
    "mistral_v3": dict(template=MISTRAL_V3, system=True, tools=True, tool_calls="mistral"),
    "gemma": dict(template=GEMMA, system=False),
    "phi3": dict(template=PHI3, system=True),
    "zephyr": dict(template=ZEPHYR, system=True),
    "chatml_generation": dict(template=CHATML_GENERATION, system=True),
    "rag": dict(template=RAG, system=True, documents=True),
    "kitchen_sink": dict(template=KITCHEN_SINK, system=True, tools=True),
}

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

# ------------------------------------------------------------------ seeded conversations

PIECES = [
    "Hello", "world", "What's the weather in Paris?", "It's \"sunny\" today.", "café", "naïve", "日本語のテキスト",
    "中文", "한국어", "Ελληνικά", "русский", "עברית", "العربية", "😀", "👍🏽", "🇫🇷", "ß", "İstanbul", "ﬁ",
    "{{ not a tag }}", "{% raw %}", "<|im_end|>", "</s>", "[INST]", "back\\slash", "tab\there", "line\nbreak",
    "two\n\nparagraphs", "\u00a0nbsp", "zero\u200bwidth", "x" * 40, "1 + 1 = 2", "50%", "a, b, c", "'single'",
    "trailing space ", " leading space", "\t", "  ", "\r\n", "Σίσυφος", "ΣΑΣ", "done.",
]


def text(rng, allow_empty=True):
    if allow_empty and rng.random() < 0.03:
        return ""
    parts = []
    for _ in range(rng.randint(1, 7)):
        parts.append(rng.choice(PIECES))
        parts.append(rng.choice([" ", " ", "", "\n", "  "]))
    s = "".join(parts)
    r = rng.random()
    if r < 0.15:
        s = "  " + s
    elif r < 0.3:
        s = s + " \n"
    return s


def tool_schema(rng, name):
    # Keys in the order people write them (not sorted), nested, with unicode.
    props = {}
    for p in rng.sample(["location", "unit", "query", "limit", "zone", "après"], rng.randint(1, 3)):
        prop = {"type": rng.choice(["string", "integer", "number", "boolean"]), "description": text(rng, False).strip()}
        if rng.random() < 0.3:
            prop["enum"] = ["celsius", "fahrenheit"]
        props[p] = prop
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": text(rng, False).strip(),
            "parameters": {"type": "object", "properties": props, "required": list(props)[:1]},
        },
    }


def tool_call(rng, style, tools):
    name = rng.choice(tools)["function"]["name"] if tools else "lookup"
    args = {rng.choice(["location", "query", "q"]): text(rng, False).strip(), "n": rng.randint(0, 99)}
    if rng.random() < 0.3:
        args["ratio"] = rng.choice([0.5, 1.0, 2.25, 1e-7, 12345.678])
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    if style == "mistral":
        call["id"] = "".join(rng.choice("abcdefghij0123456789") for _ in range(9))
    if style == "llama":
        call["function"]["arguments"] = {k: str(v) for k, v in args.items()}
    return call


def conversation(rng, spec):
    messages = []
    if spec.get("system") and rng.random() < 0.5:
        messages.append({"role": "system", "content": text(rng)})
    tools = None
    if spec.get("tools") and rng.random() < 0.5:
        tools = [tool_schema(rng, n) for n in rng.sample(["get_weather", "search", "calc"], rng.randint(1, 2))]
    turns = rng.randint(1, 6)
    for t in range(turns):
        messages.append({"role": "user", "content": text(rng)})
        if t == turns - 1 and rng.random() < 0.5:
            break  # end on a user turn
        style = spec.get("tool_calls")
        if style and tools and rng.random() < 0.35:
            call = tool_call(rng, style, tools)
            messages.append({"role": "assistant", "tool_calls": [call]} if style != "qwen" or rng.random() < 0.5
                            else {"role": "assistant", "content": text(rng, False), "tool_calls": [call]})
            result = {"role": "tool", "content": text(rng, False)}
            if style == "mistral":
                result["tool_call_id"] = call["id"]
            messages.append(result)
            if style == "llama":
                messages.append({"role": "assistant", "content": text(rng)})
            elif style == "mistral":
                messages.append({"role": "assistant", "content": text(rng, False)})
        else:
            messages.append({"role": "assistant", "content": text(rng)})
    documents = None
    if spec.get("documents") and rng.random() < 0.7:
        documents = [{"title": text(rng, False).strip(), "text": text(rng, False)} for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            del documents[0]["title"]
    return messages, tools, documents


def render(template, messages, tools, documents, add_generation_prompt, kwargs):
    try:
        rendered, spans = render_jinja_template(
            conversations=[messages], tools=tools, documents=documents, chat_template=template,
            return_assistant_tokens_mask=True, add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception as e:  # noqa: BLE001 - the message is what the test compares
        return {"error": str(e)}
    text_ = rendered[0]
    return {"text": text_, "generation": [[len(text_[:b].encode()), len(text_[:e].encode())] for b, e in spans[0]]}


def context(messages, tools, documents, add_generation_prompt, kwargs):
    # What render_jinja_template passes to the template.
    return {"messages": messages, "tools": tools, "documents": documents,
            "add_generation_prompt": add_generation_prompt, **kwargs}


def bad_conversations():
    """Conversations a template refuses with raise_exception."""
    u = lambda c: {"role": "user", "content": c}  # noqa: E731
    a = lambda c: {"role": "assistant", "content": c}  # noqa: E731
    return [
        ("mistral_v1", [u("a"), u("b")], None, {}),
        ("mistral_v1", [{"role": "system", "content": "s"}, u("a")], None, {}),
        ("mistral_v3", [u("a"), a("b"), a("c")], None, {}),
        ("mistral_v3", [u("a"), {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}},
                                                                       "id": "short"}]}], None, {}),
        ("gemma", [{"role": "system", "content": "s"}, u("a")], None, {}),
        ("gemma", [a("a")], None, {}),
        ("llama3.1", [{"role": "system", "content": "s"}], [tool_schema(random.Random(1), "f")], {"date_string": "1 Jan 2025"}),
        ("llama3.1", [u("a"), {"role": "assistant", "tool_calls": [tool_call(random.Random(2), "llama", None)] * 2}],
         None, {"date_string": "1 Jan 2025"}),
    ]


def conversations(out, count=50):
    rng = random.Random(20240726)
    cases = []
    for name, spec in TEMPLATES.items():
        for k in range(count):
            messages, tools, documents = conversation(rng, spec)
            kwargs = dict(SPECIAL)
            if name == "llama3.1":
                kwargs["date_string"] = rng.choice(["26 Jul 2024", "1 Jan 2025"])
                if rng.random() < 0.3:
                    kwargs["tools_in_user_message"] = False
                if rng.random() < 0.2:
                    kwargs["builtin_tools"] = ["code_interpreter", "brave_search"]
            for gen in (False, True):
                ref = render(spec["template"], messages, tools, documents, gen, kwargs)
                cases.append({"template": name, "conversation": k, "context": context(messages, tools, documents, gen, kwargs),
                              **ref})
    for name, messages, tools, kwargs in bad_conversations():
        kwargs = {**SPECIAL, **kwargs}
        ref = render(TEMPLATES[name]["template"], messages, tools, None, False, kwargs)
        assert "error" in ref, (name, ref)
        cases.append({"template": name, "conversation": -1, "context": context(messages, tools, None, False, kwargs), **ref})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"templates": {n: s["template"] for n, s in TEMPLATES.items()}, "cases": cases}, f, ensure_ascii=False)


# ------------------------------------------------------------------ snippets: one construct at a time

SNIPPETS = [
    # whitespace control, trim_blocks and lstrip_blocks
    ("a\n  {% if true %}\n    b\n  {% endif %}\nc\n", {}),
    ("a\n  {%- if true -%}\n    b\n  {%- endif -%}  \n\nc", {}),
    ("a  {%+ if true %}\nb\n{% endif +%}\nc", {}),
    ("  {{ 'x' }}\n  {# comment #}\n  {#- c -#}  y\n{# c2 +#}\nz", {}),
    ("x\t\t{% if 1 %}\t\n{% endif %}y", {}),
    ("{% raw %}{{ not }}{% endraw %}|  {% raw -%}  a  {%- endraw %}|", {}),
    ("\n\n{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n\n", {}),
    ("line1\r\nline2\rline3\n{{ 'a' }}\n\n", {}),
    ("{{- ' a ' -}}  \n  {{ 'b' }}  ", {}),
    ("{% if true %}  x  {% endif %}  \n{% if true %}\n  y\n{% endif %}", {}),
    # literals and printing (Python's str() and repr())
    ("{{ [1, 'a', none, true, 1.5, {'k': [2]}, (1,), ()] }}", {}),
    ("{{ 'it''s' }} {{ ['it\\'s', \"q\\\"\", 'a\\nb', '\\x01', '\\u00e9', 'é', '\\u200b', '\\U0001F600', '\\t\\\\'] }}", {}),
    ("{{ 1/2 }} {{ 4/2 }} {{ 7//2 }} {{ -7//2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2**10 }} {{ 2**-1 }} {{ 1.0 }} {{ 1e20 }} "
     "{{ 1e16 }} {{ 0.1+0.2 }} {{ 1e-5 }} {{ 1e15 }} {{ 123456789.123 }} {{ -0.0 }} {{ 0b101 }} {{ 0x1F }} {{ 1_000 }}", {}),
    ("{{ -3 ** x }} {{ (0 - 3) ** x }} {{ -3 ** 2 }} {{ -x ** 2 }}", {"x": 2}),
    ("{{ {'a': {'b': 1}}}}{{ (1) }}{{ (1,) }}{{ () }}{{ 'a' 'b' }}", {}),
    ("{{ x }}|{{ x.y }}|{{ x['z'] }}|{{ l[0] }}|{{ l[-1] }}|{{ l[5] }}|{{ d.items is callable }}", {"x": {"y": 1, "z": 2}, "l": [1, 2], "d": {}}),
    # undefined
    ("{{ foo }}|{{ foo is defined }}|{{ foo is undefined }}|{{ foo ~ 'a' }}|{{ foo|length }}|{{ foo|default('d') }}|"
     "{% for a in foo %}x{% endfor %}|{{ not foo }}|{{ foo == foo }}|{{ foo|upper }}|{{ foo|list }}|{{ 'x' in foo }}", {}),
    ("{{ messages[0].nope }}|{{ messages[5] }}|{{ none.x }}|{{ 'abc'.nope }}", {"messages": [{"role": "user"}]}),
    # scoping
    ("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}|{{ x }}", {}),
    ("{% set y = 5 %}{% macro m() %}{{ y }}{% endmacro %}{% set y = 6 %}{{ m() }}", {}),
    ("{% for i in range(2) %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %}", {}),
    ("{% if true %}{% set z = 3 %}{% endif %}{{ z }}", {}),
    ("{% set x = 1 %}{% for i in range(3) %}{% if i == 1 %}{% set x = 5 %}{% endif %}{{ x }}{% endfor %}", {}),
    ("{% set i = 9 %}{% for i in range(2) %}{{ i }}{% endfor %}{{ i }}", {}),
    ("{% with a = 1, b = 2 %}{{ a }}{{ b }}{% set c = 3 %}{% endwith %}{{ a }}{{ c }}", {}),
    ("{% set x %}  a {{ 1 }}{% set z = 2 %}{% endset %}[{{ x }}{{ z }}]{% set y | upper | trim %} abc {% endset %}[{{ y }}]", {}),
    ("{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c, d = 'xy' %}{{ c }}{{ d }}{% set e, f = 3, 4 %}{{ e }}{{ f }}", {}),
    ("{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }} {{ ns }} {{ ns.b }}", {}),
    ("{% set ns = namespace({'k': 1}, j=2) %}{{ ns.k }}{{ ns['j'] }}", {}),
    # macros
    ("{% macro m(a, b=a+1) %}{{ a }}{{ b }}{% set y = 3 %}{% endmacro %}{{ m(1) }}{{ m(1, 5) }}{{ m(b=2, a=1) }}{{ y }}", {}),
    ("{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, z=3) }}{{ m() }}", {}),
    ("{% macro outer(x) %}({% for c in x %}{{ inner(c) }}{% endfor %}){% endmacro %}"
     "{% macro inner(c) %}[{{ c|upper }}]{% endmacro %}{{ outer('ab') }}", {}),
    # loops
    ("{% for m in ms %}{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.length }}{{ loop.cycle('a','b') }}{{ loop.index }}"
     "{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.changed(m.role) }}"
     "{{ loop.depth }}{{ loop.depth0 }}\n{% endfor %}", {"ms": [{"role": "a"}, {"role": "a"}, {"role": "b"}]}),
    ("{% for a, b in [[1,2],[3,4]] %}{{ a }}{{ b }}{% endfor %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
     "{% for k in d %}{{ k }}{% endfor %}{% for c in 'héllo' %}{{ c }}.{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("{% for i in range(10) if i is odd %}{{ i }}{{ loop.length }}{% else %}none{% endfor %}{% for i in [] %}x{% else %}"
     "empty{% endfor %}", {}),
    ("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"
     "{% for i in range(3) %}{% continue %}{% else %}E{% endfor %}", {}),
    ("{% for x in ms %}{% set outer = loop %}{% for y in x %}{{ outer.index }}{{ loop.index }} {% endfor %}{% endfor %}",
     {"ms": [[1, 2], [3]]}),
    # operators
    ("{{ not 1 == 2 }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 2 ** 3 ** 2 }}{{ 'a' ~ 1 ~ 2 }}{{ 1 + 2 * 3 }}{{ (1 + 2) * 3 }}"
     "{{ 7 - 2 - 1 }}{{ 'ab' * 2 }}{{ [1] * 2 }}{{ [1] + [2] }}{{ true + 1 }}{{ 1.0 == 1 }}{{ [1, 2] == [1.0, 2] }}", {}),
    ("{{ 'a' in 'abc' }}{{ 'z' not in 'abc' }}{{ 1 in [1,2] }}{{ 'k' in {'k': 1} }}{{ 'x' in y }}{{ none is none }}", {}),
    ("{{ 0 or '' }}|{{ 1 and [] }}|{{ x or 'b' }}|{{ 'a' if x else 'b' }}|{{ 'a' if x }}|{{ [] if [] else {} }}", {}),
    ("{{ 'hello'[1:3] }}{{ 'hello'[::-1] }}{{ 'héllo'[1] }}{{ [1,2,3][::2] }}{{ [1,2,3][5:] }}{{ 'abc'[-10:10] }}"
     "{{ [1,2,3][3:0:-1] }}{{ range(10)[2:8:3]|list }}{{ (1, 2, 3)[1:] }}", {}),
    # tests
    ("{{ [1,2]|length is odd }}{{ 2 is divisibleby(2) }}{{ 5 is divisibleby 3 }}{{ 3 is odd }}{{ 4 is even }}"
     "{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 'upper' is filter }}{{ 'odd' is test }}{{ 1 is in [1] }}{{ 1 is eq 1 }}"
     "{{ 1 is equalto 1 }}{{ 1 is lt 2 }}{{ 2 is ge 2 }}{{ 1 is ne 1 }}{{ none is sameas none }}{{ true is sameas true }}"
     "{{ 1 is number }}{{ 1 is integer }}{{ 1.5 is float }}{{ true is boolean }}{{ true is true }}{{ 0 is false }}"
     "{{ {} is mapping }}{{ [] is sequence }}{{ '' is iterable }}{{ 1 is iterable }}{{ 'x' is string }}{{ x is none }}"
     "{{ y is callable }}{{ 'a'|e is escaped }}", {"x": None, "y": None}),
    # filters
    ("{{ 'abc'|upper }}{{ 'ABC'|lower }}{{ 'hELLO wORLD'|capitalize }}{{ 'hello big-world(x) o\\'neil'|title }}"
     "{{ 'héllo wörld'.title() }}|{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'aaa'|replace('a', 'b', 2) }}", {}),
    ("{{ {'a':1,'b':2}|items|list }} {{ [1,2]|string }} {{ {'a':1,'b':2}|join(',') }} {{ 'héllo'|length }}"
     " {{ {'a':1}|count }} {{ 'abc'|first }} {{ {'a':1,'b':2}|last }} {{ [3,1,2]|sort }} {{ ['b','A','a']|sort }}"
     " {{ [1,2,1]|unique|list }} {{ [1,2,3]|reverse|list }} {{ 'abc'|reverse }} {{ {'a':1}|list }}", {}),
    ("{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent('> ', blank=true) }}"
     "|{{ 'hello big-world_x 3'|wordcount }}|{{ '<a&b>\"'|e }}|{{ ('a'|safe) + '<' }}|{{ ('<'|escape) ~ '<' }}"
     "|{{ 'x'|center(7) }}|", {}),
    ("{{ [1,2,3]|map('string')|join('-') }} {{ ms|map(attribute='role')|list }} "
     "{{ [{'a':{'b':1}},{}]|map(attribute='a.b', default='d')|list }} {{ [1,2,3,4]|select('even')|list }} "
     "{{ [1,2,3,4]|reject('odd')|list }} {{ ms|selectattr('role', 'equalto', 'user')|list|length }} "
     "{{ ms|rejectattr('role', 'equalto', 'user')|map(attribute='role')|first }} {{ [0,1,'',2]|select|list }} "
     "{{ [1,2,3]|sum }} {{ ms|sum(attribute='n') }} {{ [3,1]|min }} {{ ['b', 'A']|max }} {{ {'b':1,'a':2}|dictsort }} "
     "{{ ms|sort(attribute='role', reverse=true)|map(attribute='n')|list }} {{ [1,2,3,4,5]|batch(2)|list }}",
     {"ms": [{"role": "user", "n": 1}, {"role": "x", "n": 2}]}),
    ("{{ [1,2]|first }} {{ []|first }}| {{ []|last }}| {{ 'x'|default('y') }} {{ u|default('y') }} "
     "{{ ''|default('y', true) }} {{ none|default('y') }} {{ u|d }}|", {}),
    ("{{ {'b': 1, 'a': [1.5, true, none, 'é\"\\n']}|tojson }}|{{ {'b': 1, 'a': [1, {}], 'c': {}}|tojson(indent=2) }}|"
     "{{ [1,[2]]|tojson(indent='\t') }}|{{ {'b':1,'a':2}|tojson(sort_keys=true, separators=(',', ':')) }}|"
     "{{ 'x'|safe|tojson }}|{{ (1,2)|tojson }}|{{ 'é\u2028😀\u0001'|tojson }}|{{ 'é😀'|tojson(ensure_ascii=true) }}|"
     "{{ {1: 2, 1.5: 3, true: 4, none: 5}|tojson }}|{{ 1e100|tojson }} {{ 0.1|tojson }} {{ 100.0|tojson }}", {}),
    ("{{ 3|float }} {{ '3.5'|int }} {{ 'abc'|int }} {{ 2.7|int }} {{ '0x1f'|int(base=16) }} {{ ' 12 '|int }} "
     "{{ '1_000'|int }} {{ true|int }} {{ 'x'|float(1) }} {{ ' 1e3 '|float }} {{ -3|abs }} {{ -3.0|abs }}", {}),
    ("{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 3|round }} {{ -2.5|round }} {{ 1.55|round(1, 'floor') }} "
     "{{ 1.51|round(1, 'ceil') }}", {}),
    ("{{ 'x'|attr('upper') is callable }} {{ d|attr('k') }}|{% filter upper %}a{{ 'b' }}{% endfilter %}"
     "{% filter replace('a', 'b')|upper %}aa{% endfilter %}", {"d": {"k": 1}}),
    # string, dict and list methods
    ("{{ ' a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.rsplit(' ', 1) }} "
     "{{ '  x '.strip() }}|{{ 'xxaxx'.strip('x') }} {{ 'abc'.startswith(('x','a')) }} {{ 'abc'.endswith('c') }} "
     "{{ 'abc'.find('c') }} {{ 'aXbX'.count('X') }} {{ 'hello'.capitalize() }} {{ 'a{}b{x}'.format(1, x=2) }} {{ '{1}{0}'.format(1, 2) }} "
     "{{ '-'.join(['a', 'b']) }} {{ 'a\\nb'.splitlines() }} {{ 'abc'.replace('b', 'B') }} {{ 'ab'.upper() }}"
     "{{ 'AB'.lower() }} {{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ 'prefix-x'.removeprefix('prefix-') }}", {}),
    ("{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items() }} "
     "{{ d.keys() }} {{ l.index(2) }} {{ l.count(1) }} {{ l.copy() }} {{ d.copy() }}", {"d": {"a": 1, "b": 2}, "l": [1, 2]}),
    # globals
    ("{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(3) }} {{ dict(a=1, b='x') }} {{ namespace(q=1).q }}", {}),
    # unicode case mapping
    ("{{ 'ß ﬁ straße'|upper }} {{ 'İSTANBUL ΣΑΣ'|lower }} {{ 'ǆemal ßa'.title() }} {{ 'ﬁre'|capitalize }}", {}),
    # the generation block
    ("a{% generation %}b{% endgeneration %}c{% for i in range(2) %}{% generation %}[{{ i }}é]{% endgeneration %}{% endfor %}", {}),
    ("{% macro m() %}x{% generation %}yz{% endgeneration %}{% endmacro %}{{ m() }}{% generation %}{% generation %}"
     "in{% endgeneration %}out{% endgeneration %}", {}),
    # errors both sides raise
    ("line1\n{% for m in ms %}\n{{ raise_exception('bad role ' ~ m) }}\n{% endfor %}", {"ms": [1]}),
    ("{{ 'a' + 1 }}", {}), ("{{ a.b }}", {}), ("{% set x = [1] %}{{ x.append(2) }}", {}), ("{{ 1 / 0 }}", {}),
    ("{% for x in 1 %}{% endfor %}", {}), ("{{ 1 < 'a' }}", {}), ("{% for a, b in [[1,2,3]] %}{% endfor %}", {}),
    ("{% set ns = namespace() %}{% set ns._x = 1 %}", {}), ("{% set d = {} %}{% set d.x = 1 %}", {}),
    ("{{ x|tojson }}", {}), ("{{ '{}{0}'.format(1) }}", {}), ("{{ range(100001)|length }}", {}), ("{{ d.update({}) }}", {"d": {}}),
    ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}), ("{{ (1 }}", {}), ("{% if %}{% endif %}", {}),
    ("{% endfor %}", {}), ("{# unclosed", {}), ("{{ x |nofilter }}", {}), ("{{ x is nottest }}", {}),
]


def random_snippets(rng, count):
    """Seeded random templates over the constructs above (whitespace control, expressions, statements)."""
    texts = ["", " ", "  ", "\t", "\n", "\n\n", " \n ", "x", "a b", "\n  ", "  \n", "\u3000", "\xa0", "é\n", "y\n\t "]
    atoms = ["0", "1", "-3", "2.5", "0.1", "true", "false", "none", "''", "'abc'", "' Hé llo '", "'ß ﬁ Σσ'", "'a,b,,c'",
             "[]", "[1, 2, 3]", "['b', 'A', 'a']", "(1, 'x')", "{}", "{'k': 1, 'j': [2]}", "u", "s", "n", "l", "d", "f",
             "m", "ms", "ms[0]", "d.k", "d['j']", "l[1:]", "s[::-1]", "m.role", "l[-1]"]
    ops = ["+", "-", "*", "//", "~", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]
    filters = ["length", "upper", "lower", "capitalize", "title", "trim", "string", "list", "first", "last", "int",
               "float", "abs", "round", "sort", "unique|list", "join(',')", "tojson", "tojson(indent=2)", "default('D')",
               "d('D', true)", "items|list", "dictsort", "sum", "min", "max", "wordcount", "e", "indent(2)",
               "replace('a', 'X')", "map('upper')|list", "select|list", "reject|list", "map(attribute='role')|list",
               "selectattr('role')|list", "selectattr('role', 'eq', 'user')|list", "center(9)", "reverse|list"]
    tests = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "sequence",
             "iterable", "boolean", "odd", "even", "divisibleby 3", "lower", "upper", "in [1, 'abc']", "eq 1", "lt 2"]
    methods = ["upper()", "lower()", "strip()", "split()", "split(',')", "startswith('a')", "endswith('c')",
               "replace('a', 'b')", "title()", "find('b')", "count('a')", "items()|list", "get('k')", "get('z', 5)"]

    def expr(d):
        k = rng.randint(0, 7 if d < 3 else 0)
        if k == 0:
            return rng.choice(atoms)
        if k == 1:
            return "(" + expr(d + 1) + " " + rng.choice(ops) + " " + expr(d + 1) + ")"
        if k == 2:
            return expr(d + 1) + "|" + rng.choice(filters)
        if k == 3:
            return "(" + expr(d + 1) + " is " + rng.choice(["", "not "]) + rng.choice(tests) + ")"
        if k == 4:
            return rng.choice(["s", "m.content", "d", "''", "'a,b'"]) + "." + rng.choice(methods)
        if k == 5:
            return "(" + expr(d + 1) + " if " + expr(d + 1) + " else " + expr(d + 1) + ")"
        if k == 6:
            return "(not " + expr(d + 1) + ")"
        return "[" + expr(d + 1) + ", " + expr(d + 1) + "]"

    def sign():
        return rng.choice(["", "", "-", "+"])

    def node(d):
        k = rng.randint(0, 9 if d < 3 else 3)
        if k <= 1:
            return "".join(rng.choice(texts) for _ in range(rng.randint(0, 3)))
        if k == 2:
            return "{{" + rng.choice(["", "-"]) + " " + expr(0) + " " + rng.choice(["", "-"]) + "}}"
        if k == 3:
            return "{#" + sign() + " c " + sign() + "#}"
        if k == 4:
            return "{%" + sign() + " set y = " + expr(1) + " " + sign() + "%}{{ y }}"
        if k == 5:
            return ("{%" + sign() + " if " + expr(1) + " " + sign() + "%}" + body(d) +
                    rng.choice(["", "{%" + sign() + " else " + sign() + "%}" + body(d)]) + "{%" + sign() + " endif " + sign() + "%}")
        if k == 6:
            return ("{%" + sign() + " for i in " + rng.choice(["[1, 2]", "ms", "'ab'", "d|dictsort"]) + " " + sign() + "%}" +
                    "{{ loop.index }}{{ i }}" + body(d) + "{%" + sign() + " endfor " + sign() + "%}")
        if k == 7:
            return ("{% macro mac(p, q='Q') %}[{{ p }}{{ q }}" + body(d) + "]{% endmacro %}{{ mac(" + expr(1) + ") }}"
                    "{{ mac(1, q=" + expr(1) + ") }}")
        if k == 8:
            return "{%" + sign() + " generation " + sign() + "%}" + body(d) + "{%" + sign() + " endgeneration " + sign() + "%}"
        return "{% set ns.x = ns.x ~ " + expr(1) + " %}{{ ns.x }}"

    def body(d):
        return "".join(node(d + 1) for _ in range(rng.randint(0, 3)))

    ctx = {"s": "hello, World", "n": 42, "l": [3, 1, 2], "d": {"k": "v", "j": [1, 2]}, "f": -1.25,
           "m": {"role": "user", "content": " Hi there "},
           "ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    return [("{% set ns = namespace(x='') %}" + body(0) + rng.choice(["", "\n"]), ctx) for _ in range(count)]


def snippets(out, count=600):
    cases = []
    for template, ctx in SNIPPETS + random_snippets(random.Random(7), count):
        try:
            ref = render(template, ctx.get("messages", []), None, None, False,
                         {k: v for k, v in ctx.items() if k != "messages"})
        except Exception as e:  # noqa: BLE001
            ref = {"error": str(e)}
        full = {"messages": ctx.get("messages", []), "tools": None, "documents": None, "add_generation_prompt": False,
                **{k: v for k, v in ctx.items() if k != "messages"}}
        cases.append({"template": template, "context": full, **ref})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)


# ------------------------------------------------------------------ apply_chat_template on raw messages

PROBE = "{{ messages }}|{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|{{ bos_token }}{{ eos_token }}{{ unk_token }}"

THINKING = r"""{%- for message in messages %}
{{- '<|im_start|>' + message.role + '\n' }}
{%- if message.role == 'assistant' and message.reasoning_content is defined %}
{{- '<think>\n' + message.reasoning_content.strip('\n') + '\n</think>\n\n' }}
{%- endif %}
{%- if message.thinking is defined %}[{{ message.thinking }}]{% endif %}
{{- message.content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""


def tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def apply(out, count=30):
    """Raw messages (None values, reasoning under its several names) through a tokenizer's
    apply_chat_template(tokenize=False), the public API."""
    tok = tokenizer()
    rng = random.Random(99)
    cases = []
    for template in (PROBE, THINKING, LLAMA31, CHATML_QWEN):
        for _ in range(count):
            messages, _, _ = conversation(rng, {"system": True})
            for m in messages:
                if rng.random() < 0.3:
                    m[rng.choice(["tool_calls", "name", "content_extra"])] = None
                if m["role"] == "assistant" and rng.random() < 0.5:
                    m[rng.choice(["reasoning_content", "thinking", "reasoning"])] = text(rng, False)
                    if rng.random() < 0.3:
                        m["reasoning_content"] = None
            gen = rng.random() < 0.5
            try:
                text_ = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=template)
                ref = {"text": text_}
            except Exception as e:  # noqa: BLE001
                ref = {"error": str(e)}
            cases.append({"template": template, "context": {"messages": messages, "add_generation_prompt": gen,
                                                            **tok.special_tokens_map}, **ref})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)


def render_one(template_path, context_path, out):
    with open(template_path, encoding="utf-8") as f:
        template = f.read()
    with open(context_path, encoding="utf-8") as f:
        ctx = json.load(f)
    kwargs = {k: v for k, v in ctx.items() if k not in ("messages", "tools", "documents", "add_generation_prompt")}
    ref = render(template, ctx.get("messages", []), ctx.get("tools"), ctx.get("documents"),
                 bool(ctx.get("add_generation_prompt")), kwargs)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "conversations":
        conversations(args[0], int(args[1]) if len(args) > 1 else 50)
    elif cmd == "snippets":
        snippets(args[0], int(args[1]) if len(args) > 1 else 600)
    elif cmd == "apply":
        apply(args[0], int(args[1]) if len(args) > 1 else 30)
    elif cmd == "render":
        render_one(*args)
    else:
        sys.exit(f"unknown command {cmd}")
