// Task evaluation against lm-evaluation-harness itself (tests/reference/lm_eval_reference.py runs
// lm_eval.simple_evaluate with its "hf" model on the same model directory and task files), and
// the parts of it that stand alone: Python's random stream, task files, documents, templates.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/eval/harness.hpp"
#include "lathe/eval/py_random.hpp"
#include "lathe/eval/scorer.hpp"
#include "lathe/eval/task.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "support.hpp"

using namespace lathe;
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

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
