#include "lathe/eval/task.hpp"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "lathe/core/error.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "py_literal.hpp"

namespace lathe::eval {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

/// A task file's problem, named by file, line and key.
[[noreturn]] void fail(const fs::path& file, const YAML::Node& at, const std::string& key, const std::string& msg) {
  const auto mark = at.Mark();
  if (mark.line >= 0) throw Error(fmt::format("{}:{}: {}: {}", file.string(), mark.line + 1, key, msg));
  throw Error(fmt::format("{}: {}: {}", file.string(), key, msg));
}

/// A YAML node as JSON: plain scalars typed by YAML's core schema, quoted ones as strings.
ordered_json to_json(const fs::path& file, const YAML::Node& n, const std::string& key) {
  if (n.Tag() == "!function")
    fail(file, n, key, "a Python function (!function) cannot run here; write the rule as a Jinja template");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Sequence: {
      ordered_json out = ordered_json::array();
      for (std::size_t i = 0; i < n.size(); ++i) out.push_back(to_json(file, n[i], fmt::format("{}[{}]", key, i)));
      return out;
    }
    case YAML::NodeType::Map: {
      ordered_json out = ordered_json::object();
      for (const auto& kv : n) {
        const auto k = kv.first.as<std::string>();
        out[k] = to_json(file, kv.second, key.empty() ? k : key + "." + k);
      }
      return out;
    }
    case YAML::NodeType::Scalar: break;
  }
  const std::string s = n.Scalar();
  if (n.Tag() != "?") return s;  // quoted: a string
  if (s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  char* end = nullptr;
  const long long i = std::strtoll(s.c_str(), &end, 10);
  if (!s.empty() && end == s.c_str() + s.size()) return static_cast<int64_t>(i);
  const double d = std::strtod(s.c_str(), &end);
  if (!s.empty() && end == s.c_str() + s.size() && s.find_first_of("0123456789") != std::string::npos) return d;
  return s;
}

const std::set<std::string>& known_keys() {
  static const std::set<std::string> keys = {
      "task", "task_alias", "tag", "group", "output_type", "dataset_path", "dataset_name", "dataset_kwargs", "data",
      "training_split", "validation_split", "test_split", "fewshot_split", "description", "doc_to_text",
      "doc_to_target", "doc_to_choice", "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot",
      "metric_list", "generation_kwargs", "filter_list", "metadata", "should_decontaminate",
      "doc_to_decontamination_query", "repeats", "unsafe_code", "include", "count_text"};
  return keys;
}

/// Keys of the harness that need Python or a dataset hub, refused with the reason.
const std::map<std::string, std::string>& refused_keys() {
  static const std::map<std::string, std::string> keys = {
      {"process_docs", "documents are scored as the files hold them; prepare the file instead"},
      {"process_results", "custom scoring needs Python; use metric_list"},
      {"custom_dataset", "documents come from local files (data: or dataset_kwargs.data_files)"},
      {"use_prompt", "promptsource prompts are not available; write doc_to_text"},
      {"doc_to_image", "only text tasks are scored"},
      {"doc_to_audio", "only text tasks are scored"},
      {"gen_prefix", "not supported; put the prefix at the end of doc_to_text"},
  };
  return keys;
}

/// The task file's map with `include:` resolved: the included file's keys, then this file's.
YAML::Node read_with_includes(const fs::path& file, int depth, std::vector<fs::path>& includes) {
  if (depth > 8) throw Error(file.string() + ": include: nested more than 8 files deep");
  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::BadFile&) {
    throw Error("cannot read task file " + file.string());
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}:{}:{}: {}", file.string(), e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsMap()) throw Error(file.string() + ": a task file is a mapping of keys (task:, output_type:, ...)");
  if (!root["include"]) return root;
  const fs::path base = file.parent_path() / root["include"].as<std::string>();
  if (!fs::exists(base)) fail(file, root["include"], "include", "no such file: " + base.string());
  includes.push_back(fs::absolute(base).lexically_normal());
  YAML::Node merged = read_with_includes(base, depth + 1, includes);
  for (const auto& kv : root)
    if (kv.first.as<std::string>() != "include") merged[kv.first.as<std::string>()] = kv.second;
  return merged;
}

