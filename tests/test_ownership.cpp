// lathe never destroys a file it did not write: manifests, locks, the input recipe, shard
// directories shared with other files, concurrent writers, and a whole run in a used directory.

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include "lathe/core/error.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/train/checkpoint.hpp"
#include "support.hpp"

using lathe::test::error_of;
using lathe::test::read_file;
using lathe::test::run_lathe;
using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Every regular file under `dir` with its contents.
std::map<fs::path, std::string> snapshot(const fs::path& dir, const std::vector<fs::path>& files) {
  std::map<fs::path, std::string> out;
  for (const auto& f : files) out[f] = read_file(dir / f);
  return out;
}

/// A corpus of the first 1500 verses of the default corpus, and a small GPT recipe over it.
struct SmallRun {
  TempDir dir;
  fs::path corpus;
  SmallRun() {
    std::ifstream in(lathe::test::source_dir() / "data/kjv/kjv.txt");
    REQUIRE(in);
    std::string s, line;
    for (int i = 0; i < 1500 && std::getline(in, line); ++i) s += line + (i % 5 == 4 ? "\n\n" : "\n");
    corpus = dir.write("corpus/kjv.txt", s);
  }
  std::string recipe(const fs::path& out, int64_t max_steps, const std::string& more = "") const {
    return fmt::format(R"(# a user's recipe, comments and all
pipeline: [tokenizer, data, train, eval, generate]
run: {{out_dir: {}, seed: 3, device: cpu}}
tokenizer: {{type: byte_bpe, vocab_size: 300}}
data: {{train_files: [{}], seq_len: 16, val_fraction: 0.1, num_workers: 1}}
model: {{n_layer: 1, n_head: 2, d_model: 16, max_seq_len: 16}}
schedule: {{warmup_steps: 1}}
train: {{max_steps: {}, batch_size: 2, eval_every: 0, save_every: 2, keep_last: 2, eval_batches: 2}}
eval: {{batches: 2}}
generate: {{prompts: ["And"], max_new_tokens: 4}}
{})",
                       out.string(), corpus.string(), max_steps, more);
  }
};

/// Waits (up to a minute) until `metrics` holds a record: the training loop is running.
void wait_for_records(const fs::path& metrics) {
  for (int i = 0; i < 600; ++i) {
    std::error_code ec;
    if (fs::file_size(metrics, ec) > 0 && !ec) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("no record in " << metrics);
}

}  // namespace

TEST_CASE("ownership: lathe claims, overwrites and removes only what its manifest lists", "[ownership]") {
  TempDir dir;
  const auto mine = dir.path() / "out/eval.json";
  const auto theirs = dir.write("out/notes.json", "user data");
  lathe::io::claim(mine);
  std::ofstream(mine) << "lathe";
  CHECK(lathe::io::owns(mine));
  CHECK(!lathe::io::owns(theirs));
  CHECK(error_of([&] { lathe::io::claim(theirs); }) ==
        "'" + theirs.string() +
            "' exists and was not written by lathe; lathe never overwrites or deletes a file it did not write: move "
            "it away, or choose another directory");
  CHECK(!lathe::io::remove_owned(theirs));
  CHECK(read_file(theirs) == "user data");
  CHECK(lathe::io::owned_entries(dir.path() / "out") == std::vector<fs::path>{mine});
  CHECK(lathe::io::remove_owned(mine));
  CHECK(!fs::exists(mine));
  CHECK(!lathe::io::owns(mine));
}

