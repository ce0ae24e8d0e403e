#include "lathe/eval/harness.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>

#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/eval/py_random.hpp"
#include "lathe/tokenizer/unicode.hpp"
#include "lathe/tokenizer/py_regex.hpp"
#include "py_text.hpp"

namespace lathe::eval {

using nlohmann::ordered_json;

namespace {

[[noreturn]] void doc_error(const Task& task, std::size_t doc_id, const std::string& msg) {
  throw Error(fmt::format("task {} ({}), document {}: {}", task.name(), task.config().file.string(), doc_id, msg));
}

std::string as_text(const Task& task, std::size_t doc_id, const ordered_json& v, const char* what) {
  if (!v.is_string()) doc_error(task, doc_id, fmt::format("{} must be a string here, got {}", what, v.dump()));
  return v.get<std::string>();
}

/// The few-shot examples of `doc`, as the harness's ContextSampler draws them.
std::vector<const Doc*> draw_examples(const Task& task, const Doc& doc, int64_t n, PyRandom& rnd) {
  const auto& pool = task.fewshot_docs();
  const bool exclude = task.fewshot_from_eval_split();
  std::vector<const Doc*> out;
  if (task.config().first_n_sampler) {
    for (const auto& d : pool)
      if (static_cast<int64_t>(out.size()) < n && !(exclude && d == doc)) out.push_back(&d);
    if (static_cast<int64_t>(out.size()) < n)
      throw Error(fmt::format("task {}: {} few-shot examples asked for, {} available", task.name(), n, out.size()));
    return out;
  }
  const auto draw = [&](const std::vector<const Doc*>& from, std::size_t k) {
    if (k > from.size())
      throw Error(fmt::format("task {}: {} few-shot examples asked for, the pool has {}", task.name(), k, from.size()));
    std::vector<const Doc*> picked;
    for (std::size_t i : rnd.sample(from.size(), k)) picked.push_back(from[i]);
    return picked;
  };
  std::vector<const Doc*> all;
  for (const auto& d : pool) all.push_back(&d);
  if (!exclude) return draw(all, static_cast<std::size_t>(n));
  for (const Doc* d : draw(all, static_cast<std::size_t>(n + 1)))
    if (*d != doc && static_cast<int64_t>(out.size()) < n) out.push_back(d);
  if (static_cast<int64_t>(out.size()) < n) {
    // Copies of the scored document were drawn: the harness draws again from the pool without it.
    std::vector<const Doc*> others;
    for (const Doc* d : all)
      if (*d != doc) others.push_back(d);
    out = draw(others, static_cast<std::size_t>(n));
  }
  return out;
}

/// One labelled example: its prompt, the target delimiter and its answer, then the few-shot
/// delimiter (the harness's build_qa_turn rendered as text).
std::string labelled_example(const Task& task, const Doc& ex) {
  const auto& c = task.config();
  ordered_json q = task.doc_to_text(ex);
  const ordered_json a = task.doc_to_target(ex);
  std::vector<std::string> choices;
  if (!c.doc_to_choice.is_null()) choices = task.doc_to_choice(ex);
  if (task.multiple_input()) {
    const auto k = q.get<int64_t>();
    if (k < 0 || k >= static_cast<int64_t>(choices.size()))
      throw Error(fmt::format("task {}: a few-shot example's doc_to_text {} is not a choice index", task.name(), k));
    q = choices[static_cast<std::size_t>(k)];
    choices.clear();
  }
  if (!q.is_string()) throw Error(fmt::format("task {}: a few-shot example's prompt is not a string: {}", task.name(), q.dump()));
  std::string out = q.get<std::string>();
  const bool has_answer = !a.is_null() && !(a.is_string() && a.get<std::string>().empty());
  if (!has_answer) return out;
  out += c.target_delimiter;
  ordered_json answer = a;
  if (!choices.empty() && a.is_number_integer()) {
    const auto k = a.get<int64_t>();
    if (k < 0 || k >= static_cast<int64_t>(choices.size()))
      throw Error(fmt::format("task {}: a few-shot example's answer {} is not a choice index", task.name(), k));
    answer = choices[static_cast<std::size_t>(k)];
  } else if (a.is_array()) {
    answer = a.at(0);
  }
  if (!answer.is_string())
    throw Error(fmt::format("task {}: a few-shot example's answer is not a string: {}", task.name(), answer.dump()));
  return out + answer.get<std::string>() + c.fewshot_delimiter;
}

}  // namespace

std::vector<std::string> fewshot_context(const Task& task, const Doc& doc, int64_t num_fewshot, PyRandom& rnd) {
  std::string prefix = task.description(doc);
  if (num_fewshot > 0)
    for (const Doc* ex : draw_examples(task, doc, num_fewshot, rnd)) prefix += labelled_example(task, *ex);
  const ordered_json q = task.doc_to_text(doc);
  if (task.multiple_input()) {
    std::vector<std::string> out;
    for (const auto& ctx : task.doc_to_choice(doc)) out.push_back(prefix + ctx);
    return out;
  }
  if (task.config().output_type == OutputType::LoglikelihoodRolling && q.is_null()) return {prefix};
  if (!q.is_string()) throw Error(fmt::format("task {}: doc_to_text gave {}, not a string", task.name(), q.dump()));
  return {prefix + q.get<std::string>()};
}

// ------------------------------------------------------------------------------ statistics

double mean_stderr(const std::vector<double>& xs) {
  const double n = static_cast<double>(xs.size());
  double mu = 0;
  for (double x : xs) mu += x;
  mu /= n;
  double ss = 0;
  for (double x : xs) ss += (x - mu) * (x - mu);
  return std::sqrt(ss / (n - 1)) / std::sqrt(n);
}

double bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters) {
  const int64_t chunk = std::min<int64_t>(1000, iters);
  std::vector<double> replicates;
  replicates.reserve(static_cast<std::size_t>(iters));
  const double n = static_cast<double>(lls.size());
  for (int64_t i = 0; i < iters / chunk; ++i) {
    PyRandom rnd(static_cast<uint64_t>(i));
    for (int64_t r = 0; r < chunk; ++r) {
      double sum = 0;
      for (std::size_t k : rnd.choices(lls.size(), lls.size())) sum += lls[k];
      replicates.push_back(std::exp(-(sum / n)));
    }
  }
  double mu = 0;
  for (double x : replicates) mu += x;
  mu /= static_cast<double>(replicates.size());
  double ss = 0;
  for (double x : replicates) ss += (x - mu) * (x - mu);
  return std::sqrt(ss / static_cast<double>(replicates.size() - 1));
}

