// The lathe command: exit codes, usage errors, recipe commands, env, run, and that the binary
// starts without a GPU driver.

#include <catch2/catch.hpp>

#include "gpu.hpp"
#include "lathe/recipe/load.hpp"
#include "support.hpp"

using lathe::test::run_lathe;
using lathe::test::TempDir;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
const std::string kDefault = (lathe::test::source_dir() / "recipes/gpt/tiny_pretrain.yaml").string();
}  // namespace

TEST_CASE("cli: --version names lathe and the LibTorch of the torch wheel", "[cli]") {
  auto r = run_lathe({"--version"});
  REQUIRE(r.code == 0);
  auto py = lathe::test::run_python("import torch; print(torch.__version__.split('+')[0])");
  REQUIRE(py.code == 0);
  CHECK(r.out == "lathe 0.1.0 (LibTorch " + lathe::test::lines(py.out).at(0) + ")\n");
}

TEST_CASE("cli: --help lists every command", "[cli]") {
  auto r = run_lathe({"--help"});
  REQUIRE(r.code == 0);
  for (std::string c : {"run", "train", "eval", "generate", "tokenizer train", "tokenizer encode", "tokenizer decode",
                        "data prepare", "prune", "quantize", "export", "recipe check", "recipe show", "env"}) {
    INFO(c);
    CHECK(contains(r.out, "  " + c + " "));
  }
}

TEST_CASE("cli: every command has --help", "[cli]") {
  for (std::vector<std::string> c :
       {std::vector<std::string>{"run"}, {"train"}, {"eval"}, {"generate"}, {"tokenizer", "train"},
        {"tokenizer", "encode"}, {"tokenizer", "decode"}, {"data", "prepare"}, {"prune"}, {"quantize"}, {"export"},
        {"recipe", "check"}, {"recipe", "show"}, {"recipe", "keys"}, {"env"}}) {
    c.push_back("--help");
    auto r = run_lathe(c);
    INFO(c[0]);
    CHECK(r.code == 0);
    CHECK(contains(r.out, "Usage:"));
  }
}

TEST_CASE("cli: usage errors exit 2 with a short usage line", "[cli][errors]") {
  SECTION("no command") {
    auto r = run_lathe({});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "usage: lathe <command>"));
  }
  SECTION("unknown command") {
    auto r = run_lathe({"trian"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "lathe: unknown command 'trian'"));
  }
  SECTION("group without its word") {
    auto r = run_lathe({"tokenizer"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "expected one of train|encode|decode"));
  }
  SECTION("unknown flag") {
    auto r = run_lathe({"recipe", "show", kDefault, "--bogus"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "bogus"));
    CHECK(contains(r.err, "usage: lathe recipe show RECIPE"));
  }
  SECTION("missing argument") {
    auto r = run_lathe({"recipe", "check"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "missing FILE"));
  }
  SECTION("extra argument") {
    auto r = run_lathe({"recipe", "show", kDefault, "other.yaml"});
    CHECK(r.code == 2);
  }
}

TEST_CASE("cli: recipe check prints every planted mistake with its line", "[cli][recipe]") {
  TempDir dir;
  auto bad = dir.write("bad.yaml", R"(pipeline: [tokenizer, data, train]
data:
  train_files: [corpus.txt]
model:
  d_model: 256
  n_head: 6
optim:
  lr: fast
train:
  max_stepz: 100
)");
  auto r = run_lathe({"recipe", "check", bad.string()});
  CHECK(r.code == 1);
  auto out = lathe::test::lines(r.err);
  REQUIRE(out.size() == 4);
  CHECK(out[0] == bad.string() + ":6:11: model.n_head: n_head (6) must divide d_model (256)");
  CHECK(out[1] == bad.string() + ":8:7: optim.lr: expected a number, got 'fast'");
  CHECK(out[2] == bad.string() + ":10:3: train.max_stepz: unknown key 'max_stepz' (did you mean 'max_steps'?)");
  CHECK(out[3] == bad.string() + ": 3 problem(s)");
}

TEST_CASE("cli: recipe check reports each file and fails if any is invalid", "[cli][recipe]") {
  TempDir dir;
  auto bad = dir.write("bad.yaml", "run:\n  seed: -1\n");
  auto r = run_lathe({"recipe", "check", kDefault, bad.string()});
  CHECK(r.code == 1);
  CHECK(contains(r.out, kDefault + ": ok"));
  CHECK(contains(r.err, bad.string() + ":2:9: run.seed: must be >= 0, got -1"));
  CHECK(run_lathe({"recipe", "check", kDefault}).code == 0);
}

