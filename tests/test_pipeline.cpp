// What the stages of a pipeline read and protect: the record of every input a stage reads,
// shards shared between runs, inputs a stage cannot use, and the checks `lathe recipe check`
// shares with `lathe run`.

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "lathe/compress/quantize.hpp"
#include "lathe/export/graph.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/pipeline/registry.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"
#include "run_fixture.hpp"
#include "support.hpp"

using lathe::test::error_of;
using lathe::test::read_file;
using lathe::test::TempDir;
using nlohmann::json;
using lathe::recipe::Stage;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Every file under `dir` with its bytes (but lathe's locks, which say who holds them).
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != lathe::io::kLockName)
      out[e.path().lexically_relative(dir).string()] = read_file(e.path());
  return out;
}

}  // namespace

TEST_CASE("integrity: a run's data stage leaves the shards another trained run reads alone", "[integrity][data]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  // Run A prepares its shards and trains on them.
  auto a = lathe::test::prepared(corpus.recipe(dir.path() / "a", "max_steps: 2, batch_size: 2, eval_every: 0"));
  lathe::pipeline::run_train_stage(a, false);
  const auto shards = lathe::recipe::shard_dir(a);
  REQUIRE(!lathe::train::list_checkpoints(lathe::recipe::checkpoint_dir(a)).empty());
  const auto before = files_of(shards);

  // Run B reads A's tokenizer and shards with other data settings: preparing would rewrite them.
  auto b = lathe::test::recipe_from(corpus.recipe(dir.path() / "b", "max_steps: 2, batch_size: 2"));
  b.tokenizer.path = lathe::recipe::tokenizer_path(a).string();
  b.data.shard_dir = shards.string();
  b.data.val_fraction = 0.2;
  for (bool force : {false, true}) {
    const auto msg = error_of([&] { lathe::pipeline::run_data_stage(b, force); });
    INFO("force " << force);
    CHECK(contains(msg, "the shards in " + shards.string() + " were used to train the run whose checkpoints are in " +
                            fs::weakly_canonical(lathe::recipe::checkpoint_dir(a)).string()));
    CHECK(contains(msg, "set another data.shard_dir for this run"));
  }
  // The shards and their index (lathe's own bookkeeping files aside: its lock, its manifest).
  auto data_files = [](std::map<std::string, std::string> files) {
    std::erase_if(files, [](const auto& f) { return f.first == lathe::io::kManifestName || f.first == "trained_runs.json"; });
    return files;
  };
  CHECK(data_files(files_of(shards)) == data_files(before));
  CHECK(data_files(before).count("index.json") == 1);
  // B with A's own settings finds the shards as they are and trains on them.
  b.data.val_fraction = a.data.val_fraction;
  CHECK(lathe::pipeline::run_data_stage(b, false).skipped);
  lathe::pipeline::run_train_stage(b, false);
  // A's run gone, its shards are free to be prepared again; B's checkpoints now hold them.
  fs::remove_all(lathe::recipe::checkpoint_dir(a));
  b.data.val_fraction = 0.2;
  CHECK(contains(error_of([&] { lathe::pipeline::run_data_stage(b, false); }),
                 "the data stage's inputs changed since the run in " + b.run.out_dir + " was trained"));
  fs::remove_all(lathe::recipe::checkpoint_dir(b));
  CHECK_FALSE(lathe::pipeline::run_data_stage(b, false).skipped);
}

TEST_CASE("integrity: a stage that reads task data records every data and tokenizer key", "[integrity]") {
  const lathe::recipe::Recipe r;
  for (auto stage : {Stage::Eval, Stage::Prune, Stage::Quantize}) {
    const auto record = lathe::pipeline::stage_record(r, stage, "model.safetensors");
    for (const auto& k : lathe::recipe::recipe_keys(r))
      if (k.key.starts_with("data.") || k.key.starts_with("tokenizer.")) {
        INFO(lathe::recipe::enum_name(stage) << ": " << k.key);
        CHECK(record.count(k.key) == 1);
      }
    CHECK(record.count("file " + (lathe::recipe::shard_dir(r) / "index.json").string()) == 1);
  }
  for (auto stage : {Stage::Generate, Stage::Export}) {
    const auto record = lathe::pipeline::stage_record(r, stage, "model.safetensors");
    CHECK(record.count("tokenizer.path") == 1);
    CHECK(record.count("data.sampler") == 0);
  }
  CHECK_THROWS_WITH(lathe::pipeline::stage_reads(Stage::Data), Catch::Contains("the data stage reads no model"));
}

