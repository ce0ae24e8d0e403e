// Task evaluation against lm-evaluation-harness itself (tests/reference/lm_eval_reference.py runs
// lm_eval.simple_evaluate with its "hf" model on the same model directory and task files), and
// the parts of it that stand alone: Python's random stream, task files, documents, templates.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/eval/harness.hpp"
#include "lathe/eval/py_random.hpp"
#include "lathe/eval/scorer.hpp"
#include "lathe/eval/task.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "run_fixture.hpp"
#include "support.hpp"

using namespace lathe;
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// A harness metric value against ours: equal for the rates (the same 0 / 1 per document), and
/// within `rel` for what is computed from log-likelihoods.
void check_metric(const std::string& task, const std::string& key, const json& ref, const eval::TaskResult& r) {
  const auto comma = key.find(',');
  const std::string name = key.substr(0, comma), filter = key.substr(comma + 1);
  const bool is_stderr = name.size() > 7 && name.substr(name.size() - 7) == "_stderr";
  const std::string metric = is_stderr ? name.substr(0, name.size() - 7) : name;
  const auto m = r.find(metric, filter);
  INFO(task << " " << key);
  REQUIRE(m);
  if (is_stderr) {
    if (ref.is_string()) {
      CHECK(ref.get<std::string>() == "N/A");
      CHECK(!m->stderr_value);
      return;
    }
    REQUIRE(m->stderr_value);
    CHECK(*m->stderr_value == Approx(ref.get<double>()).epsilon(metric == "perplexity" ? 1e-4 : 1e-9).margin(1e-12));
    return;
  }
  const bool from_ll = metric.find("perplexity") != std::string::npos || metric == "bits_per_byte";
  if (from_ll)
    CHECK(m->value == Approx(ref.get<double>()).epsilon(1e-4));
  else
    CHECK(m->value == ref.get<double>());
}

void check_samples(const std::string& task, const json& ref, const eval::TaskResult& r, eval::OutputType type) {
  std::size_t compared = 0;
  double worst = 0;
  for (const auto& s : ref) {
    const auto id = s["doc_id"].get<std::size_t>();
    INFO(task << " document " << id);
    REQUIRE(id < r.samples.size());
    const auto& ours = r.samples[id];
    const auto& args = s["arguments"];
    REQUIRE(args.size() == ours["arguments"].size());
    for (std::size_t k = 0; k < args.size(); ++k) {
      INFO(args[k][0].dump() << "\nvs\n" << ours["arguments"][k][0].dump());
      CHECK(args[k][0].get<std::string>() == ours["arguments"][k][0].get<std::string>());
    }
    if (type == eval::OutputType::GenerateUntil) {
      INFO(s["resps"][0][0].dump() << " vs " << ours["resps"][0].dump());
      CHECK(s["resps"][0][0].get<std::string>() == ours["resps"][0].get<std::string>());
      CHECK(s["filtered_resps"][0].get<std::string>() == ours["filtered_resps"][s["filter"].get<std::string>()].get<std::string>());
    } else if (type == eval::OutputType::LoglikelihoodRolling) {
      const double a = s["resps"][0][0].get<double>(), b = ours["resps"][0].get<double>();
      worst = std::max(worst, std::abs(a - b));
      CHECK(std::abs(a - b) <= 1e-6 * std::max(100.0, std::abs(a)));  // a sum over hundreds of tokens
    } else {
      for (std::size_t k = 0; k < args.size(); ++k) {
        CHECK(args[k][1].get<std::string>() == ours["arguments"][k][1].get<std::string>());
        const double a = s["resps"][k][0][0].get<double>(), b = ours["resps"][k][0].get<double>();
        worst = std::max(worst, std::abs(a - b));
        CHECK(std::abs(a - b) <= 1e-4);
        CHECK(s["resps"][k][0][1].get<bool>() == ours["resps"][k][1].get<bool>());
      }
    }
    ++compared;
  }
  CHECK(compared >= r.samples.size());
  WARN(task << ": " << compared << " samples, largest log-likelihood difference " << worst);
}

}  // namespace

