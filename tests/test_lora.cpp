// LoRA and QLoRA: adapters against peft's on the same base and adapter weights, PEFT's files both
// ways, merging against merge_and_unload(), the gradient through a quantized base, and a
// fine-tuning run whose checkpoints hold the adapters alone.

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <map>

#include <nlohmann/json.hpp>
#include <sstream>

#include <ATen/ATen.h>

#include "chat_fixture.hpp"
#include "lathe/adapters/lora.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/task.hpp"
#include "lathe/train/trainer.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using lathe::test::TempDir;
namespace fs = std::filesystem;
namespace adapters = lathe::adapters;

namespace {

/// float32 forward and backward of the same function in another order of sums (transformers'
/// separate q / k / v products against lathe's fused one).
constexpr double kLoraTol = 1e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::map<std::string, at::Tensor> tensors_of(const fs::path& file) {
  auto st = lathe::io::load_safetensors(file);
  return {st.tensors.begin(), st.tensors.end()};
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& ids) {
  const auto V = logits.size(-1);
  return at::cross_entropy_loss(logits.narrow(1, 0, ids.size(1) - 1).reshape({-1, V}),
                                ids.narrow(1, 1, ids.size(1) - 1).reshape({-1}));
}

/// The adapters' gradients under PEFT's names: the adapter saved with each A and B replaced by
/// its gradient (the values restored after).
std::map<std::string, at::Tensor> peft_named_grads(const lathe::models::AnyModel& m, const fs::path& dir) {
  std::vector<std::pair<at::Tensor, at::Tensor>> saved;
  at::NoGradGuard no_grad;
  for (auto& [path, lin] : lathe::nn::linear_layers(*m.module()))
    if (lin->lora)
      for (auto* t : {&lin->lora->A, &lin->lora->B}) {
        saved.emplace_back(*t, t->clone());
        t->copy_(t->grad());
      }
  adapters::AdapterOptions o;
  o.kind = adapters::AdapterKind::Lora;
  adapters::save_peft(m, dir, o, "base");
  for (auto& [t, v] : saved) t.copy_(v);
  return tensors_of(dir / "adapter_model.safetensors");
}

}  // namespace

TEST_CASE("lora: forward, gradients, saved adapters and merging equal peft's", "[lora][reference]") {
  const std::string family = GENERATE("llama", "gpt2");
  INFO(family);
  TempDir dir;
  lathe::test::run_reference("lora_reference.py", {"make", dir.path().string(), family});
  auto ref = tensors_of(dir.path() / "ref.safetensors");
  const auto ids = ref.at("ids");

  // PEFT's adapter read onto the base: the adapted layers' logits and the adapters' gradients.
  auto model = lathe::models::load_model(dir.path() / "base", lathe::models::ModelKind::Gpt);
  adapters::load_peft(model, dir.path() / "adapter");
  model.module()->eval();
  auto gpt = model.as<lathe::models::Gpt>();
  const auto logits = gpt->forward(ids);
  CHECK(max_diff(logits, ref.at("logits")) <= kLoraTol);
  auto loss = next_token_loss(logits, ids);
  CHECK(std::abs(loss.item<double>() - ref.at("loss").item<double>()) <= kLoraTol);
  loss.backward();
  for (const auto& p : lathe::nn::roles_of(*model.module()))
    CHECK(p.tensor.requires_grad() == (p.role == lathe::nn::Role::Adapter));
  const auto grads = peft_named_grads(model, dir.path() / "grads");
  int64_t compared = 0;
  for (const auto& [name, g] : ref) {
    if (!name.starts_with("grad.")) continue;
    INFO(name);
    const auto it = grads.find(name.substr(5));
    REQUIRE(it != grads.end());
    CHECK(max_diff(it->second, g) <= kLoraTol);
    ++compared;
  }
  CHECK(compared == static_cast<int64_t>(grads.size()));
  CHECK(compared >= 8);

  // lathe's adapter read by peft: the same logits; merged by peft and by lathe: the same weights.
  const auto saved = dir.path() / "lathe_adapter";
  const auto config = adapters::read_peft_config(dir.path() / "adapter");
  adapters::save_peft(model, saved, config.options, (dir.path() / "base").string());
  lathe::test::run_reference("lora_reference.py", {"check", dir.path().string(), saved.string()});
  CHECK(max_diff(tensors_of(saved / "peft_logits.safetensors").at("logits"), logits.detach()) <= kLoraTol);
  adapters::merge(model);
  CHECK(adapters::adapted_layers(model).empty());
  CHECK(max_diff(gpt->forward(ids), ref.at("merged_logits")) <= kLoraTol);
  lathe::models::save_hf(model, dir.path() / "lathe_merged");
  const auto theirs = tensors_of(saved / "merged" / "model.safetensors");
  const auto ours = tensors_of(dir.path() / "lathe_merged" / "model.safetensors");
  for (const auto& [name, t] : theirs) {
    INFO(name);
    REQUIRE(ours.count(name));
    CHECK(max_diff(ours.at(name), t) <= 1e-6);
  }

  // The same adapter through load_adapted, merged.
  const auto again = adapters::load_adapted(dir.path() / "adapter", /*merged=*/true, dir.path() / "base");
  CHECK(max_diff(again.as<lathe::models::Gpt>()->forward(ids), ref.at("merged_logits")) <= kLoraTol);
}

