// Pruning: masks against a PyTorch reference written from the papers, exact sparsity, structured
// removal against masking, masks held through training and resume, the prune and export stages.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <thread>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "lathe/compress/prune.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/generate.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/run_dir.hpp"
#include "run_fixture.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

namespace fs = std::filesystem;
using lathe::compress::PruneMethod;
using lathe::compress::PruneOptions;
using lathe::compress::PruneScope;
using lathe::compress::PruneScore;
using lathe::models::AnyModel;
using lathe::models::ModelKind;
using lathe::test::TempDir;
using lathe::test::tiny;
using nlohmann::json;

namespace {

at::Tensor logits(AnyModel m, const at::Tensor& ids) {
  torch::NoGradGuard no_grad;
  m.module()->eval();
  return m.kind() == ModelKind::Gpt ? m.as<lathe::models::Gpt>()->forward(ids)
                                    : m.as<lathe::models::BertForMaskedLM>()->forward(ids);
}

/// The parameters named `<prefix>.<suffix>` in layer order.
std::vector<at::Tensor> layer_params(const AnyModel& m, const std::string& suffix) {
  std::vector<at::Tensor> out;
  for (const auto& item : m.module()->named_parameters())
    if (item.key().ends_with(suffix)) out.push_back(item.value());
  return out;
}

}  // namespace

TEST_CASE("prune: magnitude, global, wanda and n:m masks equal the reference and hit their counts", "[prune][reference]") {
  torch::manual_seed(3);
  AnyModel model = lathe::models::make_model(ModelKind::Gpt, tiny("gpt"));
  const auto ids = at::randint(0, 64, {4, 16}, at::kLong);
  lathe::compress::Calibration calibration{2, [&](int64_t i, bool) {
                                             torch::NoGradGuard no_grad;
                                             model.as<lathe::models::Gpt>()->forward(ids.narrow(0, 2 * i, 2));
                                           }};
  // The inputs each prunable layer sees, for the reference.
  std::map<std::string, std::vector<at::Tensor>> seen;
  std::vector<lathe::nn::LinearImpl*> observed;
  const auto params = lathe::compress::prunable(model, {});
  for (const auto& item : model.module()->named_modules("", false))
    if (auto* lin = dynamic_cast<lathe::nn::LinearImpl*>(item.value().get())) {
      const auto name = item.key() + ".weight";
      lin->input_observer = [&seen, name, in = lin->options.in](const at::Tensor& x) {
        seen[name].push_back(x.reshape({-1, in}).clone());
      };
      observed.push_back(lin);
    }
  for (int64_t i = 0; i < calibration.batches; ++i) calibration.run(i, false);
  for (auto* lin : observed) lin->input_observer = nullptr;

  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : params) {
    tensors.emplace_back("w." + p.name, p.tensor.detach().contiguous());
    tensors.emplace_back("x." + p.name, at::cat(seen.at(p.name)).contiguous());
  }
  lathe::io::save_safetensors(dir.path() / "in.safetensors", tensors);
  lathe::test::run_reference("prune_masks.py", {(dir.path() / "in.safetensors").string(),
                                                (dir.path() / "ref.safetensors").string(), "0.5", "2", "4"});
  const auto ref = lathe::io::load_safetensors(dir.path() / "ref.safetensors");

  const auto norms = lathe::compress::input_norms(model, {}, calibration);
  PruneOptions o;
  auto masks_of = [&](PruneMethod method, PruneScope scope, PruneScore score) {
    o.method = method;
    o.scope = scope;
    o.score = score;
    return lathe::compress::unstructured_masks(model, o, 0.5, norms);
  };
  const std::vector<std::pair<std::string, lathe::compress::Masks>> cases{
      {"magnitude", masks_of(PruneMethod::Magnitude, PruneScope::Auto, PruneScore::Auto)},
      {"global", masks_of(PruneMethod::Magnitude, PruneScope::Global, PruneScore::Auto)},
      {"wanda", masks_of(PruneMethod::Wanda, PruneScope::Auto, PruneScore::Auto)},
      {"nm", masks_of(PruneMethod::NM, PruneScope::Auto, PruneScore::Auto)},
      {"nm_wanda", masks_of(PruneMethod::NM, PruneScope::Auto, PruneScore::Wanda)}};
  for (const auto& [kind, masks] : cases) {
    INFO(kind);
    REQUIRE(masks.size() == params.size());
    int64_t pruned = 0, total = 0;
    for (const auto& p : params) {
      INFO(p.name);
      const auto& mask = masks.at(p.name);
      CHECK(at::equal(mask, ref.at(kind + "." + p.name)));
      const int64_t zeros = (~mask).sum().item<int64_t>();
      pruned += zeros;
      total += mask.numel();
      if (kind == "magnitude") CHECK(zeros == std::llround(0.5 * static_cast<double>(mask.numel())));
      if (kind == "wanda") CHECK(at::equal((~mask).sum(1), at::full({mask.size(0)}, mask.size(1) / 2, at::kLong)));
      if (kind.starts_with("nm"))
        CHECK(at::equal(mask.reshape({-1, 4}).sum(1), at::full({mask.numel() / 4}, 2, at::kLong)));
    }
    CHECK(pruned == total / 2);  // every kind removes exactly half here
  }
  // Global sparsity is exact overall but differs between layers.
  std::set<int64_t> per_layer;
  for (const auto& [name, mask] : cases[1].second) per_layer.insert((~mask).sum().item<int64_t>() * 1000 / mask.numel());
  CHECK(per_layer.size() > 1);
}

