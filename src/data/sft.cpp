// Supervised fine-tuning examples, packing and batches.

#include "lathe/data/sft.hpp"

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::data {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

using Span = std::pair<std::size_t, std::size_t>;  // bytes [first, second) of the rendered text

std::string render(const SftOptions& o, const json& messages, bool generation_prompt, std::vector<Span>* spans) {
  json context = o.template_context;
  context["messages"] = messages;
  context["add_generation_prompt"] = generation_prompt;
  auto r = o.chat_template->render(context);
  if (spans) *spans = std::move(r.generation);
  return std::move(r.text);
}

/// The assistant turns of a conversation as byte spans of its rendering. The template's
/// {% generation %} blocks where it has them; else each assistant turn k is what rendering
/// messages[0 .. k] adds to rendering messages[0 .. k-1] with the generation prompt, which holds
/// for templates that render a conversation as the concatenation of its turns.
std::vector<Span> assistant_spans(const SftOptions& o, const json& messages, const std::string& text,
                                  const std::vector<Span>& marked, const std::string& origin) {
  bool any_assistant = false;
  for (const auto& m : messages) any_assistant |= m.value("role", "") == "assistant";
  if (!marked.empty() || !any_assistant) return marked;
  std::vector<Span> spans;
  for (std::size_t k = 0; k < messages.size(); ++k) {
    if (messages[k].value("role", "") != "assistant") continue;
    const json before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(k));
    const json through(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(k) + 1);
    const auto prompt = render(o, before, /*generation_prompt=*/true, nullptr);
    const auto turn = render(o, through, /*generation_prompt=*/false, nullptr);
    if (!turn.starts_with(prompt) || !text.starts_with(turn))
      throw Error(fmt::format("{}: the chat template does not render this conversation turn by turn (the text up "
                              "to assistant turn {} is not a prefix of the whole), so its assistant tokens cannot be "
                              "told apart: use a template with {{% generation %}} blocks, or train.loss_on: all",
                              origin, k));
    spans.emplace_back(prompt.size(), turn.size());
  }
  return spans;
}

/// Marks the tokens that overlap a span (as transformers' assistant masks do, by character).
void mark(const std::vector<tokenizer::Offset>& offsets, const std::vector<Span>& spans, std::vector<uint8_t>& scored) {
  for (std::size_t t = 0; t < offsets.size(); ++t)
    for (const auto& [b, e] : spans)
      if (offsets[t].first < e && offsets[t].second > b) scored[t] = 1;
}

/// `skip_turns`: assistant turns (from the first) that are context, not targets (a preference
/// pair's prompt may hold earlier ones).
SftExample conversation(const json& row, const tokenizer::Tokenizer& tok, const SftOptions& o,
                        const std::string& origin, std::size_t skip_turns = 0) {
  if (!o.chat_template)
    throw Error(origin + ": a conversation needs a chat template: the tokenizer has none; set tokenizer.chat_template");
  const auto& messages = row["messages"];
  if (!messages.is_array() || messages.empty())
    throw Error(origin + ": \"messages\" must be a non-empty list of {\"role\", \"content\"} objects");
  for (const auto& m : messages)
    if (!m.is_object() || !m.contains("role")) throw Error(origin + ": every message needs a \"role\"");
  std::vector<Span> marked;
  const auto text = render(o, messages, /*generation_prompt=*/false, &marked);
  SftExample ex;
  std::vector<tokenizer::Offset> offsets;
  ex.ids = tok.encode(text, &offsets);
  ex.scored.assign(ex.ids.size(), o.loss_on == SftLoss::All ? 1 : 0);
  if (o.loss_on != SftLoss::All) {
    auto spans = assistant_spans(o, messages, text, marked, origin);
    if (o.loss_on == SftLoss::Completion && spans.size() > 1) spans.erase(spans.begin(), spans.end() - 1);
    spans.erase(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(std::min(skip_turns, spans.size())));
    mark(offsets, spans, ex.scored);
  }
  return ex;
}