TEST_CASE("cli: recipe show prints the resolved recipe, overrides applied", "[cli][recipe]") {
  TempDir dir;
  auto r = run_lathe({"recipe", "show", kDefault, "--set", "model.n_layer=2", "--set", "pipeline=[data,train]"});
  REQUIRE(r.code == 0);
  auto shown = dir.write("shown.yaml", r.out);
  auto recipe = lathe::recipe::load_recipe(shown);
  CHECK(recipe.model.n_layer == 2);
  CHECK(recipe.pipeline == std::vector{lathe::recipe::Stage::Data, lathe::recipe::Stage::Train});
  // show of show is the same text
  auto again = run_lathe({"recipe", "show", shown.string()});
  REQUIRE(again.code == 0);
  CHECK(again.out == r.out);
  // an invalid override fails like a bad file
  auto bad = run_lathe({"recipe", "show", kDefault, "--set", "model.n_layer=0"});
  CHECK(bad.code == 1);
  CHECK(contains(bad.err, "<--set model.n_layer=0>:1:15: model.n_layer: must be >= 1, got 0"));
}

TEST_CASE("cli: recipe keys prints the key reference", "[cli][recipe]") {
  auto r = run_lathe({"recipe", "keys", "--markdown"});
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "| `optim.lr` | number > 0 | `0.0003` |"));
  CHECK(lathe::test::lines(r.out).size() == lathe::recipe::recipe_keys().size() + 2);
}

TEST_CASE("cli: env reports LibTorch, CUDA, NCCL, MPI and threads", "[cli]") {
  auto r = run_lathe({"env"});
  REQUIRE(r.code == 0);
  auto py = lathe::test::run_python("import torch; print(torch.__version__.split('+')[0], torch.cuda.nccl.version() "
                                    "if torch.cuda.is_available() else '')");
  REQUIRE(py.code == 0);
  const std::string torch_version = py.out.substr(0, py.out.find(' '));
  CHECK(contains(r.out, "LibTorch      " + torch_version + "\n"));
  for (std::string key : {"CUDA", "cuDNN", "NCCL", "MPI", "threads", "rendezvous"}) {
    INFO(key);
    CHECK(contains(r.out, "\n" + key + " "));
  }
  // One column: every value (the rendezvous line's too) starts where LibTorch's does.
  const auto column = std::string("LibTorch      ").size();
  for (const auto& line : lathe::test::lines(r.out)) {
    if (line.empty() || line.starts_with(" ")) continue;
    INFO(line);
    REQUIRE(line.size() > column);
    CHECK(line[column - 1] == ' ');
    CHECK(line[column] != ' ');
  }
}

TEST_CASE("cli: env shows the data-parallel world a launch would join", "[cli]") {
  auto r = lathe::test::run_process({"env", "RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=1", "MASTER_ADDR=node7",
                                     "MASTER_PORT=29400", LATHE_CLI, "env"});
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "rank 3 of 8 (local 1 of 8, torchrun), rendezvous node7:29400"));
  auto one = lathe::test::run_lathe({"env"});
  CHECK(contains(one.out, "one process (no launcher variables set)"));
}

TEST_CASE("cli: tokenizer train / encode / decode work from a recipe", "[cli][tokenizer]") {
  TempDir dir;
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "The quick brown fox jumps over the lazy dog " + std::to_string(i % 7) + ".\n";
  auto file = dir.write("corpus.txt", corpus);
  auto recipe = dir.write("tok.yaml", "pipeline: [tokenizer]\nrun:\n  out_dir: " + (dir.path() / "out").string() +
                                          "\ntokenizer:\n  train_files: [" + file.string() +
                                          "]\n  vocab_size: 300\n");
  auto trained = run_lathe({"tokenizer", "train", recipe.string()});
  INFO(trained.err);
  REQUIRE(trained.code == 0);
  CHECK(contains(trained.out, "-token byte_bpe tokenizer on 1 file(s)"));
  const auto tok = (dir.path() / "out" / "tokenizer.json").string();
  REQUIRE(std::filesystem::exists(tok));
  // a second run skips, --force retrains
  CHECK(contains(run_lathe({"tokenizer", "train", recipe.string()}).out, "skipped"));
  CHECK(contains(run_lathe({"tokenizer", "train", recipe.string(), "--force"}).out, "trained"));

  auto text = dir.write("in.txt", "The lazy dog, 42 times!\nSecond line\n");
  auto enc = run_lathe({"tokenizer", "encode", "--tokenizer", tok, text.string()});
  REQUIRE(enc.code == 0);
  REQUIRE(lathe::test::lines(enc.out).size() == 1);
  auto ids = dir.write("ids.txt", enc.out);
  auto dec = run_lathe({"tokenizer", "decode", "--tokenizer", tok, ids.string()});
  REQUIRE(dec.code == 0);
  CHECK(dec.out == "The lazy dog, 42 times!\nSecond line\n");

  auto by_line = run_lathe({"tokenizer", "encode", "--tokenizer", tok, "--lines", "--threads", "2", text.string()});
  CHECK(lathe::test::lines(by_line.out).size() == 2);
  auto bad = dir.write("bad_ids.txt", "1 2 x3\n");
  auto bad_dec = run_lathe({"tokenizer", "decode", "--tokenizer", tok, bad.string()});
  CHECK(bad_dec.code == 1);
  CHECK(contains(bad_dec.err, bad.string() + ":1: 'x3' is not a token id"));
}