namespace {

using detail::code_points;
using detail::py_space;
using detail::utf8;

/// len(re.split(r"\s+", text)): one more than the runs of white space.
double count_words(const std::string& text) {
  double n = 1;
  bool in_space = false;
  for (char32_t c : code_points(text)) {
    const bool s = py_space(c);
    if (s && !in_space) ++n;
    in_space = s;
  }
  return n;
}

std::string py_lower(const std::string& s) {
  std::u32string out;
  for (char32_t c : code_points(s)) tokenizer::append_lower(out, c);
  return utf8(out);
}

/// The harness's exact_match (HF evaluate's): both strings normalised the same way, then compared.
double exact_match(std::string pred, std::string ref, const MetricSpec& m) {
  for (const auto& r : m.regexes_to_ignore) {
    const tokenizer::PyRegex re(r);
    pred = re.remove(pred);
    ref = re.remove(ref);
  }
  if (m.ignore_case) pred = py_lower(pred), ref = py_lower(ref);
  auto drop = [](std::string& s, std::string_view chars) {
    s.erase(std::remove_if(s.begin(), s.end(), [&](char c) { return chars.find(c) != std::string_view::npos; }), s.end());
  };
  if (m.ignore_punctuation) drop(pred, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), drop(ref, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
  if (m.ignore_numbers) drop(pred, "0123456789"), drop(ref, "0123456789");
  return pred == ref ? 1.0 : 0.0;
}

/// A filter pipeline over one document's responses.
std::vector<std::string> apply_filters(const FilterPipeline& p, std::vector<std::string> resps) {
  for (const auto& step : p.steps) {
    if (step.function == "take_first") {
      resps.resize(std::min<std::size_t>(resps.size(), 1));
    } else if (step.function == "lowercase") {
      for (auto& r : resps) r = py_lower(r);
    } else if (step.function == "uppercase") {
      for (auto& r : resps) {
        std::u32string out;
        for (char32_t c : code_points(r)) out.push_back(c < 0x80 ? static_cast<char32_t>(std::toupper(static_cast<int>(c))) : c);
        r = utf8(out);
      }
    } else if (step.function == "remove_whitespace") {
      for (auto& r : resps) r = detail::py_strip(r);
    } else if (step.function == "regex") {
      const tokenizer::PyRegex re(step.regex_pattern);
      for (auto& r : resps) {
        const auto matches = re.findall(r);
        if (matches.empty()) {
          r = step.fallback;
          continue;
        }
        const auto n = static_cast<int64_t>(matches.size());
        const int64_t k = step.group_select < 0 ? n + step.group_select : step.group_select;
        if (k < 0 || k >= n) throw Error(fmt::format("regex filter: group_select {} with {} matches", step.group_select, n));
        const auto& m = matches[static_cast<std::size_t>(k)];
        std::string picked = step.fallback;
        if (re.groups() <= 1) {
          picked = m[0];
        } else {
          for (const auto& g : m)
            if (!g.empty()) {
              picked = g;
              break;
            }
        }
        r = detail::py_strip(picked);
      }
    }
  }
  return resps;
}

bool higher_is_better(const std::string& metric) {
  return metric != "perplexity" && metric != "word_perplexity" && metric != "byte_perplexity" &&
         metric != "bits_per_byte";
}

/// Per-document items of a metric: a value, or (value, weight) for the weighted ones.
struct Items {
  std::vector<double> values, weights;
};

TaskMetric aggregate(const std::string& metric, const std::string& filter, const Items& it, int64_t iters) {
  TaskMetric m{metric, filter, 0, std::nullopt, higher_is_better(metric)};
  const std::size_t n = it.values.size();
  double sum = 0, wsum = 0;
  for (double v : it.values) sum += v;
  for (double w : it.weights) wsum += w;
  if (metric == "perplexity") {
    m.value = std::exp(-(sum / static_cast<double>(n)));
    if (iters > 0 && n > 1) m.stderr_value = bootstrap_perplexity_stderr(it.values, iters);
  } else if (metric == "word_perplexity" || metric == "byte_perplexity") {
    m.value = std::exp(-(sum / wsum));
  } else if (metric == "bits_per_byte") {
    m.value = -(sum / wsum) / std::log(2.0);
  } else {
    m.value = sum / static_cast<double>(n);
    if (iters > 0 && n > 1) m.stderr_value = mean_stderr(it.values);
  }
  return m;
}

/// The gold index (or indices) of a multiple-choice document; -100 where it is not a choice.
std::vector<int64_t> gold_of(const Task& task, const Doc& doc, const std::vector<std::string>& choices) {
  const ordered_json gold = task.multiple_input() ? task.doc_to_text(doc) : task.doc_to_target(doc);
  const auto n = static_cast<int64_t>(choices.size());
  auto index = [&](const ordered_json& g) -> int64_t {
    if (g.is_number_integer()) return g.get<int64_t>() < n ? g.get<int64_t>() : -100;
    if (g.is_string()) {
      const auto it = std::find(choices.begin(), choices.end(), g.get<std::string>());
      return it == choices.end() ? -100 : static_cast<int64_t>(it - choices.begin());
    }
    return -100;
  };
  std::vector<int64_t> out;
  if (gold.is_array())
    for (const auto& g : gold) out.push_back(index(g));
  else
    out.push_back(index(gold));
  return out;
}

std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct DocScores {
  std::map<std::string, double> values;       // per metric
  std::map<std::string, double> weights;      // the weighted metrics' weights
  ordered_json arguments = ordered_json::array();  // each request's arguments, as the harness logs them
  ordered_json resps, filtered;
};

DocScores score_choices(const Task& task, const Doc& doc, const std::vector<Loglikelihood>& lls) {
  DocScores s;
  const auto choices = task.doc_to_choice(doc);
  std::vector<double> ll, norm, bytes;
  for (std::size_t i = 0; i < lls.size(); ++i) {
    ll.push_back(lls[i].logprob);
    norm.push_back(lls[i].logprob / static_cast<double>(code_points(choices[i]).size()));
    bytes.push_back(lls[i].logprob / static_cast<double>(choices[i].size()));
    s.resps.push_back({lls[i].logprob, lls[i].greedy});
  }
  const auto gold = gold_of(task, doc, choices);
  if (std::find(gold.begin(), gold.end(), -100) != gold.end())
    std::cerr << fmt::format("warning: task {}: a label is not among the {} choices of a document; it is scored wrong\n",
                             task.name(), choices.size());
  auto hit = [&](std::size_t pred) {
    return std::find(gold.begin(), gold.end(), static_cast<int64_t>(pred)) != gold.end() ? 1.0 : 0.0;
  };
  s.values["acc"] = hit(argmax(ll));
  s.values["acc_norm"] = hit(argmax(norm));
  s.values["acc_bytes"] = hit(argmax(bytes));
  double em = 0;
  const auto n = static_cast<int64_t>(lls.size());
  for (int64_t g : gold) {
    if (g == -100) continue;
    if (g < -n) throw Error(fmt::format("task {}: gold index {} with {} choices", task.name(), g, n));
    if (lls[static_cast<std::size_t>(g < 0 ? g + n : g)].greedy) em = 1;  // Python's negative index
  }
  s.values["exact_match"] = em;
  s.filtered = s.resps;
  return s;
}

}  // namespace

// ------------------------------------------------------------------------------ run_task

namespace {

struct Prepared {
  std::vector<const Doc*> docs;
  std::vector<std::vector<std::string>> contexts;
};

Prepared prepare(const Task& task, int64_t shots, const RunOptions& o) {
  Prepared p;
  const auto& docs = task.eval_docs();
  const std::size_t n = o.limit > 0 ? std::min<std::size_t>(docs.size(), static_cast<std::size_t>(o.limit)) : docs.size();
  PyRandom rnd(o.fewshot_seed);
  for (std::size_t i = 0; i < n; ++i) {
    p.docs.push_back(&docs[i]);
    p.contexts.push_back(fewshot_context(task, docs[i], shots, rnd));
  }
  return p;
}

std::vector<DocScores> score_docs(const Task& task, LanguageModel& lm, const Prepared& p) {
  const auto& c = task.config();
  std::vector<DocScores> out(p.docs.size());
  switch (c.output_type) {
    case OutputType::MultipleChoice: {
      std::vector<std::vector<LoglikelihoodRequest>> groups;
      for (std::size_t i = 0; i < p.docs.size(); ++i) {
        std::vector<LoglikelihoodRequest> g;
        if (task.multiple_input()) {
          const auto cont = as_text(task, i, task.doc_to_target(*p.docs[i]), "doc_to_target");
          for (const auto& ctx : p.contexts[i]) g.push_back({ctx, c.target_delimiter + cont});
        } else {
          for (const auto& choice : task.doc_to_choice(*p.docs[i])) g.push_back({p.contexts[i][0], c.target_delimiter + choice});
        }
        groups.push_back(std::move(g));
      }
      const auto scored = lm.loglikelihood(groups);
      for (std::size_t i = 0; i < p.docs.size(); ++i) {
        out[i] = score_choices(task, *p.docs[i], scored[i]);
        for (const auto& r : groups[i]) out[i].arguments.push_back({r.context, r.continuation});
      }
      break;
    }
    case OutputType::Loglikelihood: {
      std::vector<std::vector<LoglikelihoodRequest>> groups;
      for (std::size_t i = 0; i < p.docs.size(); ++i)
        groups.push_back({{p.contexts[i][0], as_text(task, i, task.doc_to_target(*p.docs[i]), "doc_to_target")}});
      const auto scored = lm.loglikelihood(groups);
      for (std::size_t i = 0; i < p.docs.size(); ++i) {
        const auto& r = scored[i][0];
        out[i].values = {{"perplexity", r.logprob}, {"acc", r.greedy ? 1.0 : 0.0}};
        out[i].arguments.push_back({groups[i][0].context, groups[i][0].continuation});
        out[i].resps = ordered_json::array({ordered_json::array({r.logprob, r.greedy})});
        out[i].filtered = out[i].resps;
      }
      break;
    }
    case OutputType::LoglikelihoodRolling: {
      std::vector<std::string> texts;
      for (std::size_t i = 0; i < p.docs.size(); ++i)
        texts.push_back(as_text(task, i, task.doc_to_target(*p.docs[i]), "doc_to_target"));
      const auto scored = lm.loglikelihood_rolling(texts);
      for (std::size_t i = 0; i < p.docs.size(); ++i) {
        const auto counted = task.count_text(*p.docs[i]);
        const double bytes = static_cast<double>(counted.size());
        out[i].values = {{"word_perplexity", scored[i]}, {"byte_perplexity", scored[i]}, {"bits_per_byte", scored[i]}};
        out[i].weights = {{"word_perplexity", count_words(counted)}, {"byte_perplexity", bytes}, {"bits_per_byte", bytes}};
        out[i].arguments.push_back({texts[i]});
        out[i].resps = ordered_json::array({scored[i]});
        out[i].filtered = out[i].resps;
      }
      break;
    }
    case OutputType::GenerateUntil: {
      std::vector<GenerationRequest> requests;
      for (std::size_t i = 0; i < p.docs.size(); ++i) requests.push_back({p.contexts[i][0], c.until, c.max_gen_toks});
      const auto texts = lm.generate_until(requests);
      for (std::size_t i = 0; i < p.docs.size(); ++i) {
        out[i].resps = ordered_json::array({texts[i]});
        out[i].arguments.push_back(
            {requests[i].context, {{"until", requests[i].until}, {"max_gen_toks", requests[i].max_gen_toks}}});
      }
      break;
    }
  }
  return out;
}

/// generate_until: the filtered answer of each pipeline and its metrics, keyed "<metric>,<filter>".
void score_generation(const Task& task, const Doc& doc, DocScores& s) {
  const auto& c = task.config();
  ordered_json gold = task.doc_to_target(doc);
  if (!c.doc_to_choice.is_null()) {
    const auto choices = task.doc_to_choice(doc);
    if (!gold.is_number_integer() || gold.get<int64_t>() < 0 || gold.get<int64_t>() >= static_cast<int64_t>(choices.size()))
      throw Error(fmt::format("task {}: doc_to_target {} is not a choice index", task.name(), gold.dump()));
    gold = choices[static_cast<std::size_t>(gold.get<int64_t>())];
  }
  std::vector<std::string> golds;
  auto text_of = [](const ordered_json& g) {
    if (g.is_string()) return g.get<std::string>();
    if (g.is_boolean()) return std::string(g.get<bool>() ? "True" : "False");
    return g.dump();  // str() of a number
  };
  if (gold.is_array())
    for (const auto& g : gold) golds.push_back(text_of(g));
  else
    golds.push_back(text_of(gold));
  s.filtered = ordered_json::object();
  for (const auto& f : c.filters) {
    const auto filtered = apply_filters(f, {s.resps[0].get<std::string>()});
    const std::string answer = filtered.empty() ? "" : filtered[0];
    s.filtered[f.name] = answer;
    for (const auto& m : c.metrics) {
      double v = 0;
      for (const auto& g : golds) v = std::max(v, exact_match(answer, g, m));
      s.values[m.name + "," + f.name] = v;
    }
  }
}

}  // namespace

TaskResult run_task(const Task& task, LanguageModel& lm, const RunOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& c = task.config();
  TaskResult r;
  r.task = task.name();
  r.output_type = c.output_type;
  r.num_fewshot = o.num_fewshot >= 0 ? o.num_fewshot : c.num_fewshot;
  // A rolling task scores whole documents: the harness builds no context for them.
  if (c.output_type == OutputType::LoglikelihoodRolling) r.num_fewshot = 0;
  const Prepared p = prepare(task, r.num_fewshot, o);
  auto scores = score_docs(task, lm, p);
  if (c.output_type == OutputType::GenerateUntil)
    for (std::size_t i = 0; i < scores.size(); ++i) score_generation(task, *p.docs[i], scores[i]);
  r.documents = static_cast<int64_t>(p.docs.size());
  for (const auto& f : c.filters) {
    for (const auto& m : c.metrics) {
      Items items;
      const std::string key = c.output_type == OutputType::GenerateUntil ? m.name + "," + f.name : m.name;
      for (const auto& s : scores) {
        items.values.push_back(s.values.at(key));
        if (auto w = s.weights.find(m.name); w != s.weights.end()) items.weights.push_back(w->second);
      }
      r.metrics.push_back(aggregate(m.name, f.name, items, o.bootstrap_iters));
    }
  }
  if (o.keep_samples) {
    for (std::size_t i = 0; i < scores.size(); ++i) {
      ordered_json s = {{"doc_id", i},
                        {"target", task.doc_to_target(*p.docs[i])},
                        {"arguments", scores[i].arguments},
                        {"resps", scores[i].resps},
                        {"filtered_resps", scores[i].filtered}};
      for (const auto& [k, v] : scores[i].values) s["metrics"][k] = v;
      r.samples.push_back(std::move(s));
    }
  }
  r.config = c.source;
  r.config["num_fewshot"] = r.num_fewshot;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::optional<TaskMetric> TaskResult::find(const std::string& metric, const std::string& filter) const {
  for (const auto& m : metrics)
    if (m.metric == metric && (filter.empty() || m.filter == filter)) return m;
  return std::nullopt;
}

ordered_json TaskResult::to_json() const {
  ordered_json m = ordered_json::object();
  for (const auto& x : metrics) {
    m[x.key()] = x.value;
    m[x.metric + "_stderr," + x.filter] = x.stderr_value ? ordered_json(*x.stderr_value) : ordered_json("N/A");
  }
  return {{"task", task},         {"output_type", enum_name(output_type)}, {"num_fewshot", num_fewshot},
          {"documents", documents}, {"seconds", seconds},                   {"metrics", m},
          {"config", config}};
}

std::string results_table(const std::vector<TaskResult>& results) {
  std::vector<std::array<std::string, 6>> rows = {{"task", "filter", "n-shot", "metric", "value", "stderr"}};
  for (const auto& r : results)
    for (const auto& m : r.metrics)
      rows.push_back({r.task, m.filter, std::to_string(r.num_fewshot), m.metric + (m.higher_is_better ? " ↑" : " ↓"),
                      fmt::format("{:.4f}", m.value), m.stderr_value ? fmt::format("± {:.4f}", *m.stderr_value) : "N/A"});
  std::array<std::size_t, 6> width{};
  for (const auto& row : rows)
    for (std::size_t k = 0; k < 6; ++k) width[k] = std::max(width[k], code_points(row[k]).size());
  std::string out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string line;
    for (std::size_t k = 0; k < 6; ++k) {
      const auto pad = width[k] - code_points(rows[i][k]).size();
      line += (k ? " | " : "| ") + (k >= 4 ? std::string(pad, ' ') + rows[i][k] : rows[i][k] + std::string(pad, ' '));
    }
    out += line + " |\n";
    if (i == 0) {
      std::string rule;
      for (std::size_t k = 0; k < 6; ++k) rule += (k ? "-|-" : "|-") + std::string(width[k], '-');
      out += rule + "-|\n";
    }
  }
  return out;
}

}  // namespace lathe::eval
