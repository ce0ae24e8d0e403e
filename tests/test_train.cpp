// The trainer: ten AdamW steps against PyTorch (GPT and BERT MLM), exact resume, SIGTERM,
// corrupt checkpoints, NaN policies, bf16, TensorBoard files, and a whole `lathe run`.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <random>
#include <thread>

#include <ATen/ATen.h>

#include "lathe/core/error.hpp"
#include "lathe/data/collate.hpp"
#include "lathe/data/shard.hpp"
#include "lathe/train/task.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/generate.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/optimizer.hpp"
#include "lathe/train/schedule.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/evaluate.hpp"
#include "gpu.hpp"
#include "run_fixture.hpp"
#include "support.hpp"

using lathe::test::TempDir;
using lathe::test::Corpus;
using lathe::test::prepared;
using lathe::test::recipe_from;
using lathe::train::Batch;
using lathe::train::Trainer;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Ten steps of fp32 AdamW: per-step losses agree to rounding (the same kernels, another order
// of summation); parameters to a few ulps of the update size.
constexpr double kLossTol = 1e-4;
constexpr double kParamTol = 1e-5;


std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<double> train_losses(const fs::path& metrics) {
  std::vector<double> out;
  for (const auto& j : read_jsonl(metrics))
    if (j["split"] == "train") out.push_back(j["loss"].get<double>());
  return out;
}

/// Ten steps of `kind` (gpt2, bert_mlm) with optimizer `optim` (adamw: fused, adamw_unfused,
/// sgd, sgd_nesterov) and schedule `schedule`, against tests/reference/train_steps.py.
void check_against_pytorch(const std::string& kind, const std::string& optim = "adamw",
                           const std::string& schedule = "cosine") {
  TempDir dir;
  lathe::test::run_reference("train_steps.py", {kind, dir.path().string(), optim, schedule});
  const bool bert = kind == "bert_mlm";
  const std::string optim_keys =
      optim.starts_with("adamw")
          ? fmt::format("name: adamw, fused: {}, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8",
                        optim == "adamw" ? "true" : "false")
          : fmt::format("name: sgd, momentum: 0.9, nesterov: {}, weight_decay: 0.0",
                        optim == "sgd_nesterov" ? "true" : "false");
  auto r = recipe_from(fmt::format(R"(pipeline: [train]
run: {{out_dir: {}/run, device: cpu}}
model: {}
optim: {{lr: 3.0e-3, grad_clip: 1.0, {}}}
schedule: {{name: {}, warmup_steps: 3, min_lr_ratio: 0.1, decay_fraction: 0.4}}
train: {{task: {}, max_steps: 10, batch_size: 4, grad_accum: 2, init_from: {}/init}}
data: {{seq_len: 16}}
)",
                                   dir.path().string(),
                                   // The architecture of the reference models (init_from must match it).
                                   bert ? "{arch: bert, n_layer: 2, n_head: 4, d_model: 32, d_ff: 64, max_seq_len: 32, "
                                          "norm_eps: 1.0e-12, activation: gelu}"
                                        : "{arch: gpt, n_layer: 2, n_head: 4, d_model: 32, max_seq_len: 32}",
                                   optim_keys, schedule, bert ? "masked_lm" : "causal_lm",
                                   dir.path().string()));
  Trainer trainer(r);
  const auto batches = lathe::io::load_safetensors(dir.path() / "batches.safetensors");
  const auto want = json::parse(std::ifstream(dir.path() / "losses.json")).get<std::vector<double>>();
  for (int s = 0; s < 10; ++s) {
    std::vector<Batch> micro;
    for (int m = 0; m < 2; ++m) {
      const auto key = fmt::format("{}.{}", s, m);
      Batch b{batches.at("input." + key), batches.at("target." + key), {}, {}, 64};
      if (bert) {
        b.attention_mask = batches.at("mask." + key);
        b.token_type_ids = batches.at("types." + key);
      }
      micro.push_back(b);
    }
    const auto res = trainer.step(micro);
    INFO("step " << s);
    CHECK(std::abs(res.loss - want[s]) <= kLossTol);
  }
  // Final parameters, compared in Hugging Face layout.
  auto& m = trainer.model();
  lathe::models::save_hf(m, dir.path() / "ours");
  const auto ours = lathe::io::load_safetensors(dir.path() / "ours/model.safetensors");
  const auto theirs = lathe::io::load_safetensors(dir.path() / "final/model.safetensors");
  double worst = 0;
  for (const auto& [name, t] : ours.tensors) {
    INFO(name);
    const auto& ref = theirs.at(name);
    REQUIRE(ref.sizes() == t.sizes());
    worst = std::max(worst, (t.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>());
  }
  CHECK(worst <= kParamTol);
  // The update moved the weights by far more than the tolerance.
  const auto init = lathe::io::load_safetensors(dir.path() / "init/model.safetensors");
  const auto& first = ours.tensors.front();
  CHECK((first.second - init.at(first.first)).abs().max().item<double>() > 100 * kParamTol);
}

}  // namespace

TEST_CASE("train: ten AdamW steps of a GPT match PyTorch", "[train][reference]") { check_against_pytorch("gpt2"); }

TEST_CASE("train: ten AdamW steps of BERT masked LM match PyTorch", "[train][reference]") {
  check_against_pytorch("bert_mlm");
}