TEST_CASE("ownership: a directory lock excludes other processes and is re-entrant in one", "[ownership]") {
  TempDir dir;
  const auto lock_file = (dir.path() / lathe::io::kLockName).string();
  {
    lathe::io::DirLock a(dir.path());
    lathe::io::DirLock again(dir.path());  // the same process: re-entrant
    // util-linux flock(1) is another process: it cannot take the lock while we hold it.
    CHECK(lathe::test::run_process({"flock", "-n", lock_file, "true"}).code == 1);
  }
  CHECK(lathe::test::run_process({"flock", "-n", lock_file, "true"}).code == 0);  // released
  lathe::test::Child holder({"flock", lock_file, "sleep", "30"});
  std::string err = "no error";
  for (int i = 0; i < 100 && err == "no error"; ++i) {
    err = error_of([&] { lathe::io::DirLock b(dir.path()); });
    if (err == "no error") std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(contains(err, dir.path().string() + " is in use by lathe ("));
}

TEST_CASE("ownership: data prepare leaves the user's files in a shared shard directory", "[ownership][data]") {
  SmallRun run;
  const auto shards = run.dir.path() / "mine";
  const auto foreign = run.dir.write("mine/fineweb_train_000001.bin", std::string(4096, '\x01'));
  const auto recipe = run.dir.write("r.yaml", run.recipe(run.dir.path() / "out", 2));
  // data.shard_dir points into the user's own directory.
  const std::vector<std::string> set{"--set", "data.shard_dir=" + shards.string()};
  auto args = [&](std::vector<std::string> a) {
    a.insert(a.end(), set.begin(), set.end());
    return a;
  };
  REQUIRE(run_lathe(args({"tokenizer", "train", recipe.string()})).code == 0);
  auto first = run_lathe(args({"data", "prepare", recipe.string()}));
  INFO(first.err);
  REQUIRE(first.code == 0);
  CHECK(fs::exists(shards / "train_000000.bin"));
  CHECK(read_file(foreign) == std::string(4096, '\x01'));
  auto forced = run_lathe(args({"data", "prepare", recipe.string(), "--force"}));
  INFO(forced.err);
  REQUIRE(forced.code == 0);
  CHECK(contains(forced.out, "removed the "));
  CHECK(read_file(foreign) == std::string(4096, '\x01'));

  SECTION("a file of the user's with a shard's name stops the stage before anything is written") {
    TempDir other;
    const auto in_the_way = other.write("train_000000.bin", "not lathe's");
    std::vector<std::string> a{"data", "prepare", recipe.string(), "--set", "data.shard_dir=" + other.path().string()};
    auto r = run_lathe(a);
    CHECK(r.code == 1);
    CHECK(contains(r.err, "'" + in_the_way.string() + "' exists and was not written by lathe"));
    CHECK(read_file(in_the_way) == "not lathe's");
    CHECK(!fs::exists(other.path() / "index.json"));
    CHECK(!fs::exists(other.path() / "val_000000.bin"));
    a.push_back("--force");
    CHECK(run_lathe(a).code == 1);
    CHECK(read_file(in_the_way) == "not lathe's");
  }
}

TEST_CASE("ownership: lathe run leaves the recipe in its own out_dir byte-identical", "[ownership][run]") {
  SmallRun run;
  const auto exp = run.dir.path() / "exp";
  // The common layout: exp/recipe.yaml with run.out_dir: exp.
  const auto recipe = run.dir.write("exp/recipe.yaml", run.recipe(exp, 2));
  const auto before = read_file(recipe);
  auto first = run_lathe({"run", recipe.string()});
  INFO(first.out << first.err);
  REQUIRE(first.code == 0);
  CHECK(read_file(recipe) == before);
  CHECK(fs::exists(exp / "resolved.yaml"));
  auto forced = run_lathe({"run", recipe.string(), "--force"});
  INFO(forced.out << forced.err);
  REQUIRE(forced.code == 0);
  CHECK(read_file(recipe) == before);
  // Running the resolved recipe itself never rewrites it either.
  const auto resolved = read_file(exp / "resolved.yaml");
  CHECK(run_lathe({"run", (exp / "resolved.yaml").string()}).code == 0);
  CHECK(read_file(exp / "resolved.yaml") == resolved);
}

TEST_CASE("ownership: a second writer of a run directory stops at once, the first finishes", "[ownership][train]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 1000000));
  REQUIRE(run_lathe({"tokenizer", "train", recipe.string()}).code == 0);
  REQUIRE(run_lathe({"data", "prepare", recipe.string()}).code == 0);
  lathe::test::Child first({LATHE_CLI, "train", recipe.string()});
  wait_for_records(out / "metrics.jsonl");
  auto second = run_lathe({"train", recipe.string()});
  CHECK(second.code == 1);
  CHECK(contains(second.err, out.string() + " is in use by lathe (pid "));
  auto forced = run_lathe({"run", recipe.string(), "--force"});
  CHECK(forced.code == 1);
  CHECK(contains(forced.err, "is in use by lathe"));
  first.signal(SIGTERM);
  auto res = first.wait();
  INFO(res.out << res.err);
  CHECK(res.code == 3);  // interrupted after a checkpoint: resumable
  CHECK(contains(res.out, "received SIGTERM: saved"));
  const auto ckpts = lathe::train::list_checkpoints(out / "checkpoints");
  REQUIRE(!ckpts.empty());
  CHECK(lathe::train::load_checkpoint(ckpts.back()).state.step >= 1);
}

TEST_CASE("ownership: a whole run in a directory full of the user's files leaves every one of them alone",
          "[ownership][run]") {
  SmallRun run;
  const auto out = run.dir.path() / "used";
  // Unrelated files with the extensions of lathe's artifacts, where lathe writes.
  const std::vector<fs::path> theirs{"notes.json",
                                     "old.yaml",
                                     "recipe.yaml",
                                     "data.bin",
                                     "metrics.jsonl.bak",
                                     "samples.txt",
                                     "shards/fineweb_train_000001.bin",
                                     "shards/index.json.old",
                                     "shards/train_000000.bin.orig",
                                     "checkpoints/step_00000003_backup/meta.json",
                                     "checkpoints/mine.safetensors",
                                     "checkpoints/.tmp-step_00000002-keep/model.safetensors",
                                     "tensorboard/events.out.tfevents.1.other.1"};
  for (const auto& f : theirs) run.dir.write((out / f).lexically_relative(run.dir.path()).string(), "user " + f.string());
  // The backup even holds a lathe-looking meta.json: still not a checkpoint, by its name.
  std::ofstream(out / "checkpoints/step_00000003_backup/meta.json")
      << R"({"format": "lathe-checkpoint", "version": 1, "step": 3})";
  const auto before = snapshot(out, theirs);
  // The default recipe, made small: a tiny corpus, model and step count.
  const auto recipe = (lathe::test::source_dir() / "recipes/gpt/tiny_pretrain.yaml").string();
  const std::vector<std::string> set{"--set", "run.out_dir=" + out.string(),
                                     "--set", "data.train_files=[" + run.corpus.string() + "]",
                                     "--set", "tokenizer.vocab_size=300",
                                     "--set", "model.n_layer=1",
                                     "--set", "model.d_model=32",
                                     "--set", "train.max_steps=4",
                                     "--set", "schedule.warmup_steps=1",
                                     "--set", "train.save_every=2",
                                     "--set", "train.keep_last=1",
                                     "--set", "generate.max_new_tokens=4"};
  for (const bool force : {false, true}) {
    std::vector<std::string> args{"run", recipe};
    args.insert(args.end(), set.begin(), set.end());
    if (force) args.push_back("--force");
    auto r = run_lathe(args, lathe::test::source_dir());
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    CHECK(snapshot(out, theirs) == before);
    CHECK(fs::exists(out / "checkpoints/step_00000004/meta.json"));
    CHECK(fs::exists(out / "samples.jsonl"));
  }
}

TEST_CASE("ownership: a checkpoint that does not fit leaves nothing behind and the run resumes", "[ownership][train]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 2));
  REQUIRE(run_lathe({"run", recipe.string(), "--set", "pipeline=[tokenizer, data, train]"}).code == 0);
  const auto step2 = out / "checkpoints/step_00000002";
  const auto model = fs::file_size(step2 / "model.safetensors"), trainer = fs::file_size(step2 / "trainer.safetensors");
  REQUIRE(trainer > model + 4096);
  // A file-size limit between the two files: the optimizer state cannot be written, as on a
  // full disk (the write fails with EFBIG; SIGXFSZ is ignored so the write reports it).
  const auto blocks = (model + trainer) / 2 / 1024;
  auto full = lathe::test::run_process(
      {"bash", "-c", fmt::format("trap '' XFSZ; ulimit -f {}; exec {} train {} --set train.max_steps=4", blocks,
                                 LATHE_CLI, recipe.string())});
  INFO(full.out << full.err);
  CHECK(full.code == 1);
  CHECK(contains(full.err, "cannot write checkpoint " + (out / "checkpoints/step_00000004").string()));
  CHECK(contains(full.err, "it needs about "));
  CHECK(contains(full.err, "The earlier checkpoints are intact"));
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) {
    INFO(e.path());
    CHECK(!e.path().filename().string().starts_with(".tmp-"));
  }
  CHECK(lathe::train::load_checkpoint(step2).state.step == 2);
  // With room again, the same command resumes from step 2 and finishes.
  auto again = run_lathe({"train", recipe.string(), "--set", "train.max_steps=4"});
  INFO(again.out << again.err);
  CHECK(again.code == 0);
  CHECK(contains(again.out, "(resumed at 2)"));
  CHECK(lathe::train::list_checkpoints(out / "checkpoints").back().filename() == "step_00000004");
}