void read_data_files(TaskConfig& c, const YAML::Node& root, const fs::path& dir) {
  // data: is relative to the task file; dataset_kwargs.data_files to the working directory, as
  // the datasets library reads it.
  auto add = [&](const std::string& split, const YAML::Node& path, const std::string& key) {
    if (!path.IsScalar()) fail(c.file, path, key, "expected a file path");
    fs::path p = path.as<std::string>();
    const bool lathe_form = key == "data" || key.starts_with("data.");
    if (p.is_relative() && lathe_form) p = dir / p;
    if (!fs::is_regular_file(p)) fail(c.file, path, key, "no such file: " + p.string());
    c.data_files[split] = fs::absolute(p).lexically_normal();
  };
  auto add_all = [&](const YAML::Node& files, const std::string& key) {
    if (files.IsScalar()) return add("train", files, key);  // datasets names a lone file's split "train"
    if (!files.IsMap()) fail(c.file, files, key, "expected a mapping of split: file");
    for (const auto& kv : files) add(kv.first.as<std::string>(), kv.second, key + "." + kv.first.as<std::string>());
  };
  if (root["data"]) add_all(root["data"], "data");
  if (root["dataset_path"]) {
    const auto kind = root["dataset_path"].as<std::string>();
    if (kind != "json" && kind != "csv")
      fail(c.file, root["dataset_path"], "dataset_path",
           "'" + kind + "' would be downloaded; tasks read local files: dataset_path json or csv with "
                        "dataset_kwargs.data_files, or data: {test: FILE}");
    const auto kwargs = root["dataset_kwargs"];
    if (!kwargs || !kwargs["data_files"]) fail(c.file, root["dataset_path"], "dataset_kwargs.data_files", "missing");
    add_all(kwargs["data_files"], "dataset_kwargs.data_files");
  }
  if (c.data_files.empty()) fail(c.file, root, "data", "no documents: give data: {test: FILE} (paths relative to the task file)");
}

void read_splits(TaskConfig& c, const YAML::Node& root) {
  const bool named = root["training_split"] || root["validation_split"] || root["test_split"];
  auto get = [&](const char* key, const char* implied) -> std::string {
    if (root[key]) return root[key].as<std::string>();
    return !named && c.data_files.count(implied) ? implied : "";
  };
  c.training_split = get("training_split", "train");
  c.validation_split = get("validation_split", "validation");
  c.test_split = get("test_split", "test");
  if (root["fewshot_split"]) c.fewshot_split = root["fewshot_split"].as<std::string>();
  for (const auto& [key, split] : {std::pair<const char*, std::string&>{"training_split", c.training_split},
                                   {"validation_split", c.validation_split},
                                   {"test_split", c.test_split},
                                   {"fewshot_split", c.fewshot_split}})
    if (!split.empty() && !c.data_files.count(split))
      fail(c.file, root[key] ? root[key] : root, key, "no file for split '" + split + "'");
  if (c.test_split.empty() && c.validation_split.empty())
    fail(c.file, root, "test_split", "name the split to score (test_split or validation_split)");
}

const std::map<OutputType, std::vector<std::string>>& metrics_of() {
  static const std::map<OutputType, std::vector<std::string>> m = {
      {OutputType::MultipleChoice, {"acc", "acc_norm", "acc_bytes", "exact_match"}},
      {OutputType::Loglikelihood, {"perplexity", "acc"}},
      {OutputType::LoglikelihoodRolling, {"word_perplexity", "byte_perplexity", "bits_per_byte"}},
      {OutputType::GenerateUntil, {"exact_match"}},
  };
  return m;
}

/// The harness's DEFAULT_METRIC_REGISTRY.
std::vector<std::string> default_metrics(OutputType t) {
  switch (t) {
    case OutputType::MultipleChoice: return {"acc", "acc_norm"};
    case OutputType::Loglikelihood: return {"perplexity", "acc"};
    case OutputType::LoglikelihoodRolling: return {"word_perplexity", "byte_perplexity", "bits_per_byte"};
    case OutputType::GenerateUntil: return {"exact_match"};
  }
  return {};
}

