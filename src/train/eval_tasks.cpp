#include "lathe/train/eval_tasks.hpp"

#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/run_dir.hpp"

namespace lathe::train {

namespace fs = std::filesystem;

eval::RunOptions task_run_options(const recipe::Recipe& r) {
  eval::RunOptions o;
  o.num_fewshot = r.eval.num_fewshot;
  o.limit = r.eval.limit;
  o.bootstrap_iters = r.eval.bootstrap_iters;
  o.keep_samples = r.eval.log_samples;
  return o;
}

std::vector<eval::Task> load_eval_tasks(const recipe::Recipe& r, const std::vector<std::string>& only) {
  std::vector<eval::Task> out;
  std::vector<std::string> found;
  for (std::size_t i = 0; i < r.eval.tasks.size(); ++i) {
    eval::TaskConfig c;
    try {
      c = eval::load_task(r.eval.tasks[i]);
    } catch (const Error& e) {
      throw Error(fmt::format("eval.tasks[{}]: {}", i, e.what()));
    }
    const bool wanted = only.empty() || std::find(only.begin(), only.end(), c.name) != only.end() ||
                        std::find(only.begin(), only.end(), r.eval.tasks[i]) != only.end();
    if (!wanted) continue;
    for (const auto& t : out)
      if (t.name() == c.name)
        throw Error(fmt::format("eval.tasks[{}]: a second task named '{}' ({} and {})", i, c.name,
                                t.config().file.string(), c.file.string()));
    found.push_back(c.name);
    out.emplace_back(std::move(c));
  }
  for (const auto& name : only)
    if (std::find(found.begin(), found.end(), name) == found.end() &&
        std::find(r.eval.tasks.begin(), r.eval.tasks.end(), name) == r.eval.tasks.end())
      throw Error(fmt::format("no task '{}' in eval.tasks ({})", name,
                              r.eval.tasks.empty() ? "empty" : fmt::format("{}", fmt::join(r.eval.tasks, ", "))));
  return out;
}

std::vector<fs::path> eval_task_inputs(const recipe::Recipe& r) {
  std::vector<fs::path> files;
  for (const auto& t : r.eval.tasks) {
    files.emplace_back(t);
    if (!fs::exists(t)) continue;  // the stage names it when it runs
    try {
      const auto c = eval::load_task(t);
      files.insert(files.end(), c.includes.begin(), c.includes.end());
      for (const auto& [split, f] : c.data_files) files.push_back(f);
    } catch (const Error&) {
      // A malformed task file is reported by the stage that reads it.
    }
  }
  return files;
}

std::vector<eval::TaskResult> run_eval_tasks(const std::vector<eval::Task>& tasks, const models::AnyModel& model,
                                             const TaskTokenizer& tok, const eval::RunOptions& options) {
  if (tasks.empty()) return {};
  if (model.arch() != models::Arch::Gpt)
    throw Error("eval.tasks score causal language models; this model is a " + model.kind_name());
  eval::GptScorer lm(model.as<models::Gpt>(), *tok.tok, tok.scorer);
  std::vector<eval::TaskResult> out;
  for (const auto& t : tasks) out.push_back(eval::run_task(t, lm, options));
  return out;
}

std::vector<eval::TaskResult> evaluate_task_files(const fs::path& model_path, const std::vector<std::string>& task_files,
                                                  const fs::path& tokenizer, const eval::RunOptions& options) {
  std::vector<eval::Task> tasks;
  for (const auto& f : task_files) tasks.emplace_back(eval::load_task(f));
  const fs::path dir = fs::is_directory(model_path) ? model_path : model_path.parent_path();
  const fs::path tok_path = tokenizer.empty() ? dir / "tokenizer.json" : tokenizer;
  if (!fs::exists(tok_path))
    throw Error("no tokenizer at " + tok_path.string() + "; name one with --tokenizer");
  const auto model = adapters::load_model(model_path, models::ModelKind::Gpt);
  return run_eval_tasks(tasks, model, task_tokenizer(tok_path), options);
}

TaskTokenizer task_tokenizer(const fs::path& file, const recipe::Recipe* r) {
  TaskTokenizer t;
  t.tok = r ? tokenizer::load_tokenizer(file, tokenizer_load_options(*r)) : tokenizer::load_tokenizer(file);
  t.scorer.bos_token = eval::configured_bos_token(file);
  return t;
}

TaskTokenizer tokenizer_for_model(const recipe::Recipe& r, const fs::path& path) {
  const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  if (fs::is_regular_file(dir / "tokenizer.json") && !fs::exists(dir / "meta.json"))
    return task_tokenizer(dir / "tokenizer.json", &r);
  const auto run = recipe::tokenizer_path(r);
  if (!fs::exists(run)) throw Error("no tokenizer at " + run.string() + " for eval.tasks; run the tokenizer stage first");
  return task_tokenizer(run, &r);
}

std::map<std::string, double> task_record_values(const std::vector<eval::TaskResult>& results) {
  std::map<std::string, double> out;
  for (const auto& r : results)
    for (const auto& m : r.metrics)
      out[r.task + "/" + m.metric + (m.filter == "none" ? "" : "," + m.filter)] = m.value;
  return out;
}

TaskSchedule::TaskSchedule(const recipe::Recipe& r, bool lead) : every_(r.eval.every) {
  if (!lead || every_ <= 0) return;
  tasks_ = load_eval_tasks(r);
  tok_ = task_tokenizer(recipe::tokenizer_path(r), &r);
  options_ = task_run_options(r);
  options_.keep_samples = false;
}

bool TaskSchedule::due(int64_t step, bool last) const {
  return !tasks_.empty() && done_at_ != step && (step % every_ == 0 || last);
}

void TaskSchedule::run(int64_t step, const models::AnyModel& model, Metrics& metrics) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto values = task_record_values(run_eval_tasks(tasks_, model, tok_, options_));
  metrics.record({step, "task", values});
  std::string line = fmt::format("step {}: tasks", step);
  for (const auto& [k, v] : values) line += fmt::format(" {} {:.4f}", k, v);
  metrics.message(line);
  done_at_ = step;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace lathe::train
