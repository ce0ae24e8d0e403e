// Recipe loading: binding, every kind of error with its position, extends, overrides, show.

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "lathe/recipe/load.hpp"
#include "support.hpp"

using namespace lathe::recipe;
using lathe::test::TempDir;

namespace {

// The smallest valid recipe: the default pipeline needs a corpus.
const std::string kCorpus = "data:\n  train_files: [corpus.txt]\n";

/// Parses text expected to be invalid and returns its diagnostics.
std::vector<Diagnostic> problems(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_recipe(yaml, "r.yaml", overrides);
  } catch (const RecipeError& e) {
    return e.diagnostics();
  }
  FAIL("expected the recipe to be rejected:\n" << yaml);
  return {};
}

/// The only diagnostic of an invalid recipe.
Diagnostic problem(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  auto d = problems(yaml, overrides);
  INFO("diagnostics: " << RecipeError(d).what());
  REQUIRE(d.size() == 1);
  return d.front();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("recipe: values of every type are bound from YAML", "[recipe]") {
  Recipe r = parse_recipe(R"(
pipeline: [data, train]
run:
  name: demo
  seed: 7
  device: cpu
  force: true
data:
  train_files: a.txt          # one value stands for a one-element list
  val_fraction: 0.25
model:
  n_layer: 2
  d_model: 64
  n_head: 4
  norm_eps: 1e-6
  activation: swiglu
optim:
  lr: 3e-4
  name: sgd
train:
  max_steps: 1e4              # an exactly integral float is accepted as an integer
)",
                          "r.yaml");
  CHECK(r.pipeline == std::vector<Stage>{Stage::Data, Stage::Train});
  CHECK(r.run.name == "demo");
  CHECK(r.run.seed == 7);
  CHECK(r.run.device == Device::Cpu);
  CHECK(r.run.force);
  CHECK(r.data.train_files == std::vector<std::string>{"a.txt"});
  CHECK(r.data.val_fraction == 0.25);
  CHECK(r.model.n_layer == 2);
  CHECK(r.model.norm_eps == 1e-6);
  CHECK(r.model.activation == Activation::SwiGlu);
  CHECK(r.optim.lr == 3e-4);
  CHECK(r.optim.name == Optimizer::Sgd);
  CHECK(r.train.max_steps == 10000);
  // untouched keys keep their documented defaults
  CHECK(r.model.max_seq_len == ModelConfig{}.max_seq_len);
  CHECK(r.schedule.name == Schedule::Cosine);
}

TEST_CASE("recipe: an unknown key is reported where it is written, with a suggestion", "[recipe][errors]") {
  auto d = problem(kCorpus + "model:\n  n_layers: 4\n");
  CHECK(d.mark.file == "r.yaml");
  CHECK(d.mark.line == 4);
  CHECK(d.mark.col == 3);
  CHECK(d.key == "model.n_layers");
  CHECK(d.message == "unknown key 'n_layers' (did you mean 'n_layer'?)");
  CHECK(d.str() == "r.yaml:4:3: model.n_layers: unknown key 'n_layers' (did you mean 'n_layer'?)");
}

TEST_CASE("recipe: an unknown key far from any name lists the valid keys", "[recipe][errors]") {
  auto d = problem(kCorpus + "schedule:\n  banana: 1\n");
  CHECK(d.key == "schedule.banana");
  CHECK(contains(d.message, "the keys here are: name, warmup_steps, min_lr_ratio, decay_fraction"));
}

TEST_CASE("recipe: a value spelled in other case is suggested in the recipe's spelling", "[recipe][errors]") {
  auto d = problem(kCorpus + "export:\n  format: GGUF\n");
  CHECK(d.key == "export.format");
  CHECK(contains(d.message, "unknown value 'GGUF' (did you mean 'gguf'?)"));
}

TEST_CASE("recipe: an unknown section is reported with a suggestion", "[recipe][errors]") {
  auto d = problem(kCorpus + "modle:\n  n_layer: 2\n");
  CHECK(d.mark.line == 3);
  CHECK(d.message == "unknown key 'modle' (did you mean 'model'?)");
}