TEST_CASE("tasks score as lm-evaluation-harness scores them", "[eval][reference]") {
  const std::string family = GENERATE("gpt2", "llama");
  INFO(family);
  test::TempDir dir;
  test::run_reference("lm_eval_reference.py", {"make", dir.path().string(), family});
  test::run_reference("lm_eval_reference.py", {"run", dir.path().string(), (dir.path() / "harness.json").string()});
  const json ref = io::read_json(dir.path() / "harness.json");

  auto model = models::load_hf_gpt(dir.path() / "model");
  const auto tok = tokenizer::load_tokenizer(dir.path() / "model" / "tokenizer.json");
  eval::GptScorer lm(model, *tok);
  eval::RunOptions options;
  options.keep_samples = true;
  options.bootstrap_iters = ref["bootstrap_iters"].get<int64_t>();
  for (const auto& [task, results] : ref["results"].items()) {
    const eval::Task t(eval::load_task(dir.path() / "tasks" / (task + ".yaml")));
    const auto r = eval::run_task(t, lm, options);
    for (const auto& [key, value] : results.items())
      if (key.find(',') != std::string::npos) check_metric(task, key, value, r);
    check_samples(task, ref["samples"][task], r, t.config().output_type);
  }
}

TEST_CASE("PyRandom draws what Python's random.Random draws", "[eval]") {
  test::TempDir dir;
  const auto out = dir.path() / "py.json";
  const auto py = test::run_python(
      "import json, random\n"
      "r = random.Random(1234)\n"
      "a = [r.random(), r.getrandbits(7), r.sample(range(50), 6), r.sample(range(10), 10), r.sample(range(4000), 9),\n"
      "     r.choices(range(9), k=40)]\n"
      "big = random.Random(2**40 + 17)\n"
      "a.append([big.random(), big.sample(range(100), 3)])\n"
      "a.append(random.Random(0).random())\n"
      "json.dump(a, open('" + out.string() + "', 'w'))\n");
  REQUIRE(py.code == 0);
  const json ref = io::read_json(out);
  eval::PyRandom r(1234);
  CHECK(r.random() == ref[0].get<double>());
  CHECK(r.getrandbits(7) == ref[1].get<uint32_t>());
  CHECK(r.sample(50, 6) == ref[2].get<std::vector<std::size_t>>());
  CHECK(r.sample(10, 10) == ref[3].get<std::vector<std::size_t>>());
  CHECK(r.sample(4000, 9) == ref[4].get<std::vector<std::size_t>>());
  CHECK(r.choices(9, 40) == ref[5].get<std::vector<std::size_t>>());
  eval::PyRandom big((uint64_t{1} << 40) + 17);
  CHECK(big.random() == ref[6][0].get<double>());
  CHECK(big.sample(100, 3) == ref[6][1].get<std::vector<std::size_t>>());
  CHECK(eval::PyRandom(0).random() == ref[7].get<double>());
}

TEST_CASE("task files: documents, templates and the errors that name the key", "[eval]") {
  test::TempDir dir;
  dir.write("docs.csv", "question,label,score\n\"Who, then?\",1,0.5\nWhy,0,\n");
  const auto docs = eval::read_documents(dir.path() / "docs.csv");
  REQUIRE(docs.size() == 2);
  CHECK(docs[0]["question"] == "Who, then?");
  CHECK(docs[0]["label"] == 1);
  CHECK(docs[1]["score"].is_null());
  CHECK(docs[0]["score"] == 0.5);

  dir.write("d.jsonl", "{\"q\": \"a b c\", \"opts\": [\"x\", \"it's\"], \"gold\": 1}\n");
  dir.write("t.yaml",
            "task: t\noutput_type: multiple_choice\ndata: {test: d.jsonl}\n"
            "doc_to_text: \"{{q.split(' ')[:-1] | join('-') }}\\n\"\ndoc_to_choice: \"{{opts}}\"\ndoc_to_target: gold\n");
  const eval::Task t(eval::load_task(dir.path() / "t.yaml"));
  const auto& d = t.eval_docs()[0];
  CHECK(t.doc_to_text(d) == "a-b\n");  // keep_trailing_newline, as the harness renders
  CHECK(t.doc_to_choice(d) == std::vector<std::string>{"x", "it's"});
  CHECK(t.doc_to_target(d) == 1);

  auto fails = [&](const std::string& yaml, const std::string& needle) {
    dir.write("bad.yaml", yaml);
    INFO(yaml);
    REQUIRE_THROWS_WITH(eval::load_task(dir.path() / "bad.yaml"), Catch::Contains(needle));
  };
  fails("task: t\ndata: {test: d.jsonl}\ndoc_to_text: q\ndoc_to_target: gold\nprocess_docs: !function utils.p\n",
        "bad.yaml:5: process_docs");
  fails("task: t\ndata: {test: d.jsonl}\ndoc_to_text: !function utils.f\ndoc_to_target: gold\n", "Python function");
  fails("task: t\ndata: {test: missing.jsonl}\ndoc_to_text: q\ndoc_to_target: gold\n", "data.test: no such file");
  fails("task: t\ndataset_path: allenai/ai2_arc\ndoc_to_text: q\ndoc_to_target: gold\n", "would be downloaded");
  fails("task: t\ndata: {test: d.jsonl}\ndoc_to_text: q\ndoc_to_target: gold\nmetric_list: [{metric: bleu}]\n",
        "'bleu' is not a metric of generate_until tasks");
  fails("task: t\ndata: {test: d.jsonl}\ndoc_to_text: q\ndoc_to_target: gold\ntest_splt: test\n", "test_splt: unknown key");
  fails("task: t\noutput_type: multiple_choice\ndata: {test: d.jsonl}\ndoc_to_text: q\ndoc_to_target: gold\n",
        "doc_to_choice: missing");

  dir.write("u.yaml", "task: u\noutput_type: multiple_choice\ndata: {test: d.jsonl}\ndoc_to_text: \"{{ question }}\"\n"
                      "doc_to_choice: opts\ndoc_to_target: gold\n");
  REQUIRE_THROWS_WITH(eval::Task(eval::load_task(dir.path() / "u.yaml")), Catch::Contains("'question' is undefined"));
}