TEST_CASE("integrity: prune and quantize run again when the sampler of their batches changes", "[integrity][prune]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 2, eval_every: 0",
                                               "eval: {batches: 1}\n"));
  lathe::pipeline::run_train_stage(r, false);
  r.prune.method = lathe::compress::PruneMethod::Wanda;  // its statistics come from training batches
  r.prune.sparsity = 0.5;
  r.prune.calibration_batches = 1;
  r.prune.finetune_steps = 0;
  r.quantize.algorithm = lathe::compress::QuantAlgorithm::Gptq;  // calibrated on training batches
  r.quantize.calibration_batches = 1;
  r.quantize.source = lathe::recipe::ModelSource::Checkpoint;
  CHECK_FALSE(lathe::pipeline::run_prune_stage(r, false).skipped);
  CHECK_FALSE(lathe::pipeline::run_quantize_stage(r, false).skipped);
  CHECK(lathe::pipeline::run_prune_stage(r, false).skipped);
  CHECK(lathe::pipeline::run_quantize_stage(r, false).skipped);
  r.data.sampler = lathe::recipe::Sampler::Sequential;
  const auto prune = lathe::pipeline::run_prune_stage(r, false);
  CHECK_FALSE(prune.skipped);
  CHECK(contains(prune.summary, "data.sampler: random -> sequential"));
  const auto quantize = lathe::pipeline::run_quantize_stage(r, false);
  CHECK_FALSE(quantize.skipped);
  CHECK(contains(quantize.summary, "data.sampler: random -> sequential"));
}

TEST_CASE("integrity: classification eval runs again when the examples it reads change", "[integrity][train]") {
  TempDir dir;
  auto vocab = dir.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\ndog\nsat\nran\n");
  std::string train = "text,label\n", val = "text,label\n", flipped = "text,label\n";
  for (int i = 0; i < 16; ++i) train += i % 2 ? "the cat sat,cat\n" : "the dog ran,dog\n";
  for (int i = 0; i < 8; ++i) {
    val += i % 2 ? "cat sat,cat\n" : "dog ran,dog\n";
    flipped += i % 2 ? "cat sat,dog\n" : "dog ran,cat\n";
  }
  auto train_csv = dir.write("train.csv", train);
  auto val_csv = dir.write("val.csv", val);
  auto r = lathe::test::recipe_from(fmt::format(R"(pipeline: [train, eval]
run: {{out_dir: {}/run, device: cpu, seed: 1}}
tokenizer: {{type: wordpiece, path: {}, special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}}
data: {{train_files: [{}], val_files: [{}], seq_len: 8}}
model: {{arch: bert, n_layer: 1, n_head: 2, d_model: 16, max_seq_len: 8, num_labels: 2}}
optim: {{lr: 1.0e-2}}
schedule: {{warmup_steps: 1}}
train: {{task: classification, max_steps: 30, batch_size: 8, eval_every: 0}}
eval: {{batches: 1}}
)",
                                                dir.path().string(), vocab.string(), train_csv.string(),
                                                val_csv.string()));
  std::ostringstream log;
  lathe::pipeline::run_pipeline(r, {}, log);
  INFO(log.str());
  auto accuracy = [&] {
    return json::parse(read_file(fs::path(r.run.out_dir) / "eval.json"))["metrics"]["accuracy"].get<double>();
  };
  const double right = accuracy();
  REQUIRE(right > 0.5);
  CHECK(lathe::pipeline::run_eval_stage(r, false).skipped);
  // Every label flipped: the same model is now wrong where it was right.
  std::ofstream(val_csv) << flipped;
  const auto again = lathe::pipeline::run_eval_stage(r, false);
  CHECK_FALSE(again.skipped);
  CHECK(contains(again.summary, "file " + val_csv.string() + ": changed"));
  CHECK(accuracy() == Approx(1.0 - right));
}