TEST_CASE("prune: removing heads and neurons computes what masking them computes", "[prune]") {
  for (const std::string family : {"gpt", "llama", "bert"}) {
    INFO(family);
    torch::manual_seed(11);
    const auto kind = family == "bert" ? ModelKind::BertMaskedLm : ModelKind::Gpt;
    AnyModel model = lathe::models::make_model(kind, tiny(family));
    PruneOptions o;
    o.method = PruneMethod::Structured;
    o.heads = 0.5;
    o.neurons = 0.25;
    const auto plan = lathe::compress::plan_structured(model, o);
    const auto pruned = lathe::compress::apply_structured(model, plan);

    const auto& before = model.options();
    const auto& after = pruned.options();
    CHECK(after.n_head == 2);
    CHECK(after.head_dim() == before.head_dim());
    CHECK(after.kv_heads() == (family == "llama" ? 1 : 2));
    CHECK(after.ff_width() == before.ff_width() * 3 / 4);
    CHECK(lathe::models::parameter_count(*pruned.module()) < lathe::models::parameter_count(*model.module()));

    // The unpruned model with the removed heads' and neurons' output columns zeroed.
    {
      torch::NoGradGuard no_grad;
      const auto attn = layer_params(model, "attn.proj.weight"), mlp = layer_params(model, "mlp.proj.weight");
      const int64_t D = before.head_dim();
      for (std::size_t i = 0; i < attn.size(); ++i) {
        for (int64_t h = 0; h < before.n_head; ++h)
          if (std::find(plan.heads[i].begin(), plan.heads[i].end(), h) == plan.heads[i].end())
            attn[i].narrow(1, h * D, D).zero_();
        for (int64_t j = 0; j < before.ff_width(); ++j)
          if (std::find(plan.neurons[i].begin(), plan.neurons[i].end(), j) == plan.neurons[i].end())
            mlp[i].narrow(1, j, 1).zero_();
      }
    }
    const auto ids = at::randint(0, 64, {3, 16}, at::kLong);
    const auto want = logits(model, ids);
    CHECK((logits(pruned, ids) - want).abs().max().item<double>() <= 1e-5);

    // The smaller model is a normal model file.
    TempDir dir;
    lathe::models::save_model(pruned, dir.path() / "model.safetensors");
    const auto loaded = lathe::models::load_model(dir.path() / "model.safetensors");
    CHECK(loaded.options().n_head == 2);
    CHECK((logits(loaded, ids) - want).abs().max().item<double>() <= 1e-5);
    if (kind == ModelKind::Gpt) {  // the KV cache takes the pruned shapes: cached decoding = recomputing
      lathe::models::SamplingOptions greedy;
      greedy.temperature = 0;
      greedy.max_new_tokens = 8;
      auto gpt = loaded.as<lathe::models::Gpt>();
      const auto cached = lathe::models::generate(gpt, {1, 2, 3}, greedy).tokens;
      greedy.use_cache = false;
      CHECK(cached == lathe::models::generate(gpt, {1, 2, 3}, greedy).tokens);
      CHECK(cached.size() == 8);
    }
  }
}