/// The harness's aggregation of each metric.
std::string aggregation_of(const std::string& metric) {
  if (metric == "perplexity") return "perplexity";
  if (metric == "word_perplexity" || metric == "byte_perplexity") return "weighted_perplexity";
  if (metric == "bits_per_byte") return "bits_per_byte";
  return "mean";
}

void read_metrics(TaskConfig& c, const YAML::Node& root) {
  const auto& allowed = metrics_of().at(c.output_type);
  if (!root["metric_list"]) {
    for (const auto& name : default_metrics(c.output_type)) {
      MetricSpec m;
      m.name = name;
      c.metrics.push_back(std::move(m));
    }
    return;
  }
  const auto list = root["metric_list"];
  if (!list.IsSequence()) fail(c.file, list, "metric_list", "expected a list of {metric: NAME, ...}");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const auto e = list[i];
    const std::string key = fmt::format("metric_list[{}]", i);
    if (!e.IsMap() || !e["metric"]) fail(c.file, e, key, "expected {metric: NAME, ...}");
    MetricSpec m;
    m.name = e["metric"].as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), m.name) == allowed.end())
      fail(c.file, e, key + ".metric",
           fmt::format("'{}' is not a metric of {} tasks here (they are: {})", m.name, enum_name(c.output_type),
                       fmt::join(allowed, ", ")));
    for (const auto& kv : e) {
      const auto k = kv.first.as<std::string>();
      if (k == "metric" || k == "higher_is_better") continue;
      if (k == "aggregation") {
        if (kv.second.as<std::string>() != aggregation_of(m.name))
          fail(c.file, kv.second, key + ".aggregation",
               fmt::format("{} is aggregated by {} here", m.name, aggregation_of(m.name)));
      } else if (m.name == "exact_match" && k == "ignore_case") {
        m.ignore_case = kv.second.as<bool>();
      } else if (m.name == "exact_match" && k == "ignore_punctuation") {
        m.ignore_punctuation = kv.second.as<bool>();
      } else if (m.name == "exact_match" && k == "ignore_numbers") {
        m.ignore_numbers = kv.second.as<bool>();
      } else if (m.name == "exact_match" && k == "regexes_to_ignore") {
        m.regexes_to_ignore = kv.second.IsSequence() ? kv.second.as<std::vector<std::string>>()
                                                     : std::vector<std::string>{kv.second.as<std::string>()};
      } else {
        fail(c.file, kv.first, key + "." + k, "unknown option of " + m.name);
      }
    }
    c.metrics.push_back(std::move(m));
  }
}

void read_generation(TaskConfig& c, const YAML::Node& root) {
  c.until = {c.fewshot_delimiter};
  const auto g = root["generation_kwargs"];
  if (!g) return;
  if (!g.IsMap()) fail(c.file, g, "generation_kwargs", "expected a mapping");
  for (const auto& kv : g) {
    const auto k = kv.first.as<std::string>();
    const std::string key = "generation_kwargs." + k;
    if (k == "until") {
      c.until = kv.second.IsSequence() ? kv.second.as<std::vector<std::string>>()
                                       : std::vector<std::string>{kv.second.as<std::string>()};
    } else if (k == "max_gen_toks" || k == "max_new_tokens") {
      if (k == "max_new_tokens" && g["max_gen_toks"]) continue;  // the harness prefers max_gen_toks
      c.max_gen_toks = kv.second.as<int64_t>();
      if (c.max_gen_toks < 1) fail(c.file, kv.second, key, "must be >= 1");
    } else if (k == "do_sample") {
      if (kv.second.as<bool>()) fail(c.file, kv.second, key, "only greedy decoding is scored (do_sample: false)");
    } else if (k == "temperature") {
      // The harness samples when temperature > 0 unless do_sample is false.
      const bool greedy = g["do_sample"] && !g["do_sample"].as<bool>();
      if (kv.second.as<double>() != 0.0 && !greedy)
        fail(c.file, kv.second, key, "only greedy decoding is scored (temperature: 0, or do_sample: false)");
    } else {
      fail(c.file, kv.first, key, "unknown generation option (until, max_gen_toks, do_sample, temperature)");
    }
  }
}