TEST_CASE("lora: adapters PEFT saves that lathe computes otherwise are refused, naming the key", "[lora][errors]") {
  TempDir dir;
  lathe::test::run_reference("lora_reference.py", {"make", dir.path().string(), "llama"});
  const auto adapter = dir.path() / "adapter";
  const auto original = lathe::test::read_file(adapter / "adapter_config.json");
  auto with = [&](const std::string& key, const std::string& value) {
    auto j = nlohmann::json::parse(original);
    j[key] = nlohmann::json::parse(value);
    dir.write("adapter/adapter_config.json", j.dump());
    return lathe::test::error_of([&] { adapters::read_peft_config(adapter); });
  };
  CHECK_THAT(with("use_dora", "true"), Catch::Contains("adapter_config.json: use_dora: true is not read"));
  CHECK_THAT(with("bias", "\"all\""), Catch::Contains("bias: \"all\""));
  CHECK_THAT(with("rank_pattern", "{\"q_proj\": 2}"), Catch::Contains("rank_pattern"));
  CHECK_THAT(with("modules_to_save", "[\"lm_head\"]"), Catch::Contains("modules_to_save"));
  CHECK_THAT(with("peft_type", "\"IA3\""), Catch::Contains("peft_type"));
  CHECK_THAT(with("init_lora_weights", "\"pissa\""), Catch::Contains("init_lora_weights: \"pissa\""));
  dir.write("adapter/adapter_config.json", original);

  // An adapter of another shape: every mis-shaped tensor named, the model left without adapters.
  auto model = lathe::models::load_model(dir.path() / "base", lathe::models::ModelKind::Gpt);
  auto j = nlohmann::json::parse(original);
  j["r"] = 5;
  dir.write("adapter/adapter_config.json", j.dump());
  CHECK_THAT(lathe::test::error_of([&] { adapters::load_peft(model, adapter); }),
             Catch::Contains("adapter_model.safetensors: does not fit this llama model") &&
                 Catch::Contains("q_proj.lora_A.weight [3, 48]"));
  CHECK(adapters::adapted_layers(model).empty());
  dir.write("adapter/adapter_config.json", original);
  CHECK_THAT(lathe::test::error_of([&] { adapters::load_adapted(adapter, true, dir.path() / "nowhere"); }),
             Catch::Contains("the base model") && Catch::Contains("nowhere"));
}