TEST_CASE("prune: heads and neurons are ranked by their L2 norm or by Taylor |w * grad|", "[prune]") {
  torch::manual_seed(2);
  AnyModel model = lathe::models::make_model(ModelKind::Gpt, tiny("gpt"));
  const int64_t H = 4, D = 8, F = 128;
  const auto qkv = layer_params(model, "attn.qkv.weight"), proj = layer_params(model, "attn.proj.weight");
  const auto fc = layer_params(model, "mlp.fc.weight"), down = layer_params(model, "mlp.proj.weight");
  std::vector<int64_t> strong;  // the neurons l2 must keep: all but every fourth
  for (int64_t j = 0; j < F; ++j)
    if (j % 4 != 0) strong.push_back(j);
  {  // weaken head 1 and every fourth neuron of each layer
    torch::NoGradGuard no_grad;
    for (std::size_t l = 0; l < qkv.size(); ++l) {
      for (int64_t part = 0; part < 3; ++part) qkv[l].narrow(0, part * H * D + 1 * D, D).mul_(1e-3);
      proj[l].narrow(1, 1 * D, D).mul_(1e-3);
      for (int64_t j = 0; j < F; j += 4) {
        fc[l].narrow(0, j, 1).mul_(1e-3);
        down[l].narrow(1, j, 1).mul_(1e-3);
      }
    }
  }
  PruneOptions o;
  o.method = PruneMethod::Structured;
  o.heads = 0.25;
  o.neurons = 0.25;
  const auto l2 = lathe::compress::plan_structured(model, o);
  for (std::size_t l = 0; l < qkv.size(); ++l) {
    CHECK(l2.heads[l] == std::vector<int64_t>{0, 2, 3});
    CHECK(l2.neurons[l] == strong);
  }

  // Taylor, on a model left as initialised: gradients of the next-token loss on one batch; the
  // reference sums |w * grad| over each unit's rows and columns one unit at a time.
  torch::manual_seed(4);
  AnyModel fresh = lathe::models::make_model(ModelKind::Gpt, tiny("gpt"));
  const auto ids = at::randint(0, 64, {2, 16}, at::kLong);
  auto backward = [&] {
    auto out = fresh.as<lathe::models::Gpt>()->forward(ids);
    at::cross_entropy_loss(out.narrow(1, 0, 15).reshape({-1, 64}), ids.narrow(1, 1, 15).reshape({-1})).backward();
  };
  lathe::compress::Calibration calibration{1, [&](int64_t, bool) { backward(); }};
  o.score = PruneScore::Taylor;
  const auto taylor = lathe::compress::plan_structured(fresh, o, &calibration);
  o.score = PruneScore::L2;
  const auto by_norm = lathe::compress::plan_structured(fresh, o);
  fresh.module()->zero_grad();
  backward();
  const auto f_qkv = layer_params(fresh, "attn.qkv.weight"), f_proj = layer_params(fresh, "attn.proj.weight");
  const auto f_fc = layer_params(fresh, "mlp.fc.weight"), f_down = layer_params(fresh, "mlp.proj.weight");
  auto score = [](const at::Tensor& w) { return (w * w.grad()).abs(); };
  auto keep_best = [](const std::vector<double>& s, std::size_t keep) {
    std::vector<int64_t> idx(s.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    idx.resize(keep);
    std::sort(idx.begin(), idx.end());
    return idx;
  };
  for (std::size_t l = 0; l < f_qkv.size(); ++l) {
    std::vector<double> heads, neurons;
    for (int64_t h = 0; h < H; ++h) {
      double total = score(f_proj[l]).narrow(1, h * D, D).sum().item<double>();
      for (int64_t part = 0; part < 3; ++part)
        total += score(f_qkv[l]).narrow(0, part * H * D + h * D, D).sum().item<double>();
      heads.push_back(total);
    }
    for (int64_t j = 0; j < F; ++j)
      neurons.push_back(score(f_fc[l]).narrow(0, j, 1).sum().item<double>() +
                        score(f_down[l]).narrow(1, j, 1).sum().item<double>());
    CHECK(taylor.heads[l] == keep_best(heads, 3));
    CHECK(taylor.neurons[l] == keep_best(neurons, 96));
    CHECK(taylor.neurons[l] != by_norm.neurons[l]);  // gradients rank otherwise than norms
  }
}

TEST_CASE("prune: a pruned model exports to Hugging Face with its smaller config", "[prune][reference]") {
  torch::manual_seed(5);
  TempDir dir;
  const auto ids = at::randint(0, 64, {2, 16}, at::kLong);
  lathe::io::save_safetensors(dir.path() / "ref.safetensors", {{"input_ids", ids}});
  auto check = [&](const std::string& family, double heads) {
    INFO(family);
    AnyModel model = lathe::models::make_model(ModelKind::Gpt, tiny(family));
    PruneOptions o;
    o.method = PruneMethod::Structured;
    o.heads = heads;
    o.neurons = 0.5;
    auto pruned = lathe::compress::apply_structured(model, lathe::compress::plan_structured(model, o));
    const auto hf = dir.path() / family;
    lathe::models::save_hf(pruned, hf);
    const auto config = json::parse(lathe::test::read_file(hf / "config.json"));
    lathe::test::run_reference("hf_models.py", {"logits", hf.string(), (dir.path() / "ref.safetensors").string(),
                                                (dir.path() / (family + ".out")).string()});
    const auto theirs = lathe::io::load_safetensors(dir.path() / (family + ".out")).at("logits");
    CHECK((theirs - logits(pruned, ids)).abs().max().item<double>() <= 1e-4);
    return config;
  };
  const auto llama = check("llama", 0.5);
  CHECK(llama["num_attention_heads"] == 2);
  CHECK(llama["num_key_value_heads"] == 1);
  CHECK(llama["head_dim"] == 8);
  CHECK(llama["intermediate_size"] == 24);
  const auto gpt2 = check("gpt", 0.0);
  CHECK(gpt2["n_inner"] == 64);

  // transformers' GPT-2 has no head width of its own: a head-pruned GPT-2 is refused, by name.
  AnyModel model = lathe::models::make_model(ModelKind::Gpt, tiny("gpt"));
  PruneOptions o;
  o.method = PruneMethod::Structured;
  o.heads = 0.5;
  auto pruned = lathe::compress::apply_structured(model, lathe::compress::plan_structured(model, o));
  CHECK_THAT(lathe::test::error_of([&] { lathe::models::save_hf(pruned, dir.path() / "refused"); }),
             Catch::Contains("2 heads of width 8 in a width of 32") && Catch::Contains("prune.heads: 0"));
  CHECK_FALSE(fs::exists(dir.path() / "refused" / "model.safetensors"));
}

TEST_CASE("prune: masks hold through optimizer steps, a checkpoint and a resume", "[prune][train]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 6, batch_size: 4, save_every: 3, log_every: 1"));
  torch::manual_seed(1);
  auto model = lathe::models::make_model(ModelKind::Gpt, r.model.options(400));
  PruneOptions o;
  o.sparsity = 0.5;
  const auto masks = lathe::compress::unstructured_masks(model, o, 0.5);
  auto run = [&](const fs::path& out, int64_t steps) {
    auto rr = r;
    rr.run.out_dir = out.string();
    rr.data.shard_dir = lathe::recipe::shard_dir(r).string();
    rr.tokenizer.path = lathe::recipe::tokenizer_path(r).string();
    rr.train.max_steps = steps;
    auto sparsity = std::make_shared<lathe::train::Sparsity>();
    if (!fs::exists(out / "checkpoints")) sparsity->masks = masks;  // a resume takes the checkpoint's
    lathe::train::Trainer trainer(rr, {nullptr, false, false, sparsity});
    trainer.run();
    return lathe::train::load_checkpoint(lathe::train::newest_checkpoint(rr));
  };
  const auto whole = run(dir.path() / "whole", 6);
  run(dir.path() / "split", 3);
  const auto resumed = run(dir.path() / "split", 6);
  auto params = whole.model.module()->named_parameters();
  auto resumed_params = resumed.model.module()->named_parameters();
  for (const auto& [name, mask] : masks) {
    INFO(name);
    CHECK((params[name].masked_select(~mask) == 0).all().item<bool>());
    CHECK((params[name].masked_select(mask) != 0).all().item<bool>());  // the rest trained
    CHECK(at::equal(params[name], resumed_params[name]));
    CHECK(at::equal(whole.tensors.at("mask." + name), mask));
    for (const auto* moment : {"optim.exp_avg.", "optim.exp_avg_sq."})
      CHECK((whole.tensors.at(moment + name).masked_select(~mask) == 0).all().item<bool>());
  }
}