TEST_CASE("ownership: a fresh run refuses an out_dir holding another run's checkpoints, --force starts over",
          "[ownership][train]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 12));
  REQUIRE(run_lathe({"run", recipe.string(), "--set", "pipeline=[tokenizer, data, train]"}).code == 0);
  REQUIRE(lathe::train::list_checkpoints(out / "checkpoints").back().filename() == "step_00000012");
  // The same recipe, fresh (resume none), for 6 steps: refused, nothing of the first run lost.
  const std::vector<std::string> fresh{"train", recipe.string(), "--resume", "none", "--set", "train.max_steps=6"};
  auto refused = run_lathe(fresh);
  CHECK(refused.code == 1);
  CHECK(contains(refused.err, "holds the checkpoints of an earlier run (newest step_00000012)"));
  CHECK(lathe::train::list_checkpoints(out / "checkpoints").size() == 2);
  // meta.json's val_loss describes its own step: step 10 was not validated (eval_every 0), 12 was.
  CHECK(contains(read_file(out / "checkpoints/step_00000010/meta.json"), "\"val_loss\": null"));
  CHECK(!contains(read_file(out / "checkpoints/step_00000012/meta.json"), "\"val_loss\": null"));
  // Resuming an earlier checkpoint while later ones exist would interleave two histories.
  auto older = run_lathe({"train", recipe.string(), "--resume", (out / "checkpoints/step_00000010").string()});
  CHECK(older.code == 1);
  CHECK(contains(older.err, "holds checkpoints later than"));
  // --force: the earlier run's checkpoints and metrics go (and are named); the new ones stay.
  auto forced_args = fresh;
  forced_args.push_back("--force");
  auto forced = run_lathe(forced_args);
  INFO(forced.out << forced.err);
  REQUIRE(forced.code == 0);
  CHECK(contains(forced.out, "removed checkpoints/step_00000010, checkpoints/step_00000012, metrics.jsonl"));
  CHECK(lathe::train::list_checkpoints(out / "checkpoints").back().filename() == "step_00000006");
  CHECK(fs::exists(out / "checkpoints/step_00000006/model.safetensors"));
}