TEST_CASE("qlora: adapters on a quantized base get the gradients of its dequantized weights", "[lora][quantize]") {
  using lathe::nn::QuantScheme;
  const auto scheme = GENERATE(QuantScheme::Int8WeightOnly, QuantScheme::Int4WeightOnly);
  INFO(lathe::enum_name(scheme));
  torch::manual_seed(11);
  auto options = lathe::test::tiny("llama");
  options.d_ff = 64;  // int4 groups of 32 tile every layer's inputs
  auto model = lathe::models::make_model(lathe::models::ModelKind::Gpt, options);
  adapters::AdapterOptions o;
  o.kind = adapters::AdapterKind::Qlora;
  o.rank = 4;
  o.base_method = scheme;
  o.base_group_size = 32;
  const auto summary = adapters::attach(model, o);
  CHECK(summary.layers.size() == 8);  // q/k/v, proj, gate/up, down in each of 2 blocks
  CHECK(lathe::models::quantized_layers(model).size() == 8);
  CHECK(summary.base_bytes < summary.base_parameters * 4);
  // Random B (the fresh one is zero) so that A has a gradient too.
  {
    at::NoGradGuard no_grad;
    for (auto& [path, lin] : lathe::nn::linear_layers(*model.module()))
      if (lin->lora) lin->lora->B.normal_(0.0, 0.1);
  }
  const auto ids = at::randint(0, 64, {2, 12}, at::kLong);
  auto gpt = model.as<lathe::models::Gpt>();
  next_token_loss(gpt->forward(ids), ids).backward();
  std::vector<at::Tensor> quantized_grads;
  for (auto& p : model.module()->parameters())
    if (p.requires_grad()) quantized_grads.push_back(p.grad().clone());

  // The reference: the same model with each quantized weight made a float weight of the values it
  // stands for, through LibTorch's own float products and autograd.
  for (auto& [path, lin] : lathe::nn::linear_layers(*model.module())) lin->dequantize();
  adapters::freeze_base(model);
  for (auto& p : model.module()->parameters()) p.mutable_grad().reset();
  next_token_loss(gpt->forward(ids), ids).backward();
  std::vector<at::Tensor> float_grads;
  for (auto& p : model.module()->parameters())
    if (p.requires_grad()) float_grads.push_back(p.grad());
  REQUIRE(float_grads.size() == quantized_grads.size());
  REQUIRE(float_grads.size() == 16);
  // int8 computes in float32 (the same products); int4 in bfloat16 (ATen's packed kernel).
  const double tol = scheme == QuantScheme::Int8WeightOnly ? 1e-5 : 3e-2;
  for (std::size_t i = 0; i < float_grads.size(); ++i) {
    INFO(i);
    const double scale = float_grads[i].abs().max().item<double>();
    CHECK(scale > 0);
    CHECK(max_diff(quantized_grads[i], float_grads[i]) <= tol * std::max(1.0, scale));
  }
}

TEST_CASE("lora: an sft run trains the adapters alone, resumes exactly, and exports what peft merges",
          "[lora][sft][pipeline][reference]") {
  lathe::test::ChatFixture f;
  TempDir dir;
  lathe::test::run_reference("lora_reference.py", {"make", dir.path().string(), "llama", "600"});
  const auto base = dir.path() / "base";
  auto recipe = [&](const fs::path& out, const std::string& pipeline) {
    return lathe::recipe::parse_recipe(fmt::format(R"(pipeline: [{}]
run: {{out_dir: {}, seed: 5, device: cpu}}
tokenizer: {{path: {}}}
data: {{train_files: [{}], seq_len: 64, val_fraction: 0.2, num_workers: 1}}
optim: {{lr: 1.0e-2}}
schedule: {{warmup_steps: 1}}
train: {{task: sft, max_steps: 6, batch_size: 4, save_every: 3, eval_every: 3, eval_batches: 2, init_from: {}}}
adapters: {{kind: lora, rank: 4, alpha: 8, dropout: 0.1}}
export: {{format: hf}}
)",
                                                   pipeline, out.string(), f.tokenizer().string(),
                                                   f.conversations.string(), base.string()),
                                       "lora.yaml");
  };
  const auto a = dir.path() / "a", b = dir.path() / "b";
  std::ostringstream log;
  lathe::pipeline::run_pipeline(recipe(a, "train, export"), {}, log);
  INFO(log.str());
  CHECK_THAT(log.str(), Catch::Contains("lora adapters on 8 layers"));
  CHECK_THAT(log.str(), Catch::Contains(" frozen weights = "));  // the memory plan counts the base
  const auto step6 = a / "checkpoints" / "step_00000006";
  CHECK(fs::exists(step6 / "adapter_config.json"));
  CHECK_FALSE(fs::exists(step6 / "model.safetensors"));
  CHECK(fs::file_size(step6 / "adapter_model.safetensors") * 10 < fs::file_size(base / "model.safetensors"));
  // The optimizer holds the adapters alone.
  for (const auto& [name, t] : tensors_of(step6 / "trainer.safetensors"))
    if (name.starts_with("optim.")) CHECK_THAT(name, Catch::Contains(".lora."));

  // Interrupted after step 3 and resumed: the adapters of step 6 are bit for bit the same.
  auto rb = recipe(b, "train");
  lathe::pipeline::run_pipeline(rb, {}, log);
  fs::remove_all(b / "checkpoints" / "step_00000006");
  rb.train.resume = "auto";
  lathe::train::Trainer(rb).run();
  const auto wa = tensors_of(step6 / "adapter_model.safetensors");
  const auto wb = tensors_of(b / "checkpoints" / "step_00000006" / "adapter_model.safetensors");
  REQUIRE(wa.size() == wb.size());
  for (const auto& [name, t] : wa) CHECK(at::equal(t, wb.at(name)));

  // The adapters continue only as they were trained: another scale, base or kind is refused by key.
  auto changed = recipe(a, "train, export");
  changed.adapters.alpha = 32;
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(changed, {}, log); }),
             Catch::Contains("adapters.alpha: 8 in the checkpoint, 32 in the recipe"));
  changed = recipe(a, "train, export");
  changed.adapters.kind = adapters::AdapterKind::None;
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(changed, {}, log); }),
             Catch::Contains("holds adapters alone"));
  auto parent = recipe(dir.path() / "c", "train");
  parent.train.init_from = (a / "checkpoints").string();
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(parent, {}, log); }),
             Catch::Contains("holds the checkpoints of a run, not a model: name one of them"));
  changed = recipe(a, "train, export");
  changed.adapters.targets = {"head_block"};
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(changed, {}, log); }),
             Catch::Contains("was trained with other adapters (adapters.targets: "));

  // peft reads the checkpoint as an adapter of the base; merged, it is what lathe exported.
  const auto copy = dir.path() / "adapter_copy";
  fs::create_directories(copy);
  for (const auto* file : {"adapter_config.json", "adapter_model.safetensors"}) fs::copy(step6 / file, copy / file);
  lathe::test::run_reference("lora_reference.py", {"check", dir.path().string(), copy.string()});
  const auto theirs = tensors_of(copy / "merged" / "model.safetensors");
  const auto ours = tensors_of(a / "export" / "model.safetensors");
  for (const auto& [name, t] : theirs) {
    INFO(name);
    REQUIRE(ours.count(name));
    CHECK(max_diff(ours.at(name), t) <= 1e-6);
  }
  // The base weights did not move: the merged export differs from the base only where adapted.
  const auto base_w = tensors_of(base / "model.safetensors");
  CHECK(at::equal(base_w.at("model.embed_tokens.weight"), ours.at("model.embed_tokens.weight")));
  CHECK(at::equal(base_w.at("model.layers.0.self_attn.k_proj.weight").to(at::kFloat),
                  ours.at("model.layers.0.self_attn.k_proj.weight")) == false);
}