TEST_CASE("prune: the prune stage prunes, fine-tunes, reports, and eval and export read its model", "[prune][train]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 4, batch_size: 4, eval_batches: 2"));
  r.pipeline = {lathe::recipe::Stage::Train, lathe::recipe::Stage::Prune, lathe::recipe::Stage::Eval,
                lathe::recipe::Stage::Export};
  r.prune.method = PruneMethod::Wanda;
  r.prune.sparsity = 0.5;
  r.prune.calibration_batches = 2;
  r.prune.finetune_steps = 3;
  r.eval.batches = 2;
  r.export_.format = {lathe::recipe::ExportFormat::Hf};
  std::ostringstream log;
  lathe::pipeline::run_pipeline(r, {}, log);
  INFO(log.str());
  const fs::path out = r.run.out_dir;
  const auto report = json::parse(lathe::test::read_file(out / "prune.json"));
  CHECK(report["sparsity"]["overall"].get<double>() == 0.5);
  for (const auto& [name, s] : report["sparsity"]["layers"].items()) CHECK(s.get<double>() == 0.5);
  CHECK(report["fine_tuned"]["metrics"]["loss"].get<double>() > 0);
  CHECK(report["pruned"]["prunable_nonzero"].get<int64_t>() * 2 == report["before"]["prunable_nonzero"].get<int64_t>());
  const auto pruned = (out / "pruned" / "model.safetensors").string();
  CHECK(json::parse(lathe::test::read_file(out / "eval.json"))["checkpoint"] == pruned);
  CHECK(fs::exists(out / "export" / "config.json"));
  CHECK(fs::exists(out / "export" / "tokenizer.json"));
  CHECK(fs::exists(out / "pruned" / "finetune" / "checkpoints"));

  // The second run skips what is done; a changed sparsity prunes and fine-tunes afresh.
  std::ostringstream again;
  lathe::pipeline::run_pipeline(r, {}, again);
  CHECK_THAT(again.str(), Catch::Contains("stage prune: skipped"));
  CHECK_THAT(again.str(), Catch::Contains("stage export: skipped"));
  r.prune.sparsity = 0.75;
  std::ostringstream changed;
  lathe::pipeline::run_pipeline(r, {}, changed);
  CHECK_THAT(changed.str(), Catch::Contains("prune.sparsity: 0.5 -> 0.75"));
  CHECK(json::parse(lathe::test::read_file(out / "prune.json"))["sparsity"]["overall"].get<double>() == 0.75);
}