void read_filters(TaskConfig& c, const YAML::Node& root) {
  const auto list = root["filter_list"];
  if (!list) {
    c.filters = {{"none", {{"take_first"}}}};
    return;
  }
  if (!list.IsSequence()) fail(c.file, list, "filter_list", "expected a list of {name, filter: [...]}");
  static const std::set<std::string> functions = {"regex", "take_first", "lowercase", "uppercase", "remove_whitespace"};
  for (std::size_t i = 0; i < list.size(); ++i) {
    const auto e = list[i];
    const std::string key = fmt::format("filter_list[{}]", i);
    if (!e.IsMap() || !e["name"] || !e["filter"] || !e["filter"].IsSequence())
      fail(c.file, e, key, "expected {name: NAME, filter: [{function: ...}, ...]}");
    FilterPipeline p{e["name"].as<std::string>(), {}};
    for (std::size_t j = 0; j < e["filter"].size(); ++j) {
      const auto f = e["filter"][j];
      const std::string fkey = fmt::format("{}.filter[{}]", key, j);
      if (!f.IsMap() || !f["function"]) fail(c.file, f, fkey, "expected {function: NAME, ...}");
      FilterStep s{f["function"].as<std::string>()};
      if (!functions.count(s.function))
        fail(c.file, f["function"], fkey + ".function",
             fmt::format("'{}' is not a filter here (they are: {})", s.function, fmt::join(functions, ", ")));
      for (const auto& kv : f) {
        const auto k = kv.first.as<std::string>();
        if (k == "function") continue;
        if (s.function == "regex" && k == "regex_pattern") s.regex_pattern = kv.second.as<std::string>();
        else if (s.function == "regex" && k == "group_select") s.group_select = kv.second.as<int64_t>();
        else if (s.function == "regex" && k == "fallback") s.fallback = kv.second.as<std::string>();
        else fail(c.file, kv.first, fkey + "." + k, "unknown option of the " + s.function + " filter");
      }
      p.steps.push_back(std::move(s));
    }
    c.filters.push_back(std::move(p));
  }
}

void read_fewshot(TaskConfig& c, const YAML::Node& root) {
  if (root["num_fewshot"]) {
    c.num_fewshot = root["num_fewshot"].as<int64_t>();
    if (c.num_fewshot < 0) fail(c.file, root["num_fewshot"], "num_fewshot", "must be >= 0");
  }
  const auto f = root["fewshot_config"];
  if (!f) return;
  if (!f.IsMap()) fail(c.file, f, "fewshot_config", "expected a mapping");
  for (const auto& kv : f) {
    const auto k = kv.first.as<std::string>();
    if (k == "sampler") {
      const auto s = kv.second.as<std::string>();
      if (s != "default" && s != "first_n") fail(c.file, kv.second, "fewshot_config.sampler", "default or first_n");
      c.first_n_sampler = s == "first_n";
    } else {
      fail(c.file, kv.first, "fewshot_config." + k, "unknown option (sampler)");
    }
  }
}

std::string scalar_or(const YAML::Node& root, const char* key, std::string fallback) {
  return root[key] ? root[key].as<std::string>() : std::move(fallback);
}

}  // namespace