SftExample pair(const json& row, const tokenizer::Tokenizer& tok, const SftOptions& o, const std::string& origin) {
  if (!row["prompt"].is_string() || !row.contains("completion") || !row["completion"].is_string())
    throw Error(origin + ": a prompt / completion pair needs two strings, \"prompt\" and \"completion\"");
  const auto prompt = row["prompt"].get<std::string>();
  const auto text = prompt + row["completion"].get<std::string>();
  SftExample ex;
  std::vector<tokenizer::Offset> offsets;
  ex.ids = tok.encode(text, &offsets);
  ex.scored.assign(ex.ids.size(), o.loss_on == SftLoss::All ? 1 : 0);
  mark(offsets, {{prompt.size(), text.size()}}, ex.scored);
  // The special tokens the tokenizer puts before a text (Llama's <|begin_of_text|>), as
  // transformers' tokenizer(text) adds them; never targets.
  const auto with = tok.encode_with_specials(text).ids;
  if (with.size() > ex.ids.size() && std::equal(ex.ids.rbegin(), ex.ids.rend(), with.rbegin())) {
    const auto n = static_cast<std::ptrdiff_t>(with.size() - ex.ids.size());
    ex.ids.insert(ex.ids.begin(), with.begin(), with.begin() + n);
    ex.scored.insert(ex.scored.begin(), static_cast<std::size_t>(n), 0);
  }
  // A completion that already ends with the end-of-text token gets no second one.
  if (o.eos_id >= 0 && (ex.ids.empty() || ex.ids.back() != o.eos_id)) {
    ex.ids.push_back(o.eos_id);
    ex.scored.push_back(1);
  }
  return ex;
}

}  // namespace

json chat_template_context(const fs::path& tokenizer_file, const tokenizer::Tokenizer& tok) {
  json context = json::object();
  const auto config = tokenizer_file.parent_path() / "tokenizer_config.json";
  if (std::ifstream in(config); in) {
    json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"}) {
      if (!j.is_object() || !j.contains(key) || j[key].is_null()) continue;
      const auto& v = j[key];
      if (v.is_string()) context[key] = v;
      else if (v.is_object() && v.contains("content")) context[key] = v["content"];
    }
  }
  if (!context.contains("eos_token") && tok.eos_id() >= 0)
    context["eos_token"] = tok.decode(std::vector<int32_t>{tok.eos_id()});
  return context;
}

namespace {

/// Calls `fn(row, origin)` for each non-blank line of a JSONL file; errors name the line.
void for_each_row(const fs::path& path, const std::function<void(const json&, const std::string&)>& fn) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read " + path.string());
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto origin = fmt::format("{}:{}", path.string(), n);
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(origin + ": not a JSON object: " + e.what());
    }
    try {
      fn(row, origin);
    } catch (const Error& e) {
      // The template's own errors (a type error, raise_exception) name its line, not the example.
      const std::string what = e.what();
      if (what.starts_with(origin)) throw;
      throw Error(origin + ": " + what);
    }
  }
}

/// Cuts `ex` to max_tokens (the first token is never predicted); its number of targets.
int64_t finish(SftExample& ex, const SftOptions& o, const std::string& origin) {
  ex.origin = origin;
  if (ex.scored.size() > 0) ex.scored[0] = 0;
  if (o.max_tokens > 0 && static_cast<int64_t>(ex.ids.size()) > o.max_tokens) {
    ex.ids.resize(static_cast<std::size_t>(o.max_tokens));
    ex.scored.resize(static_cast<std::size_t>(o.max_tokens));
    ex.truncated = true;
  }
  return std::count(ex.scored.begin(), ex.scored.end(), 1);
}

/// One completion of a preference pair after its prompt.
SftExample completion(const json& row, const char* key, const tokenizer::Tokenizer& tok, const SftOptions& o,
                      const std::string& origin) {
  const auto& prompt = row["prompt"];
  const auto& c = row[key];
  if (prompt.is_string() && c.is_string()) return pair({{"prompt", prompt}, {"completion", c}}, tok, o, origin);
  if (prompt.is_array() && c.is_array()) {
    // Every assistant turn of the completion is scored (a completion may hold several, as trl
    // scores all that follows the prompt); those of the prompt are context.
    json messages = prompt;
    std::size_t prompt_turns = 0;
    for (const auto& m : prompt) prompt_turns += m.is_object() && m.value("role", "") == "assistant" ? 1 : 0;
    for (const auto& m : c) messages.push_back(m);
    auto options = o;
    options.loss_on = SftLoss::Assistant;
    return conversation({{"messages", messages}}, tok, options, origin, prompt_turns);
  }
  throw Error(fmt::format("\"prompt\" and \"{}\" must both be strings or both lists of chat messages", key));
}

}  // namespace