TEST_CASE("prune: an interrupted fine-tune resumes with its masks", "[prune][train]") {
  lathe::test::Corpus corpus;
  TempDir out;
  const auto recipe = out.write(
      "r.yaml", corpus.recipe(out.path() / "run", "max_steps: 2, batch_size: 2, log_every: 1, eval_every: 0, save_every: 0",
                              "prune: {sparsity: 0.5, finetune_steps: 100000}\neval: {batches: 1}\n"));
  auto r = lathe::test::prepared(lathe::test::read_file(recipe));
  lathe::pipeline::run_train_stage(r, false);
  lathe::test::Child child({LATHE_CLI, "prune", recipe.string()});
  const auto metrics = out.path() / "run/pruned/finetune/metrics.jsonl";
  for (int i = 0; i < 600 && (!fs::exists(metrics) || lathe::test::lines(lathe::test::read_file(metrics)).size() < 4); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  child.signal(SIGTERM);
  const auto res = child.wait();
  INFO(res.out + res.err);
  CHECK(res.code == 3);
  CHECK_THAT(res.out, Catch::Contains("fine-tune interrupted at step"));
  const auto ckpts = lathe::train::list_checkpoints(out.path() / "run/pruned/finetune/checkpoints");
  REQUIRE(ckpts.size() == 1);
  const int64_t step = lathe::train::checkpoint_step(ckpts.front());
  CHECK(step >= 3);
  CHECK_FALSE(fs::exists(out.path() / "run/prune.json"));

  // Run again, to a nearer end: the fine-tune resumes from its checkpoint, masks and all.
  r.prune.finetune_steps = step + 2;
  std::ostringstream log;
  const auto result = lathe::pipeline::run_prune_stage(r, false, {&log, false});
  INFO(log.str());
  CHECK_FALSE(result.interrupted);
  CHECK_THAT(log.str(), Catch::Contains(fmt::format("resumed from {} (step {})", ckpts.front().string(), step)));
  CHECK(lathe::train::checkpoint_step(lathe::train::list_checkpoints(out.path() / "run/pruned/finetune/checkpoints").back()) ==
        step + 2);
  const auto pruned = lathe::models::load_model(out.path() / "run/pruned/model.safetensors");
  for (const auto& l : lathe::compress::measure_sparsity(pruned, {})) CHECK(l.zeros * 2 == l.size);
}

TEST_CASE("prune: a Hugging Face directory is pruned and exported like a checkpoint", "[prune][train]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "batch_size: 4"));
  torch::manual_seed(8);
  auto model = lathe::models::make_model(ModelKind::Gpt, r.model.options(400));
  lathe::models::save_hf(model, dir.path() / "hf");
  r.pipeline = {lathe::recipe::Stage::Prune, lathe::recipe::Stage::Export};
  r.prune.checkpoint = (dir.path() / "hf").string();
  r.prune.method = PruneMethod::Structured;
  r.prune.neurons = 0.5;
  r.prune.score = PruneScore::Taylor;
  r.prune.calibration_batches = 2;
  r.eval.batches = 1;
  r.export_.format = {lathe::recipe::ExportFormat::Hf};
  std::ostringstream log;
  lathe::pipeline::run_pipeline(r, {}, log);
  INFO(log.str());
  const fs::path out = r.run.out_dir;
  const auto report = json::parse(lathe::test::read_file(out / "prune.json"));
  CHECK(report["pruned"]["parameters"].get<int64_t>() < report["before"]["parameters"].get<int64_t>());
  CHECK(report["speedup"].get<double>() > 0);
  CHECK(json::parse(lathe::test::read_file(out / "export" / "config.json"))["n_inner"] == 64);
  CHECK(lathe::test::read_file(out / "export" / "tokenizer.json") == lathe::test::read_file(out / "tokenizer.json"));
}

TEST_CASE("prune: a BERT masked LM is pruned by the stage and exported to transformers", "[prune][train][reference]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(fmt::format(
      R"(pipeline: [tokenizer, data, train, prune, eval, export]
run: {{out_dir: {}, seed: 3, device: cpu}}
tokenizer: {{type: wordpiece, vocab_size: 300, lowercase: true, special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}}
data: {{train_files: [{}], seq_len: 32, val_fraction: 0.1}}
model: {{arch: bert, n_layer: 2, n_head: 2, d_model: 32, max_seq_len: 32, dropout: 0.0, attn_dropout: 0.0}}
schedule: {{warmup_steps: 1}}
train: {{task: masked_lm, max_steps: 3, batch_size: 8, eval_batches: 1}}
prune: {{method: structured, neurons: 0.5, score: taylor, calibration_batches: 2, finetune_steps: 2}}
eval: {{batches: 2}}
export: {{format: hf}}
)",
      (dir.path() / "run").string(), corpus.text.string()));
  std::ostringstream log;
  lathe::pipeline::run_pipeline(r, {}, log);
  INFO(log.str());
  const fs::path out = r.run.out_dir;
  const auto report = json::parse(lathe::test::read_file(out / "prune.json"));
  CHECK(report["fine_tuned"]["metrics"].contains("perplexity"));
  const auto pruned = lathe::models::load_model(out / "pruned" / "model.safetensors");
  CHECK(pruned.kind() == ModelKind::BertMaskedLm);
  CHECK(pruned.options().ff_width() == 64);
  CHECK(json::parse(lathe::test::read_file(out / "export" / "config.json"))["intermediate_size"] == 64);
  // transformers runs the exported encoder as lathe runs the pruned one.
  const auto ids = at::randint(5, 300, {2, 32}, at::kLong);
  lathe::io::save_safetensors(dir.path() / "ref.safetensors", {{"input_ids", ids}});
  lathe::test::run_reference("hf_models.py", {"logits", (out / "export").string(), (dir.path() / "ref.safetensors").string(),
                                              (dir.path() / "out.safetensors").string()});
  const auto theirs = lathe::io::load_safetensors(dir.path() / "out.safetensors").at("logits");
  CHECK((theirs - logits(pruned, ids)).abs().max().item<double>() <= 1e-4);
}