TEST_CASE("recipe: wrong types are reported at the value", "[recipe][errors]") {
  SECTION("quoted number") {
    auto d = problem(kCorpus + "optim:\n  lr: \"0.001\"\n");
    CHECK(d.mark.line == 4);
    CHECK(d.mark.col == 7);
    CHECK(d.message == "expected a number, got the string \"0.001\" (remove the quotes)");
  }
  SECTION("text for an integer") {
    auto d = problem(kCorpus + "model:\n  n_layer: four\n");
    CHECK(d.key == "model.n_layer");
    CHECK(d.message == "expected an integer, got 'four'");
  }
  SECTION("fraction for an integer") {
    CHECK(problem(kCorpus + "model:\n  n_layer: 2.5\n").message == "expected an integer, got '2.5'");
  }
  SECTION("YAML 1.1 yes for a bool") {
    CHECK(problem(kCorpus + "run:\n  force: yes\n").message == "expected true or false, got 'yes'");
  }
  SECTION("a list for a scalar") {
    CHECK(problem(kCorpus + "run:\n  seed: [1, 2]\n").message == "expected an integer, got a list");
  }
  SECTION("a scalar for a section") {
    auto d = problem(kCorpus + "optim: adamw\n");
    CHECK(d.key == "optim");
    CHECK(d.message == "expected a section (a mapping of keys), got a scalar");
  }
  SECTION("a mapping for a list") {
    CHECK(problem("data:\n  train_files: {a: 1}\n").message ==
          "expected a list of string, got a mapping");
  }
  SECTION("an unknown choice") {
    auto d = problem(kCorpus + "optim:\n  name: adam\n");
    CHECK(d.message == "unknown value 'adam' (did you mean 'adamw'?); expected one of adamw, sgd");
  }
  SECTION("a null value") {
    CHECK(problem(kCorpus + "run:\n  seed:\n").message == "expected an integer, got nothing (null)");
  }
}

TEST_CASE("recipe: out-of-range values name the allowed interval", "[recipe][errors]") {
  CHECK(problem(kCorpus + "optim:\n  beta1: 1.5\n").message == "must be in [0, 1), got 1.5");
  CHECK(problem(kCorpus + "optim:\n  lr: 0\n").message == "must be > 0, got 0");
  CHECK(problem(kCorpus + "model:\n  n_layer: 0\n").message == "must be >= 1, got 0");
  CHECK(problem(kCorpus + "export:\n  opset: 9\n").message == "must be in [17, 21], got 9");
}