std::vector<SftExample> read_sft_examples(const fs::path& path, const tokenizer::Tokenizer& tok,
                                          const SftOptions& o, SftStats& stats) {
  std::vector<SftExample> out;
  for_each_row(path, [&](const json& row, const std::string& origin) {
    if (!row.is_object() || (!row.contains("messages") && !row.contains("prompt")))
      throw Error("expected {\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...}");
    auto ex = row.contains("messages") ? conversation(row, tok, o, origin) : pair(row, tok, o, origin);
    const auto scored = finish(ex, o, origin);
    if (scored == 0) {
      ++stats.unscored;
      return;
    }
    ++stats.examples;
    stats.truncated += ex.truncated ? 1 : 0;
    stats.tokens += static_cast<int64_t>(ex.ids.size());
    stats.scored += scored;
    out.push_back(std::move(ex));
  });
  return out;
}

std::vector<PreferencePair> read_preference_pairs(const fs::path& path, const tokenizer::Tokenizer& tok,
                                                  const SftOptions& o, SftStats& stats) {
  std::vector<PreferencePair> out;
  for_each_row(path, [&](const json& row, const std::string& origin) {
    if (!row.is_object() || !row.contains("prompt") || !row.contains("chosen") || !row.contains("rejected"))
      throw Error("expected {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}");
    PreferencePair p{completion(row, "chosen", tok, o, origin), completion(row, "rejected", tok, o, origin)};
    const auto scored_c = finish(p.chosen, o, origin), scored_r = finish(p.rejected, o, origin);
    if (scored_c == 0 || scored_r == 0) {
      ++stats.unscored;
      return;
    }
    ++stats.examples;
    stats.truncated += p.chosen.truncated || p.rejected.truncated ? 1 : 0;
    stats.tokens += static_cast<int64_t>(p.chosen.ids.size() + p.rejected.ids.size());
    stats.scored += scored_c + scored_r;
    out.push_back(std::move(p));
  });
  return out;
}

std::vector<std::vector<std::size_t>> pack_examples(const std::vector<int64_t>& lengths, int64_t capacity) {
  std::vector<std::size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<std::size_t>> rows;
  std::multimap<int64_t, std::size_t> room;  // space left -> row
  for (const auto i : order) {
    if (lengths[i] > capacity)
      throw std::invalid_argument(fmt::format("pack_examples: an example of {} tokens in rows of {}", lengths[i], capacity));
    auto it = room.lower_bound(lengths[i]);  // the fullest row it fits in
    std::size_t row;
    int64_t left;
    if (it == room.end()) {
      row = rows.size();
      rows.emplace_back();
      left = capacity;
    } else {
      row = it->second;
      left = it->first;
      room.erase(it);
    }
    rows[row].push_back(i);
    room.emplace(left - lengths[i], row);
  }
  return rows;
}

SftBatch collate_sft(const std::vector<std::vector<const SftExample*>>& rows, int64_t length, int32_t pad_id,
                     bool packed) {
  const auto B = static_cast<int64_t>(rows.size());
  int64_t longest = 0;
  for (const auto& row : rows) {
    int64_t n = 0;
    for (const auto* ex : row) n += static_cast<int64_t>(ex->ids.size());
    longest = std::max(longest, n);
  }
  const int64_t T = length > 0 ? length : std::max<int64_t>(longest, 1);
  if (longest > T) throw std::invalid_argument(fmt::format("collate_sft: a row of {} tokens in {}", longest, T));
  auto ids = at::full({B, T}, pad_id, at::kLong), targets = at::full({B, T}, -100, at::kLong);
  auto segments = at::empty({B, T}, at::kLong);
  auto* pi = ids.data_ptr<int64_t>();
  auto* pt = targets.data_ptr<int64_t>();
  auto* ps = segments.data_ptr<int64_t>();
  SftBatch out;
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0, seg = 0;
    for (const auto* ex : rows[static_cast<std::size_t>(b)]) {
      const auto n = static_cast<int64_t>(ex->ids.size());
      for (int64_t k = 0; k < n; ++k) {
        pi[b * T + at + k] = ex->ids[k];
        ps[b * T + at + k] = seg;
        if (k + 1 < n && ex->scored[k + 1]) pt[b * T + at + k] = ex->ids[k + 1];
      }
      at += n;
      ++seg;
    }
    out.tokens += at;
    for (int64_t k = at; k < T; ++k) ps[b * T + k] = seg;  // the padding is a segment of its own
  }
  out.input_ids = ids;
  out.targets = targets;
  if (packed) out.segments = segments;
  return out;
}

}  // namespace lathe::data