TEST_CASE("prune: gradual pruning reaches its target on the cubic schedule", "[prune][train]") {
  PruneOptions o;
  o.sparsity = 0.8;
  o.initial_sparsity = 0.0;
  o.ramp = 0.5;
  o.prune_every = 2;
  // Zhu & Gupta (2017), eq. 1, with t0 = 0, n * dt = 0.5 * 20 steps.
  auto paper = [](double t) { return 0.8 + (0.0 - 0.8) * std::pow(1.0 - t / 10.0, 3.0); };
  CHECK(lathe::compress::gradual_sparsity(o, 0, 20) == 0.0);
  CHECK(lathe::compress::gradual_sparsity(o, 4, 20) == Approx(paper(4)));
  CHECK(lathe::compress::gradual_sparsity(o, 5, 20) == Approx(paper(4)));  // held between updates
  CHECK(lathe::compress::gradual_sparsity(o, 10, 20) == 0.8);
  CHECK(lathe::compress::gradual_sparsity(o, 19, 20) == 0.8);

  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 4, eval_batches: 1"));
  lathe::pipeline::run_train_stage(r, false);
  r.prune.schedule = lathe::compress::PruneSchedule::Gradual;
  r.prune.sparsity = 0.6;
  r.prune.finetune_steps = 6;
  r.prune.prune_every = 2;
  r.prune.ramp = 0.5;
  r.eval.batches = 1;
  lathe::pipeline::run_prune_stage(r, false);
  const auto pruned = lathe::models::load_model(fs::path(r.run.out_dir) / "pruned" / "model.safetensors");
  for (const auto& l : lathe::compress::measure_sparsity(pruned, {})) {
    INFO(l.name);
    CHECK(l.zeros == std::llround(0.6 * static_cast<double>(l.size)));
  }

  // prune_every longer than the fine-tune (the default 10 over 10 steps updates at step 0
  // only, at initial_sparsity): the target still comes at the ramp's end, step ceil(7.5).
  PruneOptions sparse;
  sparse.sparsity = 0.5;
  CHECK(lathe::compress::gradual_sparsity(sparse, 7, 10) == 0.0);
  CHECK(lathe::compress::gradual_final_step(sparse, 10) == 8);
  CHECK(lathe::compress::gradual_sparsity(sparse, 8, 10) == 0.5);
  sparse.ramp = 1.0;  // a ramp over every step: the last step
  CHECK(lathe::compress::gradual_final_step(sparse, 10) == 9);
  auto again = r;
  again.run.out_dir = (dir.path() / "every10").string();
  again.tokenizer.path = lathe::recipe::tokenizer_path(r).string();
  again.data.shard_dir = lathe::recipe::shard_dir(r).string();
  again.prune.checkpoint = lathe::train::newest_checkpoint(r).string();
  again.prune.sparsity = 0.5;
  again.prune.finetune_steps = 10;
  again.prune.prune_every = 10;
  again.prune.ramp = 0.75;
  lathe::pipeline::run_prune_stage(again, false);
  const auto every10 = lathe::models::load_model(fs::path(again.run.out_dir) / "pruned" / "model.safetensors");
  for (const auto& l : lathe::compress::measure_sparsity(every10, {})) {
    INFO(l.name);
    CHECK(l.zeros == std::llround(0.5 * static_cast<double>(l.size)));
  }
}