TEST_CASE("integrity: changing one key reruns exactly the stages it affects, or refuses", "[integrity][run]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 2));
  auto lathe_run = [&](std::vector<std::string> set) {
    std::vector<std::string> args{"run", recipe.string()};
    for (auto& s : set) {
      args.push_back("--set");
      args.push_back(s);
    }
    return run_lathe(args);
  };
  // Which stages ran ("stage x: " without "skipped").
  auto ran = [](const std::string& log) {
    std::vector<std::string> out;
    for (const char* s : {"tokenizer", "data", "train", "eval", "generate"})
      if (contains(log, std::string("stage ") + s + ": ") && !contains(log, std::string("stage ") + s + ": skipped"))
        out.push_back(s);
    return out;
  };
  using V = std::vector<std::string>;
  auto first = lathe_run({});
  INFO(first.out << first.err);
  REQUIRE(first.code == 0);
  CHECK(ran(first.out) == V{"tokenizer", "data", "train", "eval", "generate"});
  CHECK(ran(lathe_run({}).out) == V{});
  const auto resolved = read_file(out / "resolved.yaml");
  {
    // A run made before tokenizer.pre_tokenizer and tokenizer.pattern existed: keys added at
    // their defaults change nothing.
    auto stages = nlohmann::json::parse(read_file(out / "stages.json"));
    int removed = 0;
    for (auto& [stage, record] : stages.items())
      for (const char* key : {"tokenizer.pre_tokenizer", "tokenizer.pattern"}) removed += record.erase(key);
    REQUIRE(removed >= 2);
    std::ofstream(out / "stages.json") << stages.dump(2);
    auto again = lathe_run({});
    INFO(again.out << again.err);
    CHECK(again.code == 0);
    CHECK(ran(again.out) == V{});
  }

  auto gen = lathe_run({"generate.prompts=[Then]"});
  CHECK(ran(gen.out) == V{"generate"});
  CHECK(contains(gen.out, "inputs changed (generate.prompts: [And] -> [Then])"));
  CHECK(contains(read_file(out / "samples.jsonl"), "\"prompt\":\"Then\""));
  CHECK(ran(lathe_run({"generate.prompts=[Then]", "eval.batches=1"}).out) == V{"eval"});
  // More steps: training continues, and what reads its checkpoint runs again.
  const std::vector<std::string> longer{"generate.prompts=[Then]", "eval.batches=1", "train.max_steps=4"};
  auto cont = lathe_run(longer);
  INFO(cont.out << cont.err);
  CHECK(ran(cont.out) == V{"train", "eval", "generate"});
  CHECK(contains(cont.out, "(resumed at 2)"));

  // Changes that would make the trained run inconsistent are refused, naming the key; the
  // directory keeps the recipe of the last finished run.
  const auto settled = read_file(out / "resolved.yaml");
  CHECK(settled != resolved);
  auto with = [&](const std::string& change) {
    auto s = longer;
    s.push_back(change);
    return lathe_run(s);
  };
  auto model = with("model.n_layer=2");
  CHECK(model.code == 1);
  CHECK(contains(model.err, "is another model than the recipe's:\n  model.n_layer: 1 in the checkpoint, 2 in the recipe"));
  auto data = with("data.val_fraction=0.2");
  CHECK(data.code == 1);
  CHECK(contains(data.err, "the data stage's inputs changed since the run in " + out.string() +
                               " was trained (data.val_fraction: 0.1 -> 0.2)"));
  auto tok = with("tokenizer.vocab_size=310");
  CHECK(tok.code == 1);
  CHECK(contains(tok.err, "the tokenizer stage's inputs changed since the run in " + out.string() +
                              " was trained (tokenizer.vocab_size: 300 -> 310)"));
  CHECK(read_file(out / "resolved.yaml") == settled);
  // Training's own settings may change on resume (here the learning rate, for the new steps).
  auto lr = lathe_run({"generate.prompts=[Then]", "eval.batches=1", "train.max_steps=6", "optim.lr=1e-4"});
  INFO(lr.out << lr.err);
  CHECK(lr.code == 0);
  CHECK(ran(lr.out) == V{"train", "eval", "generate"});
  CHECK(contains(lr.out, "resuming with changed settings: optim.lr: "));
  CHECK(contains(lr.out, "train.max_steps: 4 -> 6"));
  // The forced run starts over from the changed tokenizer.
  auto forced = run_lathe({"run", recipe.string(), "--set", "tokenizer.vocab_size=310", "--force"});
  INFO(forced.out << forced.err);
  CHECK(forced.code == 0);
  CHECK(ran(forced.out) == V{"tokenizer", "data", "train", "eval", "generate"});
}

