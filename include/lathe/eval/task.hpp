// A task as lm-evaluation-harness defines one, read from a YAML file: which documents (local
// JSONL / JSON / CSV files, nothing is downloaded), how a document becomes a prompt, its choices
// and its target (doc_to_text / doc_to_choice / doc_to_target as field names, Jinja templates or
// literals), how requests are scored (output_type) and which metrics, filters and few-shot
// examples the harness would use.
//
// The file is the harness's own task YAML, less what needs Python: a harness task that reads
// local files with `dataset_path: json` (or csv) and `dataset_kwargs: {data_files: ...}` is read
// as it is, and `data: {test: FILE, train: FILE}` is lathe's shorter spelling of the same
// (paths relative to the task file). `!function` entries, process_docs, process_results and
// custom samplers are refused by key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/core/enum_table.hpp"

namespace lathe::tokenizer {
class TextTemplate;
}

namespace lathe::eval {

/// A document of a task: a JSON object, keys in file order.
using Doc = nlohmann::ordered_json;

/// How a task's requests are scored, as the harness's output_type names them.
enum class OutputType : uint8_t {
  MultipleChoice,        // each choice's log-likelihood after the context
  Loglikelihood,         // the target's log-likelihood and whether greedy decoding gives it
  LoglikelihoodRolling,  // a whole document's log-likelihood over rolling windows
  GenerateUntil,         // greedy generation up to a stop string, then filters and a match
};

/// One step of a filter pipeline (the harness's filter_list): regex, take_first, lowercase,
/// uppercase, remove_whitespace.
struct FilterStep {
  std::string function;
  std::string regex_pattern = "#### (\\-?[0-9\\.\\,]+)";  // regex: the harness's default
  int64_t group_select = 0;                                // regex: which match (negative: from the end)
  std::string fallback = "[invalid]";                      // regex: the answer when nothing matches
};

/// A named filter pipeline; its metrics are reported as "<metric>,<name>".
struct FilterPipeline {
  std::string name;
  std::vector<FilterStep> steps;
};

/// A metric of metric_list with its options (exact_match's).
struct MetricSpec {
  std::string name;
  std::vector<std::string> regexes_to_ignore;
  bool ignore_case = false;
  bool ignore_punctuation = false;
  bool ignore_numbers = false;
};

/// A task file as read and checked.
struct TaskConfig {
  std::string name;                                          // task:
  std::filesystem::path file;                                // the YAML file it came from
  std::vector<std::filesystem::path> includes;               // the files its include: chain read
  OutputType output_type = OutputType::GenerateUntil;        // the harness's default
  std::map<std::string, std::filesystem::path> data_files;   // split -> file (absolute)
  std::string training_split, validation_split, test_split;  // split names ("" when absent)
  std::string fewshot_split;                                 // "": training, else validation, else test
  bool first_n_sampler = false;  // fewshot_config.sampler first_n: the first examples, in order
  /// A doc_to_* entry: a string (a field name, or a Jinja template), an integer, or a list.
  nlohmann::ordered_json description = "", doc_to_text, doc_to_target, doc_to_choice;
  /// lathe's: for loglikelihood_rolling, the text whose words and UTF-8 bytes the perplexities
  /// are per (a field or template); null: the scored text. WikiText's harness task counts its
  /// page before detokenizing it (its process_results).
  nlohmann::ordered_json count_text;
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  int64_t num_fewshot = 0;
  std::vector<MetricSpec> metrics;         // empty in the file: the output type's defaults
  std::vector<std::string> until;          // generate_until: stop strings (default: fewshot_delimiter)
  int64_t max_gen_toks = 256;              // generate_until: tokens generated at most
  std::vector<FilterPipeline> filters;     // empty in the file: "none", take_first
  nlohmann::ordered_json source;           // the YAML as read, for eval.json
};

/// Reads and checks a task file. Throws lathe::Error naming the file and the key (and line) of
/// each problem: an unknown key, a Python-only entry, a missing split file, an unknown metric.
TaskConfig load_task(const std::filesystem::path& file);

/// The documents of a JSONL, JSON (a list of objects, or JSON Lines) or CSV (a header row;
/// integer and number columns read as such, as the datasets library infers them) file. Throws
/// lathe::Error naming the file and line.
std::vector<Doc> read_documents(const std::filesystem::path& file);

/// A loaded task: its documents and the harness's doc_to_* rules over them.
class Task {
 public:
  /// Reads the documents of every split the task names.
  explicit Task(TaskConfig config);
  ~Task();
  Task(Task&&) noexcept;

  const TaskConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  /// The documents scored: the test split, else the validation split.
  const std::vector<Doc>& eval_docs() const;
  /// The pool of few-shot examples: fewshot_split, else training, else validation, else test.
  const std::vector<Doc>& fewshot_docs() const;
  /// Whether the few-shot pool is the split being scored (the harness then never shows a
  /// document as its own example).
  bool fewshot_from_eval_split() const;
  /// doc_to_text gave an integer (the index of the right choice) for the first document:
  /// the choices are contexts and the target the continuation (Winogrande's partial scoring).
  bool multiple_input() const { return multiple_input_; }
  /// doc_to_target gave a list for the first document: several right answers.
  bool multiple_target() const { return multiple_target_; }

  /// The harness's doc_to_text / doc_to_target / doc_to_choice / description of `doc`: a field's
  /// value, a rendered template (read back as an integer or a list where the harness does),
  /// or the literal. Throws lathe::Error naming the task and the key.
  nlohmann::ordered_json doc_to_text(const Doc& doc) const;
  nlohmann::ordered_json doc_to_target(const Doc& doc) const;
  std::vector<std::string> doc_to_choice(const Doc& doc) const;
  std::string description(const Doc& doc) const;
  /// The text a rolling task's perplexities are per: count_text, else the target.
  std::string count_text(const Doc& doc) const;

 private:
  TaskConfig config_;
  std::map<std::string, std::vector<Doc>> splits_;
  bool multiple_input_ = false;
  bool multiple_target_ = false;
  mutable std::map<std::string, std::shared_ptr<const tokenizer::TextTemplate>> templates_;

  std::string render(const std::string& key, const std::string& source, const Doc& doc) const;
  const std::vector<Doc>& split(const std::string& name) const;
};

}  // namespace lathe::eval

LATHE_ENUM_TABLE(lathe::eval::OutputType, {lathe::eval::OutputType::MultipleChoice, "multiple_choice"},
                 {lathe::eval::OutputType::Loglikelihood, "loglikelihood"},
                 {lathe::eval::OutputType::LoglikelihoodRolling, "loglikelihood_rolling"},
                 {lathe::eval::OutputType::GenerateUntil, "generate_until"});