TaskConfig load_task(const fs::path& path) {
  TaskConfig c;
  c.file = fs::absolute(path).lexically_normal();
  YAML::Node root = read_with_includes(c.file, 0, c.includes);
  // A key set to null (the harness writes `test_split: null`) is a key left unset.
  std::vector<std::string> nulls;
  for (const auto& kv : root)
    if (kv.second.IsNull()) nulls.push_back(kv.first.as<std::string>());
  for (const auto& k : nulls) root.remove(k);
  for (const auto& kv : root) {
    const auto k = kv.first.as<std::string>();
    if (auto r = refused_keys().find(k); r != refused_keys().end()) fail(c.file, kv.first, k, r->second);
    if (!known_keys().count(k)) fail(c.file, kv.first, k, "unknown key of a task file");
  }
  try {
    c.source = to_json(c.file, root, "");
    if (!root["task"]) fail(c.file, root, "task", "missing: name the task");
    c.name = root["task"].as<std::string>();
    if (root["output_type"]) {
      const auto t = root["output_type"].as<std::string>();
      const auto parsed = parse_enum<OutputType>(t);
      if (!parsed) fail(c.file, root["output_type"], "output_type", "one of " + enum_choices<OutputType>());
      c.output_type = *parsed;
    }
    read_data_files(c, root, c.file.parent_path());
    read_splits(c, root);
    for (auto [key, field] : {std::pair<const char*, ordered_json*>{"description", &c.description},
                              {"doc_to_text", &c.doc_to_text},
                              {"doc_to_target", &c.doc_to_target},
                              {"doc_to_choice", &c.doc_to_choice},
                              {"count_text", &c.count_text}})
      if (root[key]) *field = to_json(c.file, root[key], key);
    if (c.doc_to_text.is_null() && c.output_type != OutputType::LoglikelihoodRolling)
      fail(c.file, root, "doc_to_text", "missing");
    if (c.doc_to_target.is_null()) fail(c.file, root, "doc_to_target", "missing");
    if (c.output_type == OutputType::MultipleChoice && c.doc_to_choice.is_null())
      fail(c.file, root, "doc_to_choice", "missing: a multiple_choice task needs its choices");
    c.target_delimiter = scalar_or(root, "target_delimiter", " ");
    c.fewshot_delimiter = scalar_or(root, "fewshot_delimiter", "\n\n");
    if (root["repeats"] && root["repeats"].as<int64_t>() != 1)
      fail(c.file, root["repeats"], "repeats", "only 1 (greedy decoding gives one answer)");
    read_fewshot(c, root);
    read_metrics(c, root);
    read_generation(c, root);
    read_filters(c, root);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}:{}: {}", c.file.string(), e.mark.line + 1, e.msg));
  }
  return c;
}

// ------------------------------------------------------------------------------ documents

namespace {

std::vector<std::string> csv_row(const std::string& text, std::size_t& pos, const fs::path& file, int& line) {
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false;
  for (; pos < text.size(); ++pos) {
    const char c = text[pos];
    if (quoted) {
      if (c == '"' && pos + 1 < text.size() && text[pos + 1] == '"') cell.push_back('"'), ++pos;
      else if (c == '"') quoted = false;
      else cell.push_back(c), line += c == '\n';
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(cell));
      cell.clear();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && pos + 1 < text.size() && text[pos + 1] == '\n') ++pos;
      ++pos;
      ++line;
      break;
    } else {
      cell.push_back(c);
    }
  }
  if (quoted) throw Error(fmt::format("{}:{}: a quoted CSV field is not closed", file.string(), line));
  row.push_back(std::move(cell));
  return row;
}

/// The cells pandas (the datasets library's CSV reader) reads as missing.
bool csv_missing(const std::string& v) {
  static const std::set<std::string> na = {"",     "#N/A", "#N/A N/A", "#NA",  "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                                           "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",      "NULL",     "NaN",  "None",
                                           "n/a",  "nan",  "null"};
  return na.count(v) > 0;
}