namespace {

/// A multiple-choice task over the corpus: a line, then the line after it among three others.
std::filesystem::path write_corpus_task(test::TempDir& dir, const std::filesystem::path& corpus) {
  std::ifstream in(corpus);
  std::vector<std::string> lines;  // the first six words of each line (the context is 32 tokens)
  for (std::string l; std::getline(in, l);) {
    std::istringstream words(l);
    std::string w, six;
    for (int k = 0; k < 6 && words >> w; ++k) six += (k ? " " : "") + w;
    if (six.size() > 20) lines.push_back(six);
  }
  std::string docs;
  for (std::size_t i = 0; i + 1 < lines.size() && i < 400; i += 7) {
    json choices = json::array();
    const std::size_t gold = (i / 7) % 4;
    for (std::size_t c = 0, k = 1; c < 4; ++c) choices.push_back(c == gold ? lines[i + 1] : lines[(i + 97 * k++) % lines.size()]);
    docs += json{{"text", lines[i]}, {"choices", choices}, {"label", gold}}.dump() + "\n";
  }
  dir.write("mc.jsonl", docs);
  return dir.write("mc.yaml", "task: mc\noutput_type: multiple_choice\ndata: {test: mc.jsonl}\n"
                              "doc_to_text: \"{{text}}\"\ndoc_to_choice: choices\ndoc_to_target: label\n"
                              "target_delimiter: \"\\n\"\n");
}

}  // namespace

TEST_CASE("quality gates: a harsh scheme fails quantize, exit 1, export does not run, int8 passes", "[eval][gate]") {
  test::Corpus corpus;
  test::TempDir dir;
  const auto task = write_corpus_task(dir, corpus.text);
  const auto out = dir.path() / "run";
  const auto exported = dir.path() / "exported";
  const auto recipe = dir.write(
      "r.yaml", corpus.recipe(out, "max_steps: 300, batch_size: 8, eval_every: 0",
                              fmt::format("eval: {{batches: 4, tasks: [{}]}}\n"
                                          "quantize: {{method: int4_weight_only, group_size: 32, algorithm: rtn,\n"
                                          "  gate: {{metric: val_perplexity, max_increase: 0.1%}}}}\n"
                                          "export: {{format: hf, path: {},\n"
                                          "  gate: {{task: mc, metric: acc_norm, max_drop: 5pt}}}}\n",
                                          task.string(), exported.string())));
  // The harsh scheme: int4 with one scale per 256 inputs, the output head included.
  const std::vector<std::string> run = {"run",   recipe.string(), "--set", "pipeline=[tokenizer, data, train, quantize, eval, export]",
                                        "--set", "model.d_model=256", "--set", "quantize.group_size=256",
                                        "--set", "quantize.skip_modules=[]"};
  const auto failed = test::run_lathe(run);
  INFO(failed.err);
  CHECK(failed.code == 1);
  CHECK(contains(failed.err, "quantize gate failed: val_perplexity "));
  CHECK(contains(failed.err, "quantize.gate max_increase 0.1% allows at most"));
  CHECK(!fs::exists(exported));
  const json gate = io::read_json(out / "quantized" / "gate.json");
  CHECK(gate["passed"] == false);
  CHECK(gate["output"].get<double>() > gate["bound"].get<double>());
  CHECK(io::read_json(out / "quantize.json")["gate"]["passed"] == false);

  // The same recipe again: the failed output is refused, not used; so is export on its own.
  const auto again = test::run_lathe(run);
  CHECK(again.code == 1);
  CHECK(contains(again.err, "failed its quantize gate"));
  auto export_alone = run;
  export_alone[0] = "export";
  const auto alone = test::run_lathe(export_alone);
  CHECK(alone.code == 1);
  CHECK(contains(alone.err, "failed its quantize gate"));
  CHECK(!fs::exists(exported));
  // Named by its path, the failed model is refused too.
  const auto by_path = test::run_lathe({"eval", recipe.string(), "--checkpoint", (out / "quantized").string()});
  CHECK(by_path.code == 1);
  CHECK(contains(by_path.err, "failed its quantize gate"));

  // int8 keeps the same gate: quantize, eval and export (with its task gate) all run.
  auto int8 = run;
  int8.insert(int8.end(), {"--set", "quantize.method=int8_weight_only"});
  const auto passed = test::run_lathe(int8);
  INFO(passed.out);
  INFO(passed.err);
  REQUIRE(passed.code == 0);
  CHECK(io::read_json(out / "quantized" / "gate.json")["passed"] == true);
  const json export_gate = io::read_json(exported / "gate.json");
  CHECK(export_gate["passed"] == true);
  CHECK(export_gate["metric"] == "mc acc_norm,none");
  CHECK(fs::exists(exported / "model.safetensors"));
  const json ev = io::read_json(out / "eval.json");
  CHECK(ev["tasks"]["mc"]["documents"] == 58);
  CHECK(ev["tasks"]["mc"]["metrics"].contains("acc_norm_stderr,none"));

  // An attempt cut off before its verdict leaves gate.json pending: the same recipe then runs the
  // stage again rather than using the model or refusing for good.
  io::write_file_atomic(out / "quantized" / "gate.json", R"({"stage": "quantize", "passed": false, "pending": true})");
  const auto pending = test::run_lathe(int8);
  INFO(pending.err);
  CHECK(pending.code == 0);
  CHECK(contains(pending.out, "stage quantize: int8_weight_only"));  // ran, not skipped
  CHECK(io::read_json(out / "quantized" / "gate.json")["passed"] == true);
}