TEST_CASE("recipe: inconsistent values are reported at the key the user wrote", "[recipe][errors]") {
  SECTION("heads must divide the width") {
    auto d = problem(kCorpus + "model:\n  d_model: 100\n  n_head: 3\n");
    CHECK(d.key == "model.n_head");
    CHECK(d.mark.line == 5);
    CHECK(d.message == "n_head (3) must divide d_model (100)");
  }
  SECTION("only the width was written: reported there") {
    auto d = problem(kCorpus + "model:\n  d_model: 100\n");
    CHECK(d.key == "model.d_model");
    CHECK(d.mark.line == 4);
  }
  SECTION("grouped KV heads must divide the heads") {
    CHECK(problem(kCorpus + "model:\n  n_kv_head: 5\n").message == "n_kv_head (5) must divide n_head (12)");
  }
  SECTION("rotary needs an even head dimension") {
    CHECK(problem(kCorpus + "model:\n  position: rope\n  d_model: 36\n  n_head: 4\n").message ==
          "rope needs an even head dimension, but d_model / n_head = 9");
  }
  SECTION("task and architecture") {
    auto d = problem(kCorpus + "train:\n  task: masked_lm\n");
    CHECK(d.key == "train.task");
    CHECK(d.message == "task masked_lm needs model.arch: bert (got gpt)");
  }
  SECTION("sequence longer than the position table") {
    auto d = problem(kCorpus.substr(0, kCorpus.size()) + "  seq_len: 2048\n");
    CHECK(d.key == "data.seq_len");
    CHECK(d.message == "seq_len (2048) exceeds model.max_seq_len (1024)");
  }
  SECTION("warmup longer than training") {
    CHECK(problem(kCorpus + "train:\n  max_steps: 10\n").message == "warmup_steps (100) exceeds train.max_steps (10)");
  }
  SECTION("n:m pruning") {
    CHECK(problem(kCorpus + "prune:\n  method: n_m\n  n: 4\n  m: 4\n").message == "n (4) must be smaller than m (4)");
  }
  SECTION("fp16 on the CPU") {
    CHECK(problem(kCorpus + "run:\n  device: cpu\ntrain:\n  precision: fp16\n").message ==
          "fp16 needs CUDA; use bf16 on the CPU");
  }
  SECTION("CUDA graphs on the CPU") {
    auto d = problem(kCorpus + "run:\n  device: cpu\ntrain:\n  cuda_graphs: true\n");
    CHECK(d.key == "train.cuda_graphs");
    CHECK(d.message == "CUDA graphs need CUDA; set train.cuda_graphs: false on the CPU");
  }
  SECTION("CUDA graphs for a task whose loss selects rows on the host") {
    auto d = problem(kCorpus + "model:\n  arch: bert\ntrain:\n  task: masked_lm\n  cuda_graphs: true\n");
    CHECK(d.key == "train.cuda_graphs");
    CHECK_THAT(d.message, Catch::StartsWith("CUDA graphs capture causal_lm's micro-step only"));
  }
  SECTION("WordPiece without an unknown token") {
    auto d = problem(kCorpus + "tokenizer:\n  type: wordpiece\n");
    CHECK(d.key == "tokenizer.type");
    CHECK(contains(d.message, "needs [UNK] among its special tokens"));
  }
  SECTION("model vocabulary smaller than the tokenizer's") {
    CHECK(problem(kCorpus + "model:\n  vocab_size: 1000\n").key == "model.vocab_size");
  }
  SECTION("parameters gathered in bf16 outside fsdp, or computed in another dtype") {
    auto d = problem(kCorpus + "train:\n  precision: bf16\ndistributed:\n  param_dtype: bf16\n");
    CHECK(d.key == "distributed.param_dtype");
    CHECK(d.message == "only fsdp gathers parameters; param_dtype bf16 needs strategy fsdp (or param_dtype: fp32)");
    d = problem(kCorpus + "distributed:\n  strategy: fsdp\n  param_dtype: bf16\n");
    CHECK(d.message == "blocks gathered in bf16 compute in it: set train.precision: bf16, or param_dtype: fp32");
  }
}

TEST_CASE("recipe: a check is skipped when one of its keys is already wrong", "[recipe][errors]") {
  // n_head: abc is the problem; "n_head (12) must divide d_model (100)" would be noise.
  auto d = problems(kCorpus + "model:\n  d_model: 100\n  n_head: abc\n");
  REQUIRE(d.size() == 1);
  CHECK(d[0].key == "model.n_head");
}

TEST_CASE("recipe: missing required keys name what needs them", "[recipe][errors]") {
  auto d = problems("run:\n  name: x\n");
  REQUIRE(d.size() == 2);  // the data stage and the tokenizer stage both need a corpus
  CHECK(d[0].key == "data.train_files");
  CHECK(contains(d[0].message, "missing required key: the data stage needs the training corpus"));
  CHECK(d[1].key == "tokenizer.train_files");
  CHECK(d[0].mark.line == 1);  // no data section: reported at the top of the file
}

TEST_CASE("recipe: pipeline stages are checked", "[recipe][errors]") {
  SECTION("unknown stage") {
    auto d = problem(kCorpus + "pipeline: [data, trian]\n");
    CHECK(d.key == "pipeline[1]");
    CHECK(d.mark.line == 3);
    CHECK(d.mark.col == 18);
    CHECK(contains(d.message, "unknown value 'trian' (did you mean 'train'?)"));
  }
  SECTION("repeated stage") {
    CHECK(problem(kCorpus + "pipeline: [data, train, data]\n").message == "stage 'data' is listed twice");
  }
  SECTION("empty") {
    CHECK(contains(problem(kCorpus + "pipeline: []\n").message, "lists no stage"));
  }
}

TEST_CASE("recipe: YAML syntax errors and duplicate keys carry their position", "[recipe][errors]") {
  auto syntax = problem("run:\n  name: [unclosed\n");
  CHECK(syntax.mark.line >= 2);
  CHECK(contains(syntax.message, "YAML syntax error"));

  auto dup = problem(kCorpus + "run:\n  seed: 1\n  seed: 2\n");
  CHECK(dup.mark.line == 5);
  CHECK(dup.message == "duplicate key (first given at line 4)");

  CHECK(contains(problem("- a\n- b\n").message, "a recipe is a mapping of sections"));
}