TEST_CASE("prune: a quantized model is refused before anything is written", "[prune][errors]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 2, eval_every: 0",
                                               "eval: {batches: 1}\n"));
  lathe::pipeline::run_train_stage(r, false);
  r.quantize.source = lathe::recipe::ModelSource::Checkpoint;
  lathe::pipeline::run_quantize_stage(r, false);
  const auto quantized = lathe::recipe::quantized_dir(r) / "model.safetensors";
  r.prune.checkpoint = quantized.string();
  r.prune.finetune_steps = 3;
  const auto before = files_of(r.run.out_dir);
  for (auto method : {lathe::compress::PruneMethod::Magnitude, lathe::compress::PruneMethod::Structured}) {
    r.prune.method = method;
    const auto msg = error_of([&] { lathe::pipeline::run_prune_stage(r, false); });
    CHECK(msg.starts_with(quantized.string() + " is a quantized model ("));
    CHECK(contains(msg, "prune its float checkpoint (prune.checkpoint)"));
    CHECK_FALSE(contains(msg, "init_from"));
  }
  CHECK(files_of(r.run.out_dir) == before);
}

TEST_CASE("cli: recipe check refuses the ONNX opset that run refuses", "[cli][recipe]") {
  TempDir dir;
  const auto max = lathe::export_::max_opset();
  const auto recipe = dir.write("r.yaml", fmt::format("export:\n  opset: {}\ndata:\n  train_files: [c.txt]\n", max + 1));
  const auto check = lathe::test::run_lathe({"recipe", "check", recipe.string()});
  CHECK(check.code == 1);
  CHECK(contains(check.err, recipe.string() + ":2:10: export.opset: " + std::to_string(max + 1) +
                                " is outside 17 (LayerNormalization) .. " + std::to_string(max)));
  // An export to Hugging Face only writes no ONNX graph, whatever the opset.
  const auto hf = dir.write("hf.yaml", fmt::format("export:\n  format: hf\n  opset: {}\ndata:\n  train_files: [c.txt]\n", max + 1));
  CHECK(lathe::test::run_lathe({"recipe", "check", hf.string()}).code == 0);
}

namespace {

std::vector<std::string> mpirun(int ranks) {
  std::vector<std::string> argv{"mpirun", "-n", std::to_string(ranks), "--oversubscribe", "--bind-to", "none"};
  if (geteuid() == 0) argv.push_back("--allow-run-as-root");
  return argv;
}

}  // namespace