TEST_CASE("eval.every logs the tasks during training, and lathe eval --task runs one", "[eval][train]") {
  test::Corpus corpus;
  test::TempDir dir;
  const auto task = write_corpus_task(dir, corpus.text);
  const auto out = dir.path() / "run";
  const auto recipe = dir.write("r.yaml", corpus.recipe(out, "max_steps: 25, batch_size: 4, eval_every: 0",
                                                        fmt::format("eval: {{batches: 2, every: 10, limit: 12, "
                                                                    "tasks: [{}]}}\n",
                                                                    task.string())));
  const auto trained = test::run_lathe({"run", recipe.string()});
  INFO(trained.err);
  REQUIRE(trained.code == 0);
  std::vector<int64_t> steps;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = json::parse(line);
    if (j["split"] != "task") continue;
    steps.push_back(j["step"].get<int64_t>());
    CHECK(j.contains("mc/acc"));
    CHECK(j.contains("mc/acc_norm"));
  }
  CHECK(steps == std::vector<int64_t>{10, 20, 25});

  const auto one = test::run_lathe({"eval", recipe.string(), "--task", "mc", "--format", "json"});
  INFO(one.err);
  REQUIRE(one.code == 0);
  const auto j = json::parse(one.out);
  CHECK(j["tasks"]["mc"]["documents"] == 12);
  const auto table = test::run_lathe({"eval", recipe.string(), "--task", task.string(), "--format", "table"});
  CHECK(contains(table.out, "| mc   | none   | 0      | acc ↑"));
  const auto missing = test::run_lathe({"eval", recipe.string(), "--task", "nope"});
  CHECK(missing.code == 1);
  CHECK(contains(missing.err, "no task 'nope' in eval.tasks"));
  // The eval stage's record holds the files a task includes: a changed base file runs it again.
  const auto base = dir.write("base.yaml", test::read_file(task));
  const auto child = dir.write("child.yaml", "include: base.yaml\ntask: child\n");
  const std::vector<std::string> eval_only = {"run", recipe.string(), "--set", "pipeline=[eval]", "--set",
                                              "eval.tasks=[" + child.string() + "]", "--set", "eval.every=0"};
  REQUIRE(test::run_lathe(eval_only).code == 0);
  CHECK(contains(test::run_lathe(eval_only).out, "stage eval: skipped"));
  dir.write("base.yaml", test::read_file(base) + "num_fewshot: 1\n");
  const auto changed = test::run_lathe(eval_only);
  CHECK(contains(changed.out, "stage eval: inputs changed (file " + base.string() + ": changed"));
}