TEST_CASE("integrity: resuming or starting from a checkpoint of another architecture names every key", "[integrity][train]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 2));
  REQUIRE(run_lathe({"run", recipe.string(), "--set", "pipeline=[tokenizer, data, train]"}).code == 0);
  const auto ckpt = out / "checkpoints/step_00000002";
  auto other = run_lathe({"train", recipe.string(), "--set", "model.n_layer=2", "--set", "model.d_model=32",
                          "--set", "train.max_steps=4"});
  CHECK(other.code == 1);
  CHECK(contains(other.err, "the checkpoint " + ckpt.string() + " is another model than the recipe's:\n"
                            "  model.n_layer: 1 in the checkpoint, 2 in the recipe\n"
                            "  model.d_model: 16 in the checkpoint, 32 in the recipe\n"));
  // init_from in a new out_dir: the same check; a longer context is refused too, before training.
  auto init = run_lathe({"train", recipe.string(), "--set", "run.out_dir=" + (run.dir.path() / "ft").string(), "--set",
                         "tokenizer.path=" + (out / "tokenizer.json").string(), "--set",
                         "data.shard_dir=" + (out / "shards").string(), "--set", "train.init_from=" + ckpt.string(),
                         "--set", "model.max_seq_len=32"});
  CHECK(init.code == 1);
  CHECK(contains(init.err, "train.init_from " + ckpt.string() + " is another model than the recipe's:\n"
                           "  model.max_seq_len: 16 in the checkpoint, 32 in the recipe"));
  // Dropout is the recipe's: it applies to a resumed run.
  auto dropout = run_lathe({"train", recipe.string(), "--set", "model.dropout=0.1", "--set", "train.max_steps=4"});
  INFO(dropout.out << dropout.err);
  CHECK(dropout.code == 0);
  CHECK(contains(read_file(out / "checkpoints/step_00000004/meta.json"), "dropout: 0.1"));
}

TEST_CASE("integrity: an interrupted lathe run stops after the checkpoint and exits 3", "[integrity][run]") {
  SmallRun run;
  const auto out = run.dir.path() / "run";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 1000000));
  REQUIRE(run_lathe({"run", recipe.string(), "--set", "pipeline=[tokenizer, data]"}).code == 0);
  lathe::test::Child child({LATHE_CLI, "run", recipe.string()});
  wait_for_records(out / "metrics.jsonl");  // training (and its signal handling) has started
  child.signal(SIGINT);
  auto res = child.wait();
  INFO(res.out << res.err);
  CHECK(res.code == 3);
  CHECK(contains(res.out, "stage train: interrupted at step "));
  CHECK(contains(res.out, "run interrupted in stage train; run the same command again to resume"));
  CHECK(!contains(res.out, "stage eval"));
  CHECK(!fs::exists(out / "eval.json"));
  CHECK(!lathe::train::list_checkpoints(out / "checkpoints").empty());
}