TEST_CASE("prune: lathe run under mpirun fine-tunes data-parallel and ends with one process's model",
          "[prune][dist][mpi]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  // One trained checkpoint, pruned by each run.
  auto base = lathe::test::prepared(corpus.recipe(dir.path() / "base", "max_steps: 2, batch_size: 4, eval_every: 0"));
  lathe::pipeline::run_train_stage(base, false);
  const auto ckpt = lathe::train::list_checkpoints(lathe::recipe::checkpoint_dir(base)).back();
  for (const std::string schedule : {"one_shot", "gradual"}) {
    auto recipe = [&](const std::string& name, int64_t batch) {
      return dir.write(name + ".yaml",
                       fmt::format(R"(pipeline: [prune]
run: {{out_dir: {}, seed: 7, device: cpu, threads: 1}}
tokenizer: {{path: {}}}
data: {{shard_dir: {}, seq_len: 32, num_workers: 1}}
model: {{n_layer: 2, n_head: 2, d_model: 32, max_seq_len: 32, dropout: 0.0}}
optim: {{lr: 1.0e-2}}
schedule: {{name: constant, warmup_steps: 0}}
train: {{batch_size: {}, log_every: 1, eval_every: 0, save_every: 0}}
eval: {{batches: 1}}
prune: {{checkpoint: {}, sparsity: 0.5, schedule: {}, finetune_steps: 4, prune_every: 1}}
distributed: {{timeout_s: 60}}
)",
                                   (dir.path() / name).string(), lathe::recipe::tokenizer_path(base).string(),
                                   lathe::recipe::shard_dir(base).string(), batch, ckpt.string(), schedule));
    };
    INFO(schedule);
    auto one = lathe::test::run_process({LATHE_CLI, "run", recipe("one_" + schedule, 8).string()});
    INFO(one.out << one.err);
    REQUIRE(one.code == 0);
    auto argv = mpirun(2);
    argv.insert(argv.end(), {LATHE_CLI, "run", recipe("two_" + schedule, 4).string()});
    auto two = lathe::test::run_process(argv);
    INFO(two.out << two.err);
    REQUIRE(two.code == 0);
    CHECK(contains(two.out, "data-parallel over 2 ranks (mpi, mpirun): global batch 8"));
    const auto a = lathe::models::load_model(dir.path() / ("one_" + schedule) / "pruned/model.safetensors");
    const auto b = lathe::models::load_model(dir.path() / ("two_" + schedule) / "pruned/model.safetensors");
    const auto pa = a.module()->named_parameters(), pb = b.module()->named_parameters();
    for (const auto& item : pa) {
      INFO(item.key());
      const auto& x = item.value();
      const auto& y = pb[item.key()];
      CHECK(((x == 0) == (y == 0)).all().item<bool>());  // the same weights pruned
      CHECK((x - y).abs().max().item<double>() <= 2e-5);  // tests/test_dist.cpp's kDdpTol
    }
  }
  // Without a fine-tune, rank 0 prunes alone and the other ranks stay out of its directory.
  auto none = dir.write("none.yaml", fmt::format("pipeline: [prune]\nrun: {{out_dir: {}, device: cpu}}\n"
                                                 "tokenizer: {{path: {}}}\ndata: {{shard_dir: {}, seq_len: 32}}\n"
                                                 "eval: {{batches: 1}}\nprune: {{checkpoint: {}, finetune_steps: 0}}\n",
                                                 (dir.path() / "none").string(), lathe::recipe::tokenizer_path(base).string(),
                                                 lathe::recipe::shard_dir(base).string(), ckpt.string()));
  auto argv = mpirun(2);
  argv.insert(argv.end(), {LATHE_CLI, "run", none.string()});
  auto alone = lathe::test::run_process(argv);
  INFO(alone.out << alone.err);
  CHECK(alone.code == 0);
  CHECK(fs::exists(dir.path() / "none/pruned/model.safetensors"));
}

TEST_CASE("pipeline: the stage registry names every stage once, and lathe --help and the README list them as it does",
          "[pipeline][docs]") {
  std::set<std::string_view> commands;
  for (const auto& [stage, name] : lathe::EnumTable<Stage>::values) {
    const auto& spec = lathe::pipeline::stage_spec(stage);
    CHECK(spec.stage == stage);
    CHECK(spec.run != nullptr);
    CHECK(commands.insert(spec.command).second);
    // Exactly the stages that read a model declare what their output depends on.
    CHECK(spec.reads.has_value() == !spec.model_key.empty());
  }
  CHECK(lathe::pipeline::stage_registry().size() == lathe::EnumTable<Stage>::values.size());
  const auto help = lathe::test::run_lathe({"--help"});
  for (const auto& spec : lathe::pipeline::stage_registry())
    CHECK(contains(help.out, fmt::format("  {:<18} {}\n", spec.command, spec.summary)));
  const auto readme = read_file(lathe::test::source_dir() / "README.md");
  const auto table = lathe::pipeline::stage_table_markdown();
  INFO("README.md's stage table differs from the registry's (regenerate it with build/lathe recipe keys --stages)");
  for (const auto& row : lathe::test::lines(table)) CHECK(contains(readme, row + "\n"));
}