TEST_CASE("train: unfused AdamW with the linear schedule matches PyTorch", "[train][reference]") {
  check_against_pytorch("gpt2", "adamw_unfused", "linear");
}

TEST_CASE("train: SGD with momentum and the constant schedule matches PyTorch", "[train][reference]") {
  check_against_pytorch("gpt2", "sgd", "constant");
}

TEST_CASE("train: SGD with Nesterov momentum and the wsd schedule matches PyTorch", "[train][reference]") {
  check_against_pytorch("gpt2", "sgd_nesterov", "wsd");
}

TEST_CASE("train: every schedule gives the rates of torch.optim.lr_scheduler", "[train][reference]") {
  TempDir dir;
  lathe::test::run_reference("schedules.py", {(dir.path() / "rates.json").string()});
  const auto cases = json::parse(std::ifstream(dir.path() / "rates.json"));
  REQUIRE(cases.size() >= 8);
  for (const auto& c : cases) {
    lathe::recipe::ScheduleConfig s;
    s.name = *lathe::recipe::parse_enum<lathe::recipe::Schedule>(c["name"].get<std::string>());
    s.warmup_steps = c["warmup_steps"];
    s.min_lr_ratio = c["min_lr_ratio"];
    s.decay_fraction = c["decay_fraction"];
    const int64_t steps = c["max_steps"];
    const double lr = c["lr"];
    const auto rates = c["rates"].get<std::vector<double>>();
    REQUIRE(static_cast<int64_t>(rates.size()) == steps);
    for (int64_t step = 0; step < steps; ++step) {
      INFO(c["name"].get<std::string>() << " warmup " << s.warmup_steps << " of " << steps << ", step " << step);
      // PyTorch's schedulers update the rate multiplicatively step by step: a few ulps apart.
      CHECK(lathe::train::learning_rate(s, lr, step, steps) == Approx(rates[step]).epsilon(1e-9).margin(1e-15));
    }
  }
}