TEST_CASE("recipe: all problems of a file are reported at once, in file order", "[recipe][errors]") {
  auto d = problems(R"(pipeline: [data, train]
data:
  train_files: [c.txt]
model:
  n_layers: 4
optim:
  lr: -1
train:
  batch_size: many
)");
  REQUIRE(d.size() == 3);
  CHECK(d[0].mark.line == 5);
  CHECK(d[1].mark.line == 7);
  CHECK(d[2].mark.line == 9);
  CHECK(d[0].key == "model.n_layers");
  CHECK(d[1].key == "optim.lr");
  CHECK(d[2].key == "train.batch_size");
}

TEST_CASE("recipe: extends deep-merges bases, scalars and lists replace", "[recipe][extends]") {
  TempDir dir;
  dir.write("base/common.yaml", R"(
data:
  train_files: [a.txt, b.txt]
  seq_len: 64
model:
  n_layer: 2
  d_model: 64
  n_head: 4
)");
  dir.write("base/wide.yaml", "extends: common.yaml\nmodel:\n  d_model: 128\n");
  auto child = dir.write("exp/run.yaml", R"(
extends: [../base/wide.yaml]
data:
  train_files: [c.txt]
model:
  n_head: 8
)");
  Recipe r = load_recipe(child);
  CHECK(r.data.train_files == std::vector<std::string>{"c.txt"});  // list replaced, not appended
  CHECK(r.data.seq_len == 64);                                     // from the grandparent
  CHECK(r.model.n_layer == 2);
  CHECK(r.model.d_model == 128);                                   // from the parent
  CHECK(r.model.n_head == 8);                                      // from the child
}

TEST_CASE("recipe: several bases merge in order", "[recipe][extends]") {
  TempDir dir;
  dir.write("a.yaml", "run:\n  seed: 1\n  name: a\n");
  dir.write("b.yaml", "run:\n  seed: 2\n");
  auto top = dir.write("top.yaml", "extends: [a.yaml, b.yaml]\n" + kCorpus);
  Recipe r = load_recipe(top);
  CHECK(r.run.seed == 2);
  CHECK(r.run.name == "a");
}

TEST_CASE("recipe: a problem in a base is reported in the base file", "[recipe][extends]") {
  TempDir dir;
  auto base = dir.write("base.yaml", "model:\n  n_head: x\n");
  auto top = dir.write("top.yaml", "extends: base.yaml\n" + kCorpus);
  try {
    load_recipe(top);
    FAIL("expected an error");
  } catch (const RecipeError& e) {
    REQUIRE(e.diagnostics().size() == 1);
    CHECK(e.diagnostics()[0].mark.file == base.string());
    CHECK(e.diagnostics()[0].mark.line == 2);
  }
}

TEST_CASE("recipe: extends cycles and missing bases are errors at the extends entry", "[recipe][extends]") {
  TempDir dir;
  dir.write("a.yaml", "extends: b.yaml\n");
  dir.write("b.yaml", "extends: [a.yaml]\n");
  try {
    load_recipe(dir.path() / "a.yaml");
    FAIL("expected a cycle error");
  } catch (const RecipeError& e) {
    REQUIRE(e.diagnostics().size() == 1);
    const auto& d = e.diagnostics()[0];
    CHECK(d.mark.file == (dir.path() / "b.yaml").string());
    CHECK(d.mark.line == 1);
    CHECK(d.message == "extends cycle: a.yaml -> b.yaml -> a.yaml");
  }

  auto top = dir.write("c.yaml", "extends: [nope.yaml]\n" + kCorpus);
  try {
    load_recipe(top);
    FAIL("expected a missing-file error");
  } catch (const RecipeError& e) {
    REQUIRE(e.diagnostics().size() == 1);
    CHECK(e.diagnostics()[0].mark.file == top.string());
    CHECK(e.diagnostics()[0].mark.line == 1);
    CHECK(contains(e.diagnostics()[0].message, "cannot read base recipe '" + (dir.path() / "nope.yaml").string()));
  }
}

TEST_CASE("recipe: a missing recipe file names the file", "[recipe][errors]") {
  try {
    load_recipe("/nonexistent/recipe.yaml");
    FAIL("expected an error");
  } catch (const RecipeError& e) {
    CHECK(std::string(e.what()) == "/nonexistent/recipe.yaml: cannot read recipe: No such file or directory");
  }
}