std::vector<Doc> read_csv(const std::string& text, const fs::path& file) {
  std::size_t pos = 0;
  int line = 1;
  const auto header = csv_row(text, pos, file, line);
  std::vector<std::vector<std::string>> rows;
  while (pos < text.size()) {
    const int at = line;
    auto row = csv_row(text, pos, file, line);
    if (row.size() == 1 && row[0].empty()) continue;
    if (row.size() != header.size())
      throw Error(fmt::format("{}:{}: {} fields where the header has {}", file.string(), at, row.size(), header.size()));
    rows.push_back(std::move(row));
  }
  // A column's type as pandas infers it: bool (True / False), int, float (an int column with a
  // missing cell too), else string; missing cells are null.
  std::vector<char> kind(header.size(), '?');
  for (std::size_t k = 0; k < header.size(); ++k) {
    bool any = false, missing = false, ints = true, nums = true, bools = true;
    for (const auto& row : rows) {
      const auto& v = row[k];
      if (csv_missing(v)) {
        missing = true;
        continue;
      }
      any = true;
      char* end = nullptr;
      (void)std::strtoll(v.c_str(), &end, 10);
      ints = ints && end == v.c_str() + v.size();
      (void)std::strtod(v.c_str(), &end);
      nums = nums && end == v.c_str() + v.size();
      bools = bools && (v == "True" || v == "False");
    }
    kind[k] = !any ? 's' : bools ? 'b' : ints && !missing ? 'i' : nums ? 'f' : 's';
  }
  std::vector<Doc> docs;
  for (const auto& row : rows) {
    Doc d = Doc::object();
    for (std::size_t k = 0; k < row.size(); ++k) {
      if (csv_missing(row[k])) d[header[k]] = nullptr;
      else if (kind[k] == 'b') d[header[k]] = row[k] == "True";
      else if (kind[k] == 'i') d[header[k]] = static_cast<int64_t>(std::strtoll(row[k].c_str(), nullptr, 10));
      else if (kind[k] == 'f') d[header[k]] = std::strtod(row[k].c_str(), nullptr);
      else d[header[k]] = row[k];
    }
    docs.push_back(std::move(d));
  }
  return docs;
}

/// JSON documents as the datasets library gives them: every column in every document (null
/// where one lacks it) and a column of integers and numbers read as numbers.
void unify_columns(std::vector<Doc>& docs) {
  std::vector<std::string> columns;
  std::set<std::string> seen, floats;
  for (const auto& d : docs)
    for (const auto& [k, v] : d.items()) {
      if (seen.insert(k).second) columns.push_back(k);
      if (v.is_number_float()) floats.insert(k);
    }
  for (auto& d : docs) {
    Doc out = Doc::object();
    for (const auto& c : columns) {
      const auto it = d.find(c);
      if (it == d.end()) out[c] = nullptr;
      else if (floats.count(c) && it->is_number_integer()) out[c] = it->get<double>();
      else out[c] = *it;
    }
    d = std::move(out);
  }
}

}  // namespace

std::vector<Doc> read_documents(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot read documents file " + file.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (file.extension() == ".csv") return read_csv(text, file);
  std::vector<Doc> docs;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    try {
      const auto all = ordered_json::parse(text);
      for (const auto& d : all) docs.push_back(d);
    } catch (const nlohmann::json::exception& e) {
      throw Error(file.string() + ": " + e.what());
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    for (int lineno = 1; std::getline(lines, line); ++lineno) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      try {
        docs.push_back(ordered_json::parse(line));
      } catch (const nlohmann::json::exception& e) {
        throw Error(fmt::format("{}:{}: {}", file.string(), lineno, e.what()));
      }
    }
  }
  for (std::size_t i = 0; i < docs.size(); ++i)
    if (!docs[i].is_object())
      throw Error(fmt::format("{}: document {} is not a JSON object", file.string(), i + 1));
  if (docs.empty()) throw Error(file.string() + ": no documents");
  unify_columns(docs);
  return docs;
}

// ------------------------------------------------------------------------------ Task

Task::Task(TaskConfig config) : config_(std::move(config)) {
  for (const auto& [split, file] : config_.data_files) {
    const bool used = split == config_.test_split || split == config_.validation_split ||
                      split == config_.training_split || split == config_.fewshot_split;
    if (used) splits_[split] = read_documents(file);
  }
  const Doc& first = eval_docs().at(0);
  if (!config_.doc_to_choice.is_null()) multiple_input_ = doc_to_text(first).is_number_integer();
  multiple_target_ = doc_to_target(first).is_array();
}

Task::~Task() = default;
Task::Task(Task&&) noexcept = default;

const std::vector<Doc>& Task::split(const std::string& name) const { return splits_.at(name); }

const std::vector<Doc>& Task::eval_docs() const {
  return split(config_.test_split.empty() ? config_.validation_split : config_.test_split);
}