TEST_CASE("cli: tokenizer commands report missing inputs", "[cli][tokenizer][errors]") {
  TempDir dir;
  auto recipe = dir.write("tok.yaml", "pipeline: [tokenizer]\nrun:\n  out_dir: " + (dir.path() / "out").string() +
                                          "\ntokenizer:\n  train_files: [" + (dir.path() / "none*.txt").string() + "]\n");
  auto r = run_lathe({"tokenizer", "train", recipe.string()});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "input '" + (dir.path() / "none*.txt").string() + "' matches no file"));
  auto e = run_lathe({"tokenizer", "encode", "--tokenizer", (dir.path() / "t.json").string()});
  CHECK(e.code == 1);
  CHECK(contains(e.err, "does not exist"));
  CHECK(run_lathe({"tokenizer", "encode"}).code == 2);
}

TEST_CASE("cli: tokenizer decode refuses ids outside the vocabulary, however large", "[cli][tokenizer][errors]") {
  TempDir dir;
  auto vocab = dir.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n");
  auto ok = dir.write("ok.txt", "5 6\n");
  auto r = run_lathe({"tokenizer", "decode", "--tokenizer", vocab.string(), ok.string()});
  CHECK(r.code == 0);
  CHECK(r.out == "the cat");
  for (std::string id : {"99999999999", "7", "-1"}) {
    auto ids = dir.write("ids.txt", "5 " + id + "\n");
    auto bad = run_lathe({"tokenizer", "decode", "--tokenizer", vocab.string(), ids.string()});
    INFO(bad.err);
    CHECK(bad.code == 1);
    CHECK(bad.err == "lathe tokenizer decode: " + ids.string() + ":1: token id " + id +
                         " is outside the vocabulary (0 to 6)\n");
  }
}

TEST_CASE("cli: a malformed recipe is refused with the key before anything runs", "[cli]") {
  TempDir dir;
  auto bad = dir.write("bad.yaml", "model:\n  n_layer: x\n");
  auto invalid = run_lathe({"train", bad.string()});
  CHECK(invalid.code == 1);
  CHECK(contains(invalid.err, "model.n_layer: expected an integer"));
}

TEST_CASE("cli: run with an ONNX opset this build cannot check exits 1 before anything runs", "[cli][run]") {
  TempDir dir;
  const auto out_dir = dir.path() / "run";
  auto onnx = run_lathe({"run", kDefault, "--set", "run.out_dir=" + out_dir.string(), "--set",
                         "pipeline=[tokenizer, export]", "--set", "export.opset=21"},
                        lathe::test::source_dir());
  CHECK(onnx.code == 1);
  CHECK(contains(onnx.err, "export.opset: 21 is outside 17 (LayerNormalization) .. "));
  CHECK(!std::filesystem::exists(out_dir / "tokenizer.json"));
}

TEST_CASE("cli: run writes the resolved recipe into out_dir and prints the plan", "[cli][run]") {
  TempDir dir;
  const auto out_dir = dir.path() / "run";
  // relative paths in recipes are relative to where lathe starts: the repository root here
  // The tokenizer stage alone (the whole pipeline runs in test_train.cpp on a smaller corpus).
  const std::vector<std::string> set{"--set", "run.out_dir=" + out_dir.string(), "--set", "pipeline=[tokenizer]"};
  std::vector<std::string> args{"run", kDefault};
  args.insert(args.end(), set.begin(), set.end());
  auto r = run_lathe(args, lathe::test::source_dir());
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "run 'gpt-tiny-kjv': tokenizer (out_dir"));
  CHECK(contains(r.out, "stage tokenizer: trained a 4096-token byte_bpe tokenizer"));
  CHECK(std::filesystem::exists(out_dir / "tokenizer.json"));
  std::vector<std::string> show{"recipe", "show", kDefault};
  show.insert(show.end(), set.begin(), set.end());
  auto shown = run_lathe(show);
  CHECK(lathe::test::read_file(out_dir / "resolved.yaml") == shown.out);

  SECTION("--dry-run writes nothing") {
    const auto other = dir.path() / "dry";
    CHECK(run_lathe({"run", kDefault, "--dry-run", "--set", "run.out_dir=" + other.string()}).code == 0);
    CHECK(!std::filesystem::exists(other));
  }
}

TEST_CASE("cli: the binaries start without a GPU driver (no libcuda.so in NEEDED)", "[cli][build]") {
  for (std::string binary : {std::string(LATHE_CLI), std::filesystem::read_symlink("/proc/self/exe").string()}) {
    auto r = lathe::test::run_process({"readelf", "-d", binary});
    REQUIRE(r.code == 0);
    INFO(binary << "\n" << r.out);
    CHECK(!contains(r.out, "libcuda.so"));
    CHECK(contains(r.out, "libtorch_cpu.so"));
#ifdef LATHE_WITH_CUDA
    CHECK(contains(r.out, "libtorch_cuda.so"));  // kept, so CUDA is found where there is a GPU
#endif
  }
}

TEST_CASE("cli: on a GPU machine env lists the CUDA devices", "[cli][gpu]") {
  LATHE_REQUIRE_GPU();
  auto r = run_lathe({"env"});
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "available, "));
  CHECK(contains(r.out, "  cuda:0 "));
}