TEST_CASE("recipe: overrides are typed like YAML and validated like the file", "[recipe][overrides]") {
  Recipe r = parse_recipe(kCorpus, "r.yaml",
                          {"optim.lr=3e-4", "model.n_layer=2", "pipeline=[data,train]", "run.name=my run",
                           "data.train_files=[x.txt, y.txt]", "run.force=true"});
  CHECK(r.optim.lr == 3e-4);
  CHECK(r.model.n_layer == 2);
  CHECK(r.pipeline == std::vector<Stage>{Stage::Data, Stage::Train});
  CHECK(r.run.name == "my run");
  CHECK(r.data.train_files == std::vector<std::string>{"x.txt", "y.txt"});
  CHECK(r.run.force);

  SECTION("a bad value names the override and the column of the value") {
    auto d = problem(kCorpus, {"model.n_layer=abc"});
    CHECK(d.str() == "<--set model.n_layer=abc>:1:15: model.n_layer: expected an integer, got 'abc'");
  }
  SECTION("an unknown key") {
    CHECK(problem(kCorpus, {"optim.learning_rate=1"}).message == "unknown key 'learning_rate'; the keys here are: "
                                                                  "name, lr, weight_decay, beta1, beta2, eps, "
                                                                  "momentum, nesterov, grad_clip, "
                                                                  "decay_embeddings, fused");
  }
  SECTION("no '='") { CHECK(contains(problem(kCorpus, {"optim.lr"}).message, "expected KEY=VALUE")); }
  SECTION("through a value") {
    CHECK(problem(kCorpus + "optim:\n  lr: 0.1\n", {"optim.lr.x=1"}).message == "'optim.lr' holds a value, not a section of keys");
  }
  SECTION("extends") { CHECK(contains(problem(kCorpus, {"extends=a.yaml"}).message, "cannot be overridden")); }
  SECTION("an override can fix the file") {
    CHECK(parse_recipe("model:\n  n_head: 7\n" + kCorpus, "r.yaml", {"model.n_head=8"}).model.n_head == 8);
  }
}

TEST_CASE("recipe: show output loads back to the same recipe", "[recipe][show]") {
  Recipe r = parse_recipe(kCorpus + "optim:\n  lr: 3e-4\n  eps: 1e-12\nrun:\n  name: 'true'\n  out_dir: ''\n"
                                    "tokenizer:\n  special_tokens: ['[PAD]', '#x', 'a: b', '<|endoftext|>']\n",
                          "r.yaml", {"run.out_dir=out"});
  const std::string once = to_yaml(r);
  Recipe back = parse_recipe(once, "show.yaml");
  CHECK(to_yaml(back) == once);
  CHECK(back.optim.lr == r.optim.lr);
  CHECK(back.optim.eps == r.optim.eps);
  CHECK(back.run.name == "true");
  CHECK(back.tokenizer.special_tokens == r.tokenizer.special_tokens);
  CHECK(once.find("extends") == std::string::npos);
}

TEST_CASE("recipe: show output reads the same in PyYAML (a YAML 1.1 reader)", "[recipe][show][python]") {
  TempDir dir;
  Recipe r = parse_recipe(kCorpus + "optim:\n  lr: 3e-4\n  eps: 1e-8\nmodel:\n  norm_eps: 1e-12\n", "r.yaml");
  auto file = dir.write("show.yaml", to_yaml(r));
  auto py = lathe::test::run_python(
      "import sys, yaml\n"
      "r = yaml.safe_load(open(sys.argv[1]))\n"
      "for k in ['lr', 'eps', 'weight_decay']: print(type(r['optim'][k]).__name__, repr(r['optim'][k]))\n"
      "print(type(r['model']['norm_eps']).__name__, repr(r['model']['norm_eps']))\n"
      "print(r['pipeline'], r['run']['force'], r['tokenizer']['special_tokens'], r['run']['seed'])\n",
      {file.string()});
  INFO(py.err);
  REQUIRE(py.code == 0);
  CHECK(py.out ==
        "float 0.0003\nfloat 1e-08\nfloat 0.1\nfloat 1e-12\n"
        "['tokenizer', 'data', 'train', 'eval'] False ['<|endoftext|>'] 1337\n");
}

