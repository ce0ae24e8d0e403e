// Running a task as lm-evaluation-harness runs it: the few-shot context of each document
// (description, examples drawn by random.Random(seed).sample, the document's own prompt), the
// requests of its output type, the filters, the per-document metrics and their aggregation
// with the harness's standard errors (the sample standard error of a mean; a bootstrap of
// random.Random(i).choices resamples for perplexity; none for the weighted perplexities).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lathe/eval/py_random.hpp"
#include "lathe/eval/scorer.hpp"
#include "lathe/eval/task.hpp"

namespace lathe::eval {

/// How a task is run. The defaults are the harness's (simple_evaluate).
struct RunOptions {
  int64_t num_fewshot = -1;         // examples per prompt; -1: the task's num_fewshot
  int64_t limit = 0;                // documents scored (the first ones); 0: all
  int64_t bootstrap_iters = 100000; // resamples for a bootstrapped standard error; 0: none
  uint64_t fewshot_seed = 1234;     // seed of the few-shot sampler (the harness's fewshot_random_seed)
  bool keep_samples = false;        // keep each document's prompt, responses and scores
};

/// One aggregated metric: "acc" under filter "none", its value and standard error.
struct TaskMetric {
  std::string metric;
  std::string filter;
  double value = 0;
  std::optional<double> stderr_value;  // none where the harness reports "N/A"
  bool higher_is_better = true;
  /// "acc,none": the key the harness's results use.
  std::string key() const { return metric + "," + filter; }
};

struct TaskResult {
  std::string task;
  OutputType output_type = OutputType::MultipleChoice;
  int64_t num_fewshot = 0;
  int64_t documents = 0;
  std::vector<TaskMetric> metrics;
  double seconds = 0;
  /// Per document (keep_samples): doc_id, target, each request's arguments ([context,
  /// continuation], [text] for rolling, [context, {until, max_gen_toks}] for generation), the
  /// responses (per request [logprob, greedy]; rolling: the logprob; generation: the text), the
  /// filtered responses (generation: per filter) and the metric values.
  nlohmann::ordered_json samples = nlohmann::ordered_json::array();
  nlohmann::ordered_json config;  // the task file's settings as run

  /// The metric named `metric` (and `filter`; empty: the first filter that has it).
  std::optional<TaskMetric> find(const std::string& metric, const std::string& filter = "") const;
  /// As eval.json holds it: {"task", "output_type", "num_fewshot", "documents", "seconds",
  /// "metrics": {"acc,none": x, "acc_stderr,none": y | "N/A", ...}, "config"}.
  nlohmann::ordered_json to_json() const;
};

/// The few-shot context of `doc` (the harness's fewshot_context without a chat template):
/// one string, or one per choice for a multiple-input task. Draws from `rnd` as the harness's
/// sampler does.
std::vector<std::string> fewshot_context(const Task& task, const Doc& doc, int64_t num_fewshot, PyRandom& rnd);

/// Runs `task` with `lm`. Throws lathe::Error naming the task and document on bad data (a gold
/// answer that is not among the choices is scored wrong, with a warning on stderr, as the
/// harness does).
TaskResult run_task(const Task& task, LanguageModel& lm, const RunOptions& options = {});

/// The harness's standard error of a mean: sample standard deviation / sqrt(n).
double mean_stderr(const std::vector<double>& xs);
/// The harness's bootstrap_stderr(perplexity, xs, iters): the sample standard deviation of
/// exp(-mean) over resamples drawn by random.Random(i).choices, i = 0 .. iters / 1000 - 1, in
/// chunks of min(1000, iters).
double bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters);

/// A table of task results for the console: task, filter, n-shot, metric, value, ± stderr.
std::string results_table(const std::vector<TaskResult>& results);

}  // namespace lathe::eval