TEST_CASE("every task file in recipes/tasks loads with its documents", "[eval][recipes]") {
  const auto prepared = test::run_process({(test::source_dir() / "data/prepare_kjv_tasks.sh").string()});
  INFO(prepared.err);
  REQUIRE(prepared.code == 0);
  int count = 0;
  for (const auto& entry : fs::directory_iterator(test::source_dir() / "recipes" / "tasks")) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path().string());
    ++count;
    const eval::Task t(eval::load_task(entry.path()));
    CHECK(t.eval_docs().size() >= 40);
    CHECK(t.name() == entry.path().stem().string());
    CHECK(contains(test::read_file(entry.path()), "#   "));  // says how to run it
  }
  CHECK(count == 4);
}

TEST_CASE("recipes/tasks/harness express the harness's own tasks, their Python rules included", "[eval][reference]") {
  // The harness runs its own arc_easy, arc_challenge, piqa, hellaswag (process_docs), lambada_openai,
  // winogrande (Python doc_to_*) and wikitext (a Python detokenizer and process_results) on
  // documents in each dataset's fields; lathe runs its template-only files on the same documents.
  test::TempDir dir;
  test::run_reference("lm_eval_reference.py", {"make", dir.path().string(), "gpt2"});
  test::run_reference("lm_eval_reference.py", {"suite", dir.path().string(), (dir.path() / "suite.json").string()});
  const json ref = io::read_json(dir.path() / "suite.json");
  auto model = models::load_hf_gpt(dir.path() / "model");
  const auto tok = tokenizer::load_tokenizer(dir.path() / "model" / "tokenizer.json");
  eval::GptScorer lm(model, *tok);
  int ran = 0;
  for (const auto& [local, results] : ref["results"].items()) {
    const std::string task = local.substr(6);  // local_
    std::string data = "data:\n";
    for (const auto& split : {"train", "validation", "test"})
      if (fs::exists(dir.path() / "suite_data" / task / (std::string(split) + ".jsonl")))
        data += fmt::format("  {}: {}\n", split, (dir.path() / "suite_data" / task / (std::string(split) + ".jsonl")).string());
    const auto file = dir.write(task + ".yaml", fmt::format("include: {}\n{}",
        (test::source_dir() / "recipes" / "tasks" / "harness" / (task + ".yaml")).string(), data));
    const eval::Task t(eval::load_task(file));
    CHECK(t.name() == task);
    eval::RunOptions options;
    options.keep_samples = true;
    options.bootstrap_iters = ref["bootstrap_iters"].get<int64_t>();
    options.num_fewshot = task == "wikitext" ? 0 : 2;
    const auto r = eval::run_task(t, lm, options);
    for (const auto& [key, value] : results.items())
      if (key.find(',') != std::string::npos) check_metric(task, key, value, r);
    check_samples(task, ref["samples"][local], r, t.config().output_type);
    ++ran;
  }
  CHECK(ran == 7);
}

TEST_CASE("gate settings are checked where the recipe is read, naming the key", "[eval][gate][recipe]") {
  auto problem = [](const std::string& yaml) {
    try {
      test::recipe_from("data: {train_files: [x.txt]}\n" + yaml);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(contains(problem("quantize: {gate: {metric: val_loss, max_drop: 1%}}\n"),
                 "quantize.gate.max_drop: 'val_loss' is better lower: bound its rise with max_increase"));
  CHECK(contains(problem("prune: {gate: {metric: val_accuracy, max_increase: 1pt}}\n"),
                 "prune.gate.max_increase: 'val_accuracy' is better higher"));
  CHECK(contains(problem("quantize: {gate: {metric: val_loss}}\n"), "a gate needs one limit"));
  CHECK(contains(problem("quantize: {gate: {metric: val_loss, max_increase: two}}\n"),
                 "quantize.gate.max_increase: max_increase: 'two' is not a limit"));
  CHECK(contains(problem("quantize: {gate: {metric: acc, max_drop: 1pt}}\n"), "a task metric needs gate.task"));
  CHECK(contains(problem("export: {gate: {metric: acc, task: t, max_drop: 1pt}}\n"),
                 "export.gate measures the exported Hugging Face directory"));
  CHECK(contains(problem("quantize: {gate: {metric: acc, task: t, max_drop: 1pt}}\n"),
                 "eval.tasks: a gate on task 't' needs the task's file in eval.tasks"));
  CHECK(contains(problem("eval: {every: 5}\n"), "eval.every: runs eval.tasks during training, and eval.tasks is empty"));
  CHECK(problem("quantize: {gate: {metric: val_perplexity, max_increase: 2%}}\n") == "no error");
}