TEST_CASE("recipe: every key has a type, a default and documentation", "[recipe][keys]") {
  auto keys = recipe_keys();
  std::set<std::string> names;
  for (const auto& k : keys) {
    INFO(k.key);
    CHECK(names.insert(k.key).second);
    CHECK(!k.doc.empty());
    CHECK(!k.type.empty());
  }
  // Every section named by the issue is there.
  for (std::string section : {"run.", "tokenizer.", "data.", "model.", "optim.", "schedule.", "train.",
                              "distributed.", "prune.", "quantize.", "export.", "eval.", "generate."}) {
    INFO(section);
    CHECK(std::any_of(keys.begin(), keys.end(), [&](const KeyDoc& k) { return k.key.starts_with(section); }));
  }
}

TEST_CASE("recipe: docs/recipe-keys.md documents every key as `lathe recipe keys` does", "[recipe][keys][docs]") {
  const std::string readme = lathe::test::read_file(lathe::test::source_dir() / "docs/recipe-keys.md");
  auto table = lathe::test::run_lathe({"recipe", "keys", "--markdown"});
  REQUIRE(table.code == 0);
  for (const auto& row : lathe::test::lines(table.out)) {
    INFO("docs/recipe-keys.md lacks this row (regenerate the table with build/lathe recipe keys --markdown):\n" << row);
    CHECK(contains(readme, row + "\n"));
  }
}

TEST_CASE("recipe: every recipe in recipes/ is valid and round-trips through show", "[recipe][recipes]") {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(lathe::test::source_dir() / "recipes")) {
    if (entry.path().extension() != ".yaml") continue;
    const auto rel = entry.path().lexically_relative(lathe::test::source_dir() / "recipes");
    if (*rel.begin() == "tasks") continue;  // task files (tests/test_eval.cpp)
    INFO(entry.path().string());
    ++count;
    Recipe r;
    try {
      r = load_recipe(entry.path());
    } catch (const RecipeError& e) {
      FAIL(e.what());
    }
    CHECK(to_yaml(parse_recipe(to_yaml(r), "show.yaml")) == to_yaml(r));
    // Each recipe says how to launch it.
    CHECK(contains(lathe::test::read_file(entry.path()), "#   "));
  }
  CHECK(count >= 4);
}

TEST_CASE("recipe: an empty section in a child keeps the base's, and --set section={...} merges", "[recipe][extends]") {
  TempDir dir;
  dir.write("base.yaml", kCorpus + "model:\n  n_layer: 2\n  n_head: 2\n  d_model: 64\n");
  auto child = dir.write("child.yaml", "extends: base.yaml\nmodel:\n  # n_layer: 4   (commented out)\n");
  auto r = load_recipe(child);
  CHECK(r.model.n_layer == 2);
  CHECK(r.model.d_model == 64);
  auto set = load_recipe(child, {"model={n_layer: 3}"});
  CHECK(set.model.n_layer == 3);
  CHECK(set.model.d_model == 64);
  CHECK(set.sources == std::vector<std::filesystem::path>{child, dir.path() / "base.yaml"});
}

TEST_CASE("recipe: a second YAML document is an error, and a duplicate key hides no other problem", "[recipe][errors]") {
  auto multi = problem(kCorpus + "---\nmodel: {n_layer: 2}\n");
  CHECK(multi.str() == "r.yaml:4:1: the file holds 2 YAML documents (separated by ---); a recipe is one document: "
                       "merge them, or use extends:");
  auto both = problems(kCorpus + "model:\n  n_layer: 2\n  n_layer: 3\n  d_model: x\n");
  REQUIRE(both.size() == 2);
  CHECK(contains(both[0].str(), "model.n_layer: duplicate key"));
  CHECK(contains(both[1].str(), "model.d_model: expected an integer"));
}

TEST_CASE("recipe: infinite and NaN numbers are refused", "[recipe][errors]") {
  auto d = problem(kCorpus + "optim:\n  lr: .inf\n");
  CHECK(d.str() == "r.yaml:4:7: optim.lr: expected a finite number, got '.inf'");
  CHECK(problem(kCorpus + "model:\n  dropout: .nan\n").message == "expected a finite number, got '.nan'");
}