TEST_CASE("cli: generate and eval after a run: one prompt per --prompt, integer counts, errors before output",
          "[cli][run]") {
  SmallRun run;
  const auto out = run.dir.path() / "out";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 2));
  auto first = run_lathe({"run", recipe.string()});
  INFO(first.err);
  REQUIRE(first.code == 0);

  // A prompt holding a newline (or a comma) is one prompt: no "---" separator between parts.
  auto one = run_lathe({"generate", recipe.string(), "--prompt", "And God\nsaid, Let", "--max-new-tokens", "2", "--greedy"});
  INFO(one.err);
  REQUIRE(one.code == 0);
  CHECK(one.out.starts_with("And God\nsaid, Let"));
  CHECK(!contains(one.out, "---"));
  auto two = run_lathe({"generate", recipe.string(), "--prompt", "And", "--prompt", "The", "--max-new-tokens", "2"});
  REQUIRE(two.code == 0);
  CHECK(contains(two.out, "\n---\nThe"));

  // eval prints counts as integers.
  auto ev = run_lathe({"eval", recipe.string()});
  INFO(ev.err);
  REQUIRE(ev.code == 0);
  const auto j = nlohmann::json::parse(ev.out);
  CHECK(j["batches"].is_number_integer());
  CHECK(j["targets"].is_number_integer());
  CHECK(j["loss"].is_number_float());

  // A model that cannot be loaded is reported before any prompt text is printed.
  auto missing = run_lathe({"generate", "--model", (run.dir.path() / "nowhere").string(), "--prompt", "hi"});
  CHECK(missing.code == 1);
  CHECK(missing.out.empty());
  CHECK(contains(missing.err, "lathe generate: "));
  // A prompt longer than the context (max_seq_len 16) is the user's error, named, with nothing printed.
  std::string longer;
  for (int i = 0; i < 40; ++i) longer += "And the earth was without form, and void; ";
  auto too_long = run_lathe({"generate", recipe.string(), "--prompt", longer});
  CHECK(too_long.code == 1);
  CHECK(too_long.out.empty());
  CHECK(contains(too_long.err, "more than the model's context of 16"));
  CHECK(!contains(too_long.err, "internal error"));
}

TEST_CASE("train: keep_best keeps the checkpoint of the lowest validation loss besides the newest", "[train][checkpoint]") {
  // A learning rate far too high: the validation loss is lowest early and never comes back.
  SmallRun run;
  const auto out = run.dir.path() / "out";
  const auto recipe = run.dir.write("r.yaml", run.recipe(out, 12));
  REQUIRE(run_lathe({"tokenizer", "train", recipe.string()}).code == 0);
  REQUIRE(run_lathe({"data", "prepare", recipe.string()}).code == 0);
  auto res = run_lathe({"train", recipe.string(), "--set", "optim.lr=1.0", "--set", "optim.grad_clip=0", "--set",
                        "schedule.name=constant", "--set", "schedule.warmup_steps=0", "--set", "train.eval_every=2",
                        "--set", "train.save_every=0", "--set", "train.keep_last=1", "--set", "train.eval_batches=4"});
  INFO(res.err);
  REQUIRE(res.code == 0);
  int64_t best_step = -1;
  double best = std::numeric_limits<double>::infinity();
  std::ifstream metrics(out / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["split"] == "val" && j["loss"].get<double>() < best) {
      best = j["loss"].get<double>();
      best_step = j["step"].get<int64_t>();
    }
  }
  REQUIRE(best_step > 0);
  REQUIRE(best_step < 12);  // the case is only meaningful when the best is not the newest
  const auto kept = lathe::train::list_checkpoints(out / "checkpoints");
  REQUIRE(kept.size() == 2);
  CHECK(lathe::train::checkpoint_step(kept.front()) == best_step);
  CHECK(lathe::train::checkpoint_step(kept.back()) == 12);
  const auto meta = nlohmann::json::parse(std::ifstream(kept.front() / "meta.json"));
  CHECK(meta["val_loss"].get<double>() == best);
}