const std::vector<Doc>& Task::fewshot_docs() const {
  if (!config_.fewshot_split.empty()) return split(config_.fewshot_split);
  if (!config_.training_split.empty()) return split(config_.training_split);
  if (!config_.validation_split.empty()) return split(config_.validation_split);
  return split(config_.test_split);
}

bool Task::fewshot_from_eval_split() const {
  // The harness passes the scored document to its sampler (which then never shows it as an
  // example) when fewshot_split equals test_split, two unset ones included.
  return config_.fewshot_split == config_.test_split;
}

std::string Task::render(const std::string& key, const std::string& source, const Doc& doc) const {
  auto& t = templates_[source];
  if (!t) t = std::make_shared<tokenizer::TextTemplate>(source, config_.file.string() + ": " + key);
  return t->render(doc);
}

namespace {

bool is_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

}  // namespace

ordered_json Task::doc_to_text(const Doc& doc) const {
  const auto& spec = config_.doc_to_text;
  if (spec.is_number_integer() || spec.is_null()) return spec;
  if (!spec.is_string()) throw Error(config_.file.string() + ": doc_to_text: expected a string or an integer");
  const auto s = spec.get<std::string>();
  if (doc.contains(s)) return doc[s];
  const auto text = render("doc_to_text", s, doc);
  if (is_digits(text) && !config_.doc_to_choice.is_null()) return std::stoll(text);
  return text;
}

ordered_json Task::doc_to_target(const Doc& doc) const {
  const auto& spec = config_.doc_to_target;
  if (spec.is_number_integer() || spec.is_array()) return spec;
  if (!spec.is_string()) throw Error(config_.file.string() + ": doc_to_target: expected a string, an integer or a list");
  const auto s = spec.get<std::string>();
  if (doc.contains(s)) return doc[s];
  const auto text = render("doc_to_target", s, doc);
  if (is_digits(text) && !config_.doc_to_choice.is_null()) return std::stoll(text);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    if (auto v = detail::literal_eval(text)) return *v;
  return text;
}

std::vector<std::string> Task::doc_to_choice(const Doc& doc) const {
  const auto& spec = config_.doc_to_choice;
  ordered_json list;
  if (spec.is_array()) {
    list = spec;
  } else if (spec.is_object()) {
    for (const auto& [k, v] : spec.items()) list.push_back(v);
  } else if (spec.is_string()) {
    const auto s = spec.get<std::string>();
    if (doc.contains(s)) {
      list = doc[s];
    } else {
      const auto text = render("doc_to_choice", s, doc);
      auto v = detail::literal_eval(text);
      if (!v) throw Error(fmt::format("{}: doc_to_choice: '{}' is not a Python list", config_.file.string(), text));
      list = std::move(*v);
    }
  } else {
    throw Error(config_.file.string() + ": doc_to_choice: expected a field, a template or a list");
  }
  if (!list.is_array()) throw Error(config_.file.string() + ": doc_to_choice: did not give a list");
  std::vector<std::string> out;
  for (const auto& c : list) {
    if (!c.is_string()) throw Error(config_.file.string() + ": doc_to_choice: every choice must be a string, got " + c.dump());
    out.push_back(c.get<std::string>());
  }
  return out;
}

std::string Task::count_text(const Doc& doc) const {
  const auto& spec = config_.count_text;
  if (spec.is_null()) {
    const auto t = doc_to_target(doc);
    return t.is_string() ? t.get<std::string>() : t.dump();
  }
  if (!spec.is_string()) throw Error(config_.file.string() + ": count_text: expected a field or a template");
  const auto s = spec.get<std::string>();
  if (doc.contains(s)) return doc[s].is_string() ? doc[s].get<std::string>() : doc[s].dump();
  return render("count_text", s, doc);
}

std::string Task::description(const Doc& doc) const {
  const auto& spec = config_.description;
  if (!spec.is_string()) return "";
  const auto s = spec.get<std::string>();
  if (s.empty()) return "";
  if (doc.contains(s)) return doc[s].is_string() ? doc[s].get<std::string>() : doc[s].dump();
  return render("description", s, doc);
}

}  // namespace lathe::eval