TEST_CASE("train: weight decay skips biases norms and embeddings", "[train]") {
  auto r = recipe_from("pipeline: [train]\n");
  lathe::models::ModelOptions o;
  o.vocab_size = 50;
  o.n_layer = 1;
  o.n_head = 2;
  o.d_model = 8;
  o.max_seq_len = 8;
  lathe::models::Gpt gpt(o);
  lathe::train::Optimizer opt(*gpt, r.optim);
  CHECK(opt.decayed_names() == std::vector<std::string>{"blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                                                        "blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight"});
  r.optim.decay_embeddings = true;
  CHECK(lathe::train::Optimizer(*gpt, r.optim).decayed_names().size() == 6);
}

TEST_CASE("train: a resumed run gives bit-identical losses and weights", "[train]") {
  Corpus corpus;
  TempDir a, b;
  // Dropout on, so the restored RNG state matters too.
  const std::string train = "max_steps: 12, batch_size: 4, log_every: 1, save_every: 6, eval_every: 6, eval_batches: 2";
  auto ra = prepared(corpus.recipe(a.path(), train) + "\n");
  ra.model.dropout = 0.1;
  Trainer(ra).run();
  auto rb = ra;
  rb.run.out_dir = b.path().string();
  lathe::pipeline::run_tokenizer_stage(rb, false);
  lathe::pipeline::run_data_stage(rb, false);
  Trainer(rb).run();
  // Interrupted after step 6: the checkpoint of step 12 and the records after step 6 are lost.
  const auto ckpts = lathe::train::list_checkpoints(b.path() / "checkpoints");
  REQUIRE(ckpts.size() == 2);
  fs::remove_all(ckpts.back());
  rb.train.resume = "auto";
  std::ostringstream log;
  Trainer resumed(rb, {&log, false, true, nullptr});
  CHECK(resumed.state().step == 6);
  const auto rep = resumed.run();
  CHECK(rep.start_step == 6);
  CHECK(log.str().find("resumed from " + ckpts.front().string()) != std::string::npos);

  const auto full = train_losses(a.path() / "metrics.jsonl");
  const auto again = train_losses(b.path() / "metrics.jsonl");
  REQUIRE(full.size() == 12);
  // Steps 7-12 were logged before the interruption and again after the resume: the log holds
  // each step once, all of one run id.
  REQUIRE(again.size() == 12);
  for (int i = 0; i < 12; ++i) {
    INFO("step " << i + 1);
    CHECK(again[i] == full[i]);  // exactly
  }
  std::set<std::string> ids;
  for (const auto& j : read_jsonl(b.path() / "metrics.jsonl")) ids.insert(j.value("run_id", ""));
  CHECK(ids.size() == 1);
  CHECK(ids.begin()->size() == 16);
  auto wa = lathe::io::load_safetensors(a.path() / "checkpoints/step_00000012/model.safetensors");
  auto wb = lathe::io::load_safetensors(b.path() / "checkpoints/step_00000012/model.safetensors");
  for (std::size_t i = 0; i < wa.tensors.size(); ++i) CHECK(at::equal(wa.tensors[i].second, wb.tensors[i].second));
}

TEST_CASE("train: an unreadable newest checkpoint is skipped with a warning", "[train]") {
  Corpus corpus;
  TempDir out;
  auto r = prepared(corpus.recipe(out.path(), "max_steps: 4, batch_size: 2, save_every: 2, eval_every: 0"));
  Trainer(r).run();
  const auto ckpts = lathe::train::list_checkpoints(out.path() / "checkpoints");
  REQUIRE(ckpts.size() == 2);
  // Truncate the newest model file; leave a half-written temporary directory beside it.
  fs::resize_file(ckpts.back() / "model.safetensors", 100);
  fs::create_directories(out.path() / "checkpoints/.tmp-step_00000006-1");
  const auto msg = lathe::test::error_of([&] { lathe::train::load_checkpoint(ckpts.back()); });
  CHECK(msg.find((ckpts.back() / "model.safetensors").string() + ": 100 bytes, meta.json recorded") !=
        std::string::npos);
  r.train.resume = "auto";
  std::ostringstream log;
  Trainer t(r, {&log, false, true, nullptr});
  CHECK(t.state().step == 2);
  CHECK(log.str().find("warning: skipping checkpoint " + ckpts.back().string()) != std::string::npos);
  // A directory that is not a checkpoint, named explicitly, is an error naming the file.
  r.train.resume = out.path().string();
  CHECK(lathe::test::error_of([&] { Trainer bad(r); }) ==
        (out.path() / "meta.json").string() + ": missing (not a checkpoint directory, or an incomplete one)");
  // With every checkpoint unreadable, auto refuses rather than starting a new run beside them.
  fs::resize_file(ckpts.front() / "model.safetensors", 100);
  r.train.resume = "auto";
  std::ostringstream quiet;
  const auto root = (out.path() / "checkpoints").string();
  CHECK(lathe::test::error_of([&] { Trainer none(r, {&quiet, false, true, nullptr}); }) ==
        root + " holds checkpoints, but none of them loads (" + ckpts.back().string() + ": " +
            (ckpts.back() / "model.safetensors").string() + ": 100 bytes, meta.json recorded " +
            std::to_string(lathe::io::read_json(ckpts.back() / "meta.json")["files"]["model.safetensors"].get<int64_t>()) +
            " (truncated or overwritten); " + ckpts.front().string() + ": " +
            (ckpts.front() / "model.safetensors").string() + ": 100 bytes, meta.json recorded " +
            std::to_string(lathe::io::read_json(ckpts.front() / "meta.json")["files"]["model.safetensors"].get<int64_t>()) +
            " (truncated or overwritten)): move them away, start over with --force, or choose another run.out_dir");
}

TEST_CASE("train: checkpoints whose meta.json is unreadable are named, and auto resume refuses them", "[train]") {
  Corpus corpus;
  TempDir out;
  const auto recipe = out.write("r.yaml", corpus.recipe(out.path() / "run", "max_steps: 4, batch_size: 2, save_every: 2, "
                                                                            "eval_every: 0, log_every: 1"));
  auto first = lathe::test::run_lathe({"run", recipe.string()});
  INFO(first.out << first.err);
  REQUIRE(first.code == 0);
  const auto root = out.path() / "run/checkpoints";
  const auto ckpts = lathe::train::list_checkpoints(root);
  REQUIRE(ckpts.size() == 2);
  const auto metrics = lathe::test::read_file(out.path() / "run/metrics.jsonl");

  // The newest one's meta.json damaged: resumed from the older, naming the newer.
  std::ofstream(ckpts.back() / "meta.json") << "{\"format\": ";
  auto r = recipe_from(lathe::test::read_file(recipe));
  r.train.resume = "auto";
  {
    std::ostringstream log;
    Trainer t(r, {&log, false, true, nullptr});
    CHECK(t.state().step == 2);
    CHECK(log.str().find("warning: skipping checkpoint " + ckpts.back().string() + ": " +
                         (ckpts.back() / "meta.json").string() + ": not valid JSON") != std::string::npos);
  }

  // Every meta.json damaged: refused, naming each, and nothing is written.
  std::ofstream(ckpts.front() / "meta.json") << "garbage";
  auto res = lathe::test::run_lathe({"train", recipe.string(), "--resume", "auto"});
  INFO(res.out << res.err);
  CHECK(res.code == 1);
  for (const auto& c : ckpts) CHECK(res.err.find(c.string() + ": " + (c / "meta.json").string() + ": not valid JSON") !=
                                    std::string::npos);
  CHECK(res.err.find("start over with --force") != std::string::npos);
  CHECK(lathe::train::list_checkpoints(root).empty());
  CHECK(lathe::test::read_file(out.path() / "run/metrics.jsonl") == metrics);

  // The way out: --force removes them and trains from step 0.
  auto forced = lathe::test::run_lathe({"train", recipe.string(), "--force"});
  INFO(forced.out << forced.err);
  REQUIRE(forced.code == 0);
  CHECK(lathe::train::damaged_checkpoints(root).empty());
  const auto fresh = lathe::train::list_checkpoints(root);
  REQUIRE(fresh.size() == 2);
  CHECK(lathe::train::load_checkpoint(fresh.back()).state.step == 4);
}

TEST_CASE("train: non-finite losses stop the run or skip exactly the bad steps", "[train]") {
  Corpus corpus;
  TempDir out;
  auto r = prepared(corpus.recipe(out.path(), "max_steps: 12, batch_size: 2, eval_every: 0, save_every: 0"));
  r.model.tie_embeddings = false;
  // The steps whose batch holds token `rare`: one NaN row in the input embedding poisons exactly those.
  auto tok = lathe::tokenizer::load_tokenizer(lathe::recipe::tokenizer_path(r));
  auto data = lathe::train::make_task_data(r, *tok);
  std::map<int64_t, std::set<int64_t>> steps_with;
  for (int64_t s = 0; s < 12; ++s) {
    auto ids = data->train_batch(s).input_ids.flatten();
    for (int64_t i = 0; i < ids.numel(); ++i) steps_with[ids[i].item<int64_t>()].insert(s);
  }
  int64_t rare = -1;
  for (const auto& [id, steps] : steps_with)
    if (steps.size() >= 2 && steps.size() <= 4 && *steps.begin() > 0) {
      rare = id;
      break;
    }
  REQUIRE(rare >= 0);
  const auto& bad = steps_with[rare];
  {
    Trainer t(r);
    torch::NoGradGuard no_grad;
    t.model().as<lathe::models::Gpt>()->wte->weight[rare].fill_(std::nan(""));
    lathe::models::save_model(t.model(), out.path() / "poisoned.safetensors");
  }
  r.train.init_from = (out.path() / "poisoned.safetensors").string();
  const auto msg = lathe::test::error_of([&] { Trainer(r).run(); });
  CHECK(msg.find(fmt::format("step {}: the loss is nan (train.nan_policy: error)", *bad.begin() + 1)) !=
        std::string::npos);

  r.train.nan_policy = lathe::recipe::NanPolicy::Skip;
  r.tokenizer.path = lathe::recipe::tokenizer_path(r).string();
  r.data.shard_dir = lathe::recipe::shard_dir(r).string();
  r.run.out_dir = (out.path() / "skip").string();
  std::ostringstream log;
  const auto rep = Trainer(r, {&log, false, true, nullptr}).run();
  CHECK(rep.skipped_steps == static_cast<int64_t>(bad.size()));
  CHECK(log.str().find(fmt::format("step {}: step skipped: the loss is nan (train.nan_policy: skip)",
                                   *bad.begin() + 1)) != std::string::npos);
  auto saved = lathe::io::load_safetensors(rep.checkpoint / "model.safetensors");
  for (const auto& [name, t] : saved.tensors) {
    INFO(name);
    if (name == "wte.weight") CHECK(at::isfinite(t.narrow(0, 0, rare)).all().item<bool>());
    else CHECK(at::isfinite(t).all().item<bool>());
  }
}

TEST_CASE("train: bf16 autocast on the CPU trains close to fp32", "[train]") {
  Corpus corpus;
  TempDir a, b;
  auto r32 = prepared(corpus.recipe(a.path(), "max_steps: 8, batch_size: 4, eval_every: 0, log_every: 1"));
  auto r16 = r32;
  r16.run.out_dir = b.path().string();
  r16.tokenizer.path = lathe::recipe::tokenizer_path(r32).string();
  r16.data.shard_dir = lathe::recipe::shard_dir(r32).string();
  r16.train.precision = lathe::recipe::Precision::Bf16;
  // The model's logits came out in the precision asked for: autocast really ran.
  CHECK(Trainer(r32).run().logits_dtype == at::kFloat);
  CHECK(Trainer(r16).run().logits_dtype == at::kBFloat16);
  const auto l32 = train_losses(a.path() / "metrics.jsonl"), l16 = train_losses(b.path() / "metrics.jsonl");
  REQUIRE(l16.size() == 8);
  for (std::size_t i = 0; i < 8; ++i) CHECK(std::abs(l16[i] - l32[i]) < 0.05);  // bf16 keeps ~3 digits
}

TEST_CASE("train: SIGTERM saves a checkpoint and exits 3 (interrupted, resumable)", "[train]") {
  Corpus corpus;
  TempDir out;
  const auto recipe = out.write("r.yaml", corpus.recipe(out.path() / "run",
                                                        "max_steps: 100000, batch_size: 2, log_every: 1, "
                                                        "eval_every: 0, save_every: 0"));
  auto r = recipe_from(lathe::test::read_file(recipe));
  lathe::pipeline::run_tokenizer_stage(r, false);
  lathe::pipeline::run_data_stage(r, false);
  lathe::test::Child child({LATHE_CLI, "train", recipe.string()});
  const auto metrics = out.path() / "run/metrics.jsonl";
  for (int i = 0; i < 600 && (!fs::exists(metrics) || read_jsonl(metrics).size() < 3); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  child.signal(SIGTERM);
  const auto res = child.wait();
  INFO(res.err);
  CHECK(res.code == 3);
  CHECK(res.out.find("received SIGTERM: saved") != std::string::npos);
  const auto ckpts = lathe::train::list_checkpoints(out.path() / "run/checkpoints");
  REQUIRE(ckpts.size() == 1);
  const auto c = lathe::train::load_checkpoint(ckpts.front());
  CHECK(c.state.step >= 3);
  CHECK(c.state.step < 100000);
}

TEST_CASE("train: a run stopped before its first log step reports the loss of the steps it ran", "[train]") {
  Corpus corpus;
  TempDir out;
  const auto recipe = out.write("r.yaml", corpus.recipe(out.path() / "run",
                                                        "max_steps: 100000, batch_size: 2, log_every: 100000, "
                                                        "eval_every: 0, save_every: 0"));
  auto r = recipe_from(lathe::test::read_file(recipe));
  lathe::pipeline::run_tokenizer_stage(r, false);
  lathe::pipeline::run_data_stage(r, false);
  lathe::test::Child child({LATHE_CLI, "train", recipe.string()});
  for (int i = 0; i < 600 && child.output().find("training ") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  child.signal(SIGTERM);
  const auto res = child.wait();
  INFO(res.out << res.err);
  REQUIRE(res.code == 3);
  const auto ckpts = lathe::train::list_checkpoints(out.path() / "run/checkpoints");
  REQUIRE(ckpts.size() == 1);
  const int64_t step = lathe::train::load_checkpoint(ckpts.front()).state.step;
  // The stop step is logged: its record and the summary carry the mean loss of the steps run,
  // near ln(vocabulary) for a fresh model, never 0.
  const auto recs = read_jsonl(out.path() / "run/metrics.jsonl");
  REQUIRE(!recs.empty());
  CHECK(recs.back()["step"].get<int64_t>() == step);
  const double loss = recs.back()["loss"].get<double>();
  CHECK(std::abs(loss - std::log(400.0)) < 1.0);
  CHECK(res.out.find(fmt::format("interrupted at step {} (train loss {:.4f}", step, loss)) != std::string::npos);
  CHECK(res.out.find("train loss 0.0000") == std::string::npos);
}

TEST_CASE("train: metrics.jsonl and the TensorBoard event file agree", "[train][reference]") {
  Corpus corpus;
  TempDir out;
  auto r = prepared(corpus.recipe(out.path(), "max_steps: 6, batch_size: 2, log_every: 2, eval_every: 3, eval_batches: 2"));
  Trainer(r).run();
  // MFU is against the device's measured plateau: a real step never exceeds it.
  for (const auto& j : read_jsonl(out.path() / "metrics.jsonl"))
    if (j["split"] == "train") {
      CHECK(j["mfu"].get<double>() > 0);
      CHECK(j["mfu"].get<double>() < 1);
    }
  fs::path events;
  for (const auto& e : fs::directory_iterator(out.path() / "tensorboard"))
    if (e.path().filename().string().starts_with("events.")) events = e.path();
  REQUIRE(events.filename().string().starts_with("events.out.tfevents."));
  const auto res = lathe::test::run_python(R"(
import sys
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
for event in EventFileLoader(sys.argv[1]).Load():
    for v in event.summary.value:
        print(event.step, v.tag, repr(v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]))
)",
                                           {events.string()});
  INFO(res.err);
  REQUIRE(res.code == 0);
  std::map<std::string, double> tb;
  for (const auto& line : lathe::test::lines(res.out)) {
    std::istringstream s(line);
    int64_t step;
    std::string tag;
    double v;
    s >> step >> tag >> v;
    tb[std::to_string(step) + " " + tag] = v;
  }
  int compared = 0;
  for (const auto& j : read_jsonl(out.path() / "metrics.jsonl")) {
    for (const char* key : {"loss", "lr"}) {
      if (!j.contains(key)) continue;
      const auto k = std::to_string(j["step"].get<int64_t>()) + " " + j["split"].get<std::string>() + "/" + key;
      INFO(k);
      REQUIRE(tb.count(k));
      CHECK(tb[k] == Approx(j[key].get<double>()).epsilon(1e-6));  // stored as float32
      ++compared;
    }
  }
  CHECK(compared == 3 * 2 + 2);  // train loss and lr at steps 2, 4, 6; val loss at 3 and 6
}

TEST_CASE("train: lathe run goes from text to samples and skips finished stages", "[train][cli]") {
  Corpus corpus;
  TempDir out;
  const auto recipe = out.write(
      "r.yaml", corpus.recipe(out.path() / "run", "max_steps: 30, batch_size: 4, eval_every: 15, eval_batches: 2",
                              "generate: {prompts: [\"And God said\", \"\"], max_new_tokens: 12}") );
  std::string text = lathe::test::read_file(recipe);
  const std::string from = "pipeline: [tokenizer, data, train]";
  text.replace(text.find(from), from.size(), "pipeline: [tokenizer, data, train, eval, generate]");
  std::ofstream(recipe) << text;
  auto first = lathe::test::run_lathe({"run", recipe.string()});
  INFO(first.out << first.err);
  REQUIRE(first.code == 0);
  for (const char* stage : {"tokenizer", "data", "train", "eval", "generate"})
    CHECK(first.out.find(std::string("stage ") + stage + ": ") != std::string::npos);
  CHECK(first.out.find("--- sample 1 of 2") != std::string::npos);
  CHECK(first.out.find("And God said") != std::string::npos);
  const auto run = out.path() / "run";
  for (const char* f : {"tokenizer.json", "shards/index.json", "checkpoints/step_00000030/model.safetensors",
                        "metrics.jsonl", "eval.json", "samples.jsonl", "resolved.yaml"})
    CHECK(fs::exists(run / f));
  const auto eval = json::parse(std::ifstream(run / "eval.json"));
  const double val = eval["metrics"]["loss"].get<double>();
  CHECK(val < std::log(400.0));  // below a uniform guess over the vocabulary
  CHECK(read_jsonl(run / "samples.jsonl").size() == 2);

  auto second = lathe::test::run_lathe({"run", recipe.string()});
  REQUIRE(second.code == 0);
  for (const char* stage : {"tokenizer", "data", "train", "eval", "generate"})
    CHECK(second.out.find(std::string("stage ") + stage + ": skipped") != std::string::npos);

  // eval and generate alone, on the same checkpoint.
  auto ev = lathe::test::run_lathe({"eval", recipe.string()});
  REQUIRE(ev.code == 0);
  CHECK(json::parse(ev.out)["loss"].get<double>() == Approx(val));
  auto gen = lathe::test::run_lathe({"generate", recipe.string(), "--prompt", "In the beginning", "--greedy",
                                     "--max-new-tokens", "8"});
  INFO(gen.err);
  CHECK(gen.code == 0);
  CHECK(gen.out.starts_with("In the beginning"));
  CHECK(gen.err.find("[8 tokens, length]") != std::string::npos);
  // bfloat16 weights (the decoding product of few rows); fp16 is CUDA's only.
  auto bf16 = lathe::test::run_lathe({"generate", recipe.string(), "--prompt", "In the beginning", "--greedy",
                                      "--max-new-tokens", "8", "--dtype", "bf16"});
  INFO(bf16.err);
  CHECK(bf16.code == 0);
  CHECK(bf16.out.starts_with("In the beginning"));
  CHECK(bf16.err.find("[8 tokens, length]") != std::string::npos);
  auto fp16 = lathe::test::run_lathe({"generate", recipe.string(), "--prompt", "x", "--dtype", "fp16"});
  CHECK(fp16.code != 0);
  CHECK(fp16.err.find("generate.dtype: fp16 runs on CUDA only") != std::string::npos);
  CHECK(fp16.out.empty());
}

TEST_CASE("train: BERT classification learns a keyword task and starts from a masked-LM checkpoint",
          "[train]") {
  TempDir dir;
  // Label 1 when the sentence holds "light", 0 when it holds "darkness"; the other words are noise.
  const std::vector<std::string> words = {"the", "earth", "was", "without", "form", "and", "void", "upon",
                                          "face", "of", "deep", "spirit", "moved", "waters", "god", "said"};
  std::mt19937 rng(3);
  auto sentence = [&](bool positive) {
    std::string s;
    const int at = static_cast<int>(rng() % 8);
    for (int i = 0; i < 8; ++i) {
      if (i == at) s += positive ? "light " : "darkness ";
      s += words[rng() % words.size()] + " ";
    }
    return s;
  };
  std::string train = "text,label\n", val = "text,label\n", plain;
  for (int i = 0; i < 400; ++i) {
    const bool pos = rng() % 2;
    const auto s = sentence(pos);
    train += s + "," + (pos ? "yes" : "no") + "\n";
    plain += s + "\n\n";
  }
  for (int i = 0; i < 96; ++i) {
    const bool pos = rng() % 2;
    val += sentence(pos) + "," + (pos ? "yes" : "no") + "\n";
  }
  const auto train_csv = dir.write("train.csv", train), val_csv = dir.write("val.csv", val);
  const auto text = dir.write("text.txt", plain);
  const auto common = fmt::format(R"(run: {{out_dir: {}/DIR, device: cpu, seed: 2}}
tokenizer: {{type: wordpiece, vocab_size: 300, lowercase: true, special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            train_files: [{}]}}
model: {{arch: bert, n_layer: 2, n_head: 2, d_model: 64, max_seq_len: 32, num_labels: 2, dropout: 0.0, attn_dropout: 0.0}}
optim: {{lr: 1.0e-3, weight_decay: 0.01}}
schedule: {{warmup_steps: 5}}
)",
                                  dir.path().string(), text.string());
  auto with_dir = [&](std::string s, const std::string& d) { return s.replace(s.find("DIR"), 3, d); };

  // Masked-LM pre-training for a few steps, then a classifier from its checkpoint.
  auto mlm = prepared(with_dir(common, "mlm") +
                      fmt::format("pipeline: [tokenizer, data, train]\ndata: {{train_files: [{}], seq_len: 32, "
                                  "val_fraction: 0.1}}\ntrain: {{task: masked_lm, max_steps: 6, batch_size: 8}}\n",
                                  text.string()));
  const auto mlm_rep = Trainer(mlm).run();
  CHECK(mlm_rep.val.count("perplexity"));

  auto cls = recipe_from(with_dir(common, "cls") +
                         fmt::format("pipeline: [train]\ndata: {{train_files: [{}], val_files: [{}], seq_len: 32}}\n"
                                     "train: {{task: classification, max_steps: 60, batch_size: 16, eval_every: 0, "
                                     "init_from: {}}}\n",
                                     train_csv.string(), val_csv.string(), mlm_rep.checkpoint.string()));
  cls.tokenizer.path = lathe::recipe::tokenizer_path(mlm).string();
  Trainer trainer(cls);
  {
    auto pre = lathe::models::load_model(mlm_rep.checkpoint / "model.safetensors");
    CHECK(at::equal(trainer.model().as<lathe::models::BertForSequenceClassification>()->bert->word_embeddings->weight,
                    pre.as<lathe::models::BertForMaskedLM>()->bert->word_embeddings->weight));
  }
  const auto rep = trainer.run();
  INFO("accuracy " << rep.val.at("accuracy"));
  CHECK(rep.val.at("accuracy") >= 0.95);
  CHECK(rep.val.at("f1") >= 0.95);
  CHECK(trainer.model().labels == std::vector<std::string>{"no", "yes"});

  // lathe eval on the saved checkpoint gives the same accuracy.
  const auto result = lathe::train::evaluate_checkpoint(cls, rep.checkpoint);
  CHECK(result.metrics.at("accuracy") == Approx(rep.val.at("accuracy")));
  CHECK(result.batches == 6);
}

TEST_CASE("train: batches reach the GPU from pinned memory", "[train][gpu]") {
  LATHE_REQUIRE_GPU();
  std::vector<int32_t> rows{1, 2, 3, 4, 5, 6};
  const auto lm = lathe::data::make_lm_batch(rows, 2, 2);
  const Batch b{lm.input, lm.target, {}, {}, 4};
  CHECK(!b.input_ids.is_pinned());
  const auto pinned = lathe::train::pin(b);  // what the training loader's workers do on CUDA
  CHECK(pinned.input_ids.is_pinned());
  CHECK(pinned.targets.is_pinned());
  const auto on_gpu = lathe::train::to_device(pinned, at::Device(at::kCUDA, 0));
  CHECK(on_gpu.input_ids.is_cuda());
  CHECK(at::equal(on_gpu.targets.cpu(), lm.target));
}

TEST_CASE("train: on CUDA fp16 with loss scaling and bf16 train like fp32", "[train][gpu]") {
  LATHE_REQUIRE_GPU();
  Corpus corpus;
  TempDir dir;
  auto base = prepared(corpus.recipe(dir.path() / "fp32",
                                     "max_steps: 20, batch_size: 8, eval_every: 0, log_every: 1"));
  base.run.device = lathe::recipe::Device::Cuda;
  std::map<std::string, std::vector<double>> losses;
  for (auto p : {lathe::recipe::Precision::Fp32, lathe::recipe::Precision::Bf16, lathe::recipe::Precision::Fp16}) {
    auto r = base;
    r.train.precision = p;
    r.tokenizer.path = lathe::recipe::tokenizer_path(base).string();
    r.data.shard_dir = lathe::recipe::shard_dir(base).string();
    r.run.out_dir = (dir.path() / std::string(lathe::recipe::enum_name(p))).string();
    Trainer t(r);
    CHECK(t.device().is_cuda());
    const auto rep = t.run();
    CHECK(rep.skipped_steps == 0);
    if (p == lathe::recipe::Precision::Fp16) {
      // Each overflow halved the scale once (20 steps never reach the 2000-step growth).
      CHECK(rep.loss_scale == 65536.0 / std::pow(2.0, static_cast<double>(rep.overflow_steps)));
    } else {
      CHECK(rep.overflow_steps == 0);
    }
    losses[std::string(lathe::recipe::enum_name(p))] = train_losses(fs::path(r.run.out_dir) / "metrics.jsonl");
  }
  for (const char* p : {"bf16", "fp16"}) {
    INFO(p);
    REQUIRE(losses[p].size() == 20);
    CHECK(std::abs(losses[p].back() - losses["fp32"].back()) < 0.1);
    CHECK(losses[p].back() < losses[p].front());
  }
  // Cached decoding on the GPU equals recomputation there too.
  auto model = lathe::models::load_model(lathe::train::list_checkpoints(dir.path() / "fp32/checkpoints").back());
  model.as<lathe::models::Gpt>()->to(at::Device(at::kCUDA, 0));
  lathe::models::SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 16;
  auto gpt = model.as<lathe::models::Gpt>();
  auto a = lathe::models::generate(gpt, {1, 2, 3}, s);
  s.use_cache = false;
  CHECK(lathe::models::generate(gpt, {1, 2, 3}, s).tokens == a.tokens);
}

TEST_CASE("train: train.cuda_graphs needs a CUDA device and one process", "[train][errors]") {
  Corpus corpus;
  TempDir dir;
  auto r = prepared(corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 2"));
  r.run.device = lathe::recipe::Device::Auto;  // resolves to the CPU here; the recipe check cannot know
  r.train.cuda_graphs = true;
  if (torch::cuda::is_available()) return;
  try {
    Trainer t(r);
    FAIL("a CPU run with train.cuda_graphs was accepted");
  } catch (const lathe::Error& e) {
    CHECK(std::string(e.what()) == "train.cuda_graphs needs a CUDA device, and this run is on cpu; set "
                                   "train.cuda_graphs: false");
  }
  CHECK_FALSE(fs::exists(dir.path() / "run" / "checkpoints"));
}

TEST_CASE("train: train.cuda_graphs replays the micro-step and trains as the eager step does", "[train][gpu]") {
  LATHE_REQUIRE_GPU();
  Corpus corpus;
  TempDir dir;
  // Two micro-batches per step and a validation run in between: the capture happens inside a
  // step (after 3 eager micro-batches), and evaluation between replays must not disturb them.
  auto base = prepared(corpus.recipe(dir.path() / "base",
                                     "max_steps: 12, batch_size: 8, grad_accum: 2, eval_every: 5, log_every: 1"));
  base.run.device = lathe::recipe::Device::Cuda;
  base.tokenizer.path = lathe::recipe::tokenizer_path(base).string();
  base.data.shard_dir = lathe::recipe::shard_dir(base).string();
  for (auto p : {lathe::recipe::Precision::Fp32, lathe::recipe::Precision::Bf16, lathe::recipe::Precision::Fp16}) {
    const std::string name(lathe::recipe::enum_name(p));
    INFO(name);
    std::map<bool, std::vector<double>> losses;
    std::map<bool, lathe::models::AnyModel> models;
    std::string log_text;
    for (const bool graphs : {false, true}) {
      auto r = base;
      r.train.precision = p;
      r.train.cuda_graphs = graphs;
      r.run.out_dir = (dir.path() / (name + (graphs ? "_graphs" : "_eager"))).string();
      std::ostringstream log;
      Trainer t(r, {&log, false, true, nullptr});
      const auto rep = t.run();
      CHECK(rep.skipped_steps == 0);
      if (graphs) log_text = log.str();
      losses[graphs] = train_losses(fs::path(r.run.out_dir) / "metrics.jsonl");
      models[graphs] = t.model();
    }
    INFO(log_text);
    CHECK(log_text.find("step 2: the micro-step is captured as a CUDA graph") != std::string::npos);
    CHECK(log_text.find("ran without the graph") == std::string::npos);
    REQUIRE(losses[true].size() == 12);
    REQUIRE(losses[false].size() == 12);
    // The replayed kernels are the eager ones: fp32 agrees to rounding; the reduced precisions
    // within their own rounding. A graph that read stale weights or inputs drifts far more.
    const double tol = p == lathe::recipe::Precision::Fp32 ? 1e-4 : 2e-2;
    for (std::size_t i = 0; i < 12; ++i) {
      INFO("step " << i + 1);
      CHECK(std::abs(losses[true][i] - losses[false][i]) <= tol);
    }
    CHECK(losses[true].back() < losses[true].front());
    auto eager = models[false].module()->named_parameters();
    for (const auto& kv : models[true].module()->named_parameters()) {
      INFO(kv.key());
      CHECK((kv.value() - eager[kv.key()]).abs().max().item<double>() <= (tol * 10));
    }
  }
}

TEST_CASE("train: a validation split smaller than one batch is evaluated as one smaller batch", "[train]") {
  Corpus corpus;
  TempDir out;
  // 1024 windows per batch; the validation split holds far fewer.
  auto r = prepared(corpus.recipe(out.path(), "max_steps: 2, batch_size: 1024, eval_every: 2, eval_batches: 4"));
  std::ostringstream log;
  Trainer t(r, {&log, false, true, nullptr});
  const auto rep = t.run();
  INFO(log.str());
  CHECK(log.str().find("the val split holds ") != std::string::npos);
  CHECK(log.str().find("fewer than train.batch_size 1024: it is evaluated as one batch of ") != std::string::npos);
  REQUIRE(rep.val.count("loss"));
  CHECK(std::isfinite(rep.val.at("loss")));
  // lathe eval reads it the same way.
  const auto m = lathe::train::evaluate_checkpoint(r, rep.checkpoint);
  CHECK(m.batches == 1);
  CHECK(m.metrics.at("loss") == Approx(rep.val.at("loss")).epsilon(1e-5));
}

TEST_CASE("train: problems of the data are found before the first step", "[train][errors]") {
  SECTION("an evaluation stage with no validation data") {
    Corpus corpus;
    TempDir out;
    auto r = prepared(corpus.recipe(out.path(), "max_steps: 2, batch_size: 2", "eval: {batches: 2}") );
    r.data.val_fraction = 0;
    lathe::pipeline::run_data_stage(r, /*force=*/true);
    r.pipeline.push_back(lathe::recipe::Stage::Eval);
    const auto msg = lathe::test::error_of([&] { Trainer(r).run(); });
    CHECK(msg.find("the validation split holds no batch, and the pipeline's eval stage evaluates on it") == 0);
    CHECK(lathe::train::list_checkpoints(out.path() / "checkpoints").empty());
  }
  SECTION("a validation label the training data lacks") {
    TempDir dir;
    auto vocab = dir.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n");
    auto train = dir.write("train.csv", "text,label\nthe cat,yes\ncat,no\n");
    auto val = dir.write("val.csv", "text,label\nthe,no\nthe cat,maybe\n");
    auto r = recipe_from(fmt::format(R"(pipeline: [train]
run: {{out_dir: {}/run, device: cpu}}
tokenizer: {{type: wordpiece, path: {}, special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}}
data: {{train_files: [{}], val_files: [{}], seq_len: 8}}
model: {{arch: bert, n_layer: 1, n_head: 2, d_model: 8, max_seq_len: 8, num_labels: 2}}
schedule: {{warmup_steps: 1}}
train: {{task: classification, max_steps: 2, batch_size: 2}}
)",
                                     dir.path().string(), vocab.string(), train.string(), val.string()));
    auto tok = lathe::tokenizer::load_tokenizer(vocab);
    CHECK(lathe::test::error_of([&] { lathe::train::make_task_data(r, *tok); }) ==
          val.string() + ":3: label 'maybe' does not occur in the training data");
  }
  SECTION("a shard written by another tokenizer, whatever the index says") {
    Corpus corpus;
    TempDir out;
    auto r = prepared(corpus.recipe(out.path(), "max_steps: 2, batch_size: 2"));
    const auto shard = lathe::recipe::shard_dir(r) / "train_000000.bin";
    const auto tokens = lathe::data::Shard(shard).size();
    {
      lathe::data::ShardWriter w(shard, 400, /*fingerprint=*/12345);
      std::vector<int32_t> zeros(tokens, 0);
      w.append(zeros);
      w.finish();
    }
    auto tok = lathe::tokenizer::load_tokenizer(lathe::recipe::tokenizer_path(r));
    CHECK(lathe::test::error_of([&] { lathe::train::make_task_data(r, *tok); })
              .find("shard '" + shard.string() + "' was written by another tokenizer (fingerprint 0000000000003039") == 0);
  }
}