TEST_CASE("prune: bad settings are refused with the key to change", "[prune][errors]") {
  auto problem = [](const std::string& prune) {
    return lathe::test::error_of([&] { lathe::recipe::parse_recipe("pipeline: [prune]\nprune: " + prune + "\n", "r.yaml"); });
  };
  CHECK_THAT(problem("{method: n_m, n: 4, m: 4}"), Catch::Contains("prune.n: n (4) must be smaller than m (4)"));
  CHECK_THAT(problem("{method: structured}"), Catch::Contains("structured pruning removes nothing"));
  CHECK_THAT(problem("{method: magnitude, score: taylor}"), Catch::Contains("score is for n_m and structured"));
  CHECK_THAT(problem("{method: n_m, score: taylor}"), Catch::Contains("n_m ranks weights by magnitude or wanda"));
  CHECK_THAT(problem("{method: wanda, schedule: gradual, finetune_steps: 5}"),
             Catch::Contains("gradual pruning ranks by magnitude"));
  CHECK_THAT(problem("{schedule: gradual}"), Catch::Contains("set finetune_steps"));
  CHECK_THAT(problem("{method: magnitude, heads: 0.5}"), Catch::Contains("heads and neurons are for method: structured"));
  CHECK_THAT(problem("{method: structured, neurons: 0.5, skip_modules: [blocks.0.*]}"),
             Catch::Contains("prune.skip_modules: structured pruning removes as many heads"));
  CHECK(problem("{method: structured, heads: 0.25, score: taylor}") == "no error");

  AnyModel model = lathe::models::make_model(ModelKind::Gpt, tiny("gpt"));
  PruneOptions o;
  o.method = PruneMethod::Structured;
  o.heads = 0.1;
  CHECK_THAT(lathe::test::error_of([&] { lathe::compress::plan_structured(model, o); }),
             Catch::Contains("prune.heads: 0.1 of 4 heads per layer removes none"));
  o.heads = 0;
  o.neurons = 0.5;
  o.score = PruneScore::Taylor;
  CHECK_THROWS_WITH(lathe::compress::plan_structured(model, o), Catch::Contains("calibration"));

  // A skip_modules path that selects nothing is a typo that would prune what it meant to keep.
  PruneOptions m;
  m.sparsity = 0.5;
  for (const std::string typo : {"blokcs.0.*", "lm_haed"}) {
    m.skip_modules = {"blocks.1.*", typo};
    CHECK_THAT(lathe::test::error_of([&] { lathe::compress::unstructured_masks(model, m, 0.5); }),
               Catch::Contains("prune.skip_modules: '" + typo + "' selects no parameter of the model"));
  }
  m.skip_modules = {"blocks.0.*", "lm_head", "output_head", "head_block"};  // paths that exist, and roles
  CHECK(lathe::test::error_of([&] { lathe::compress::unstructured_masks(model, m, 0.5); }) == "no error");
}