TEST_CASE("pipeline: every Hugging Face family goes through train, structured prune, int8 quantize, eval and "
          "export; transformers reads the exported family and computes the quantized model's logits",
          "[pipeline][reference]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  // A WordPiece tokenizer of at most 90 tokens: the families' test models have 97 embedding rows.
  const auto tokenizer = dir.path() / "tokenizer.json";
  const auto made = lathe::test::run_python(
      "import sys\n"
      "from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers\n"
      "t = Tokenizer(models.WordPiece(unk_token='[UNK]'))\n"
      "t.normalizer = normalizers.BertNormalizer(lowercase=True)\n"
      "t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()\n"
      "t.decoder = decoders.WordPiece()\n"
      "t.train([sys.argv[1]], trainers.WordPieceTrainer(vocab_size=90, limit_alphabet=30,\n"
      "        special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']))\n"
      "assert t.get_vocab_size() <= 90\n"
      "t.save(sys.argv[2])\n",
      {corpus.text.string(), tokenizer.string()});
  INFO(made.err);
  REQUIRE(made.code == 0);
  const std::map<std::string, std::string> family{{"llama3", "llama"}, {"qwen2", "qwen2"}, {"mistral", "mistral"},
                                                  {"gemma", "gemma"},   {"gemma2", "gemma2"}, {"phi3", "phi3"}};
  for (const auto& [kind, model_type] : family) {
    INFO(kind);
    const auto here = dir.path() / kind;
    lathe::test::run_reference("hf_models.py", {"make", kind, here.string()});
    const auto r = lathe::test::recipe_from(fmt::format(R"(pipeline: [data, train, prune, quantize, eval, export]
run: {{out_dir: {}, seed: 5, device: cpu}}
tokenizer: {{path: {}}}
data: {{train_files: [{}], seq_len: 32, val_fraction: 0.1, num_workers: 1}}
optim: {{lr: 1.0e-3}}
schedule: {{warmup_steps: 1}}
train: {{init_from: {}, max_steps: 3, batch_size: 4, save_every: 3}}
prune: {{method: structured, heads: 0.5, neurons: 0.5, finetune_steps: 2}}
quantize: {{method: int8_weight_only, source: pruned}}
eval: {{batches: 2}}
export: {{format: both, source: quantized}}
)",
                                                        (here / "run").string(), tokenizer.string(),
                                                        corpus.text.string(), (here / "hf").string()));
    std::ostringstream log;
    lathe::pipeline::run_pipeline(r, {}, log);
    INFO(log.str());
    const auto out = here / "run";
    const auto eval = json::parse(read_file(out / "eval.json"));
    CHECK(std::isfinite(eval["metrics"]["loss"].get<double>()));
    CHECK(fs::exists(out / "export" / "model.onnx"));
    const auto config = json::parse(read_file(out / "export" / "config.json"));
    CHECK(config["model_type"] == model_type);
    // Half the key/value groups and half the MLP neurons are gone, and transformers computes what
    // lathe's quantized model computes from the exported values.
    auto quantized = lathe::models::load_model(out / "quantized" / "model.safetensors");
    CHECK(quantized.options().n_head == 2);
    CHECK(config["num_attention_heads"] == 2);
    const auto ids = at::randint(0, 80, {2, 16}, at::kLong);
    lathe::io::save_safetensors(here / "ids.safetensors", {{"input_ids", ids}});
    lathe::test::run_reference("hf_models.py", {"logits", (out / "export").string(), (here / "ids.safetensors").string(),
                                                (here / "logits.safetensors").string()});
    const auto theirs = lathe::io::load_safetensors(here / "logits.safetensors").at("logits");
    torch::NoGradGuard no_grad;
    auto gpt = quantized.as<lathe::models::Gpt>();
    gpt->eval();
    CHECK((gpt(ids) - theirs).abs().max().item<double>() <= 1e-4);
  }
}