TEST_CASE("lora: an adapter on the output head trains through the blockwise loss", "[lora]") {
  torch::manual_seed(2);
  auto model = lathe::models::make_model(lathe::models::ModelKind::Gpt, lathe::test::tiny("llama"));
  adapters::AdapterOptions o;
  o.kind = adapters::AdapterKind::Lora;
  o.targets = {"output_head"};
  CHECK(adapters::attach(model, o).layers == std::vector<std::string>{"lm_head"});
  lathe::train::Batch b;
  b.input_ids = at::randint(0, 64, {2, 8}, at::kLong);
  b.targets = at::randint(0, 64, {2, 8}, at::kLong);
  lathe::train::task_loss(model, b).backward();
  const auto& B = model.as<lathe::models::Gpt>()->lm_head->lora->B;
  REQUIRE(B.grad().defined());
  CHECK(B.grad().abs().max().item<double>() > 0);
}

TEST_CASE("lora: recipes that cannot train adapters are refused, naming the keys", "[lora][recipe][errors]") {
  const std::string base = "data: {train_files: [c.txt], seq_len: 32}\nmodel: {n_layer: 1, n_head: 2, d_model: 16, "
                           "max_seq_len: 32}\n";
  auto error = [&](const std::string& more) {
    return lathe::test::error_of([&] { lathe::recipe::parse_recipe(base + more, "r.yaml"); });
  };
  CHECK_THAT(error("adapters: {kind: lora}\n"), Catch::Contains("adapters.kind") && Catch::Contains("train.init_from"));
  CHECK_THAT(error("train: {init_from: x}\nadapters: {kind: qlora, base_method: int8_dynamic}\n"),
             Catch::Contains("adapters.base_method: int8_dynamic quantizes the activations too"));
  CHECK_THAT(error("train: {init_from: x}\nadapters: {kind: qlora, base_group_size: 48}\n"),
             Catch::Contains("adapters.base_group_size"));
  CHECK_THAT(error("train: {init_from: x}\nadapters: {kind: lora}\ndistributed: {strategy: fsdp}\n"),
             Catch::Contains("strategy ddp"));
  CHECK_NOTHROW(lathe::recipe::parse_recipe(base + "train: {init_from: x}\nadapters: {kind: lora, rank: 2}\n", "r.yaml"));
}
