// GPT, Llama-style GPT and BERT against Hugging Face transformers: tiny random models made by
// tests/reference/hf_models.py are loaded, and lathe's logits and gradients are compared with
// the reference; models saved by lathe are loaded by transformers and must give the same logits.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

#include <ATen/ATen.h>

#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/deferred.hpp"
#include "lathe/models/generate.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/nn/quantized.hpp"
#include "lathe/recipe/enums.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/train/initial_model.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using namespace lathe::models;
using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {

// fp32 tolerances: logits of the tiny models are O(1); one kernel order versus another differs
// by a few ulps per operation.
constexpr double kLogitTol = 2e-5;
constexpr double kGradTol = 2e-5;  // relative to the largest gradient entry of the tensor (or 1)
constexpr double kLossTol = 1e-5;
// bfloat16 weights and activations (8 significant bits) against float32 logits of a tiny model.
constexpr double kBf16LogitTol = 0.05;

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void python(const std::vector<std::string>& args) { lathe::test::run_reference("hf_models.py", args); }

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// A reference made by transformers: DIR/hf (the model) and DIR/ref.safetensors.
struct Reference {
  TempDir dir;
  lathe::io::Safetensors ref;
  explicit Reference(const std::string& kind) {
    python({"make", kind, dir.path().string()});
    ref = lathe::io::load_safetensors(dir.path() / "ref.safetensors");
  }
  fs::path hf() const { return dir.path() / "hf"; }
  const at::Tensor& operator[](const std::string& name) const { return ref.at(name); }
  bool has(const std::string& name) const {
    for (const auto& [n, t] : ref.tensors)
      if (n == name) return true;
    return false;
  }
  /// Logits transformers computes with the model saved in `model_dir` on the reference inputs.
  at::Tensor hf_logits(const fs::path& model_dir) const {
    const auto out = dir.path() / "hf_logits.safetensors";
    python({"logits", model_dir.string(), (dir.path() / "ref.safetensors").string(), out.string()});
    return lathe::io::load_safetensors(out).at("logits");
  }
};

/// Puts every parameter's gradient in place of the parameter and saves the model in HF layout,
/// so that the name table translates gradients exactly as it translates weights.
template <class M>
lathe::io::Safetensors gradients_in_hf_layout(M& model, const fs::path& dir) {
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      REQUIRE(p.grad().defined());
      p.copy_(p.grad());
    }
  }
  save_hf(model, dir);
  return lathe::io::load_safetensors(dir / "model.safetensors");
}

void check_gradients(const lathe::io::Safetensors& ours, const Reference& ref) {
  std::size_t n = 0;
  for (const auto& [name, g] : ours.tensors) {
    INFO(name);
    REQUIRE(ref.has("grad." + name));
    const auto& want = ref["grad." + name];
    const double scale = std::max(1.0, want.abs().max().item<double>());
    CHECK(max_diff(g, want) <= kGradTol * scale);
    ++n;
  }
  CHECK(n > 10);
}

/// The checks every model goes through: logits and loss equal the reference; gradients of the
/// loss equal the reference; saved in HF layout, transformers gives the same logits.
template <class M>
void check_model(M& model, const at::Tensor& logits, const at::Tensor& loss, const Reference& ref) {
  CHECK(max_diff(logits, ref["logits"]) <= kLogitTol);
  CHECK(std::abs(loss.item<double>() - ref["loss"].item<double>()) <= kLossTol);
  loss.backward();
  TempDir out;
  save_hf(model, out.path() / "saved");
  CHECK(max_diff(ref.hf_logits(out.path() / "saved"), ref["logits"]) <= kLogitTol);
  check_gradients(gradients_in_hf_layout(model, out.path() / "grads"), ref);
}

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& ids) {
  const int64_t V = logits.size(-1);
  return at::cross_entropy_loss(logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, V}),
                                ids.narrow(1, 1, ids.size(1) - 1).reshape({-1}));
}

void check_decoder(const std::string& kind) {
  Reference ref(kind);
  Gpt model = load_hf_gpt(ref.hf());
  model->eval();
  const auto& ids = ref["input_ids"];
  auto logits = model(ids);
  // lathe reads its own HF-layout file back exactly.
  TempDir out;
  save_hf(model, out.path());
  Gpt again = load_hf_gpt(out.path());
  again->eval();
  CHECK(max_diff(again(ids), logits) == 0.0);
  check_model(model, logits, causal_lm_loss(logits, ids), ref);
}

}  // namespace

TEST_CASE("models: GPT-2 logits gradients and saved files match transformers", "[models][reference]") {
  check_decoder("gpt2");
}

TEST_CASE("models: Llama-style GPT (rope rmsnorm swiglu GQA) matches transformers LlamaForCausalLM",
          "[models][reference]") {
  check_decoder("llama");
}

TEST_CASE("models: Llama 3 (rope scaling, head_dim, tied head), Qwen2 (q/k/v biases), Mistral (sliding "
          "window), Gemma (scaled embeddings, offset norms, GeGLU), Gemma 2 (soft-capping, sandwich norms, "
          "alternating windows, score scale) and Phi-3 (fused tensors, window) match transformers: logits, "
          "gradients, saved files, greedy generation",
          "[models][reference]") {
  for (const std::string kind : {"llama3", "qwen2", "mistral", "gemma", "gemma2", "phi3"}) {
    INFO(kind);
    check_decoder(kind);
    Reference ref(kind);
    Gpt model = load_hf_gpt(ref.hf());
    // Written back, the directory is the one transformers wrote: config (as transformers reads
    // it) and tensors.
    TempDir out;
    save_hf(model, out.path());
    python({"same", ref.hf().string(), out.path().string()});

    // Greedy 24 tokens: cached, recomputed and transformers' generate agree (Mistral's window of
    // 5 positions is passed many times over).
    const std::vector<int64_t> prompt{5, 17, 42, 3};
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 24;
    auto cached = generate(model, prompt, greedy);
    greedy.use_cache = false;
    CHECK(generate(model, prompt, greedy).tokens == cached.tokens);
    lathe::io::save_safetensors(out.path() / "prompt.safetensors", {{"prompt", at::tensor(prompt, at::kLong)}});
    python({"generate", ref.hf().string(), (out.path() / "prompt.safetensors").string(),
            (out.path() / "tokens.safetensors").string(), "24"});
    auto hf = lathe::io::load_safetensors(out.path() / "tokens.safetensors").at("tokens");
    CHECK(std::vector<int64_t>(hf.data_ptr<int64_t>(), hf.data_ptr<int64_t>() + hf.numel()) == cached.tokens);
  }
}

TEST_CASE("models: Gemma 2's other layer_types, null soft-caps and no window compute what transformers computes",
          "[models][reference]") {
  Reference ref("gemma2");
  struct Case {
    std::string what;
    std::function<void(nlohmann::json&)> change;
  };
  const std::vector<Case> cases{
      {"every third layer full", [](auto& c) {
         c["layer_types"] = {"sliding_attention", "sliding_attention", "full_attention"};
       }},
      {"every layer windowed", [](auto& c) {
         c["layer_types"] = {"sliding_attention", "sliding_attention", "sliding_attention"};
       }},
      {"no caps, every layer full", [](auto& c) {
         c["attn_logit_softcapping"] = nullptr;
         c["final_logit_softcapping"] = nullptr;
         c["layer_types"] = {"full_attention", "full_attention", "full_attention"};
       }},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    TempDir dir;
    fs::copy(ref.hf(), dir.path(), fs::copy_options::recursive);
    auto config = nlohmann::json::parse(file_bytes(dir.path() / "config.json"));
    c.change(config);
    std::ofstream(dir.path() / "config.json") << config.dump(2);
    Gpt model = load_hf_gpt(dir.path());
    model->eval();
    torch::NoGradGuard no_grad;
    const auto ours = model(ref["input_ids"]);
    const auto theirs = ref.hf_logits(dir.path());
    CHECK(max_diff(ours, theirs) <= kLogitTol);
    // The change matters: the model differs from the reference's own.
    CHECK(max_diff(ours, ref["logits"]) > 1e-3);
    // Written back, transformers reads the same function (a model without a window still names
    // one: transformers' Gemma 2 builds its sliding mask whatever the layer types).
    TempDir out;
    save_hf(model, out.path());
    CHECK(max_diff(ref.hf_logits(out.path()), theirs) <= kLogitTol);
  }
}

namespace {

/// A line of /proc/self/status ("VmRSS", "VmHWM") in bytes; -1 where there is none.
int64_t status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key + ":")) return std::stoll(line.substr(key.size() + 1)) * 1024;  // "  123 kB"
  return -1;
}

}  // namespace

TEST_CASE("models: a 500 MB bfloat16 checkpoint in shards is read into bfloat16 parameters with at most 1.3 times "
          "its size resident", "[models][reference]") {
  TempDir dir;
  python({"large", dir.path().string()});
  // The peak is measured from here: writing 5 to clear_refs resets VmHWM to the current RSS.
  const bool reset = static_cast<bool>(std::ofstream("/proc/self/clear_refs") << "5");
  const int64_t before = status_bytes("VmRSS");
  if (!reset || before < 0) {
    WARN("this kernel does not let a process reset its peak resident memory: not measured");
    return;
  }
  Gpt model = [&] {
    lathe::nn::BuildDtypeGuard bf16(at::kBFloat16);
    return load_hf_gpt(dir.path());
  }();
  const int64_t peak = status_bytes("VmHWM");
  int64_t bytes = 0;
  for (const auto& p : model->parameters()) {
    CHECK(p.scalar_type() == at::kBFloat16);
    bytes += static_cast<int64_t>(p.nbytes());
  }
  const double ratio = static_cast<double>(peak - before) / static_cast<double>(bytes);
  INFO("model " << bytes / 1e6 << " MB, resident before " << before / 1e6 << " MB, peak " << peak / 1e6
                << " MB: " << ratio << "x the model");
  CHECK(bytes > 480'000'000);
  CHECK(ratio <= 1.3);
  // The values are the checkpoint's, from each shard (the stacked q / k / v rows too).
  auto params = model->named_parameters();
  const auto index = nlohmann::json::parse(file_bytes(dir.path() / "model.safetensors.index.json"));
  auto stored = [&](const std::string& name) {
    return lathe::io::load_safetensors(dir.path() / index["weight_map"][name].get<std::string>()).at(name);
  };
  CHECK(at::equal(params["wte.weight"], stored("model.embed_tokens.weight")));
  CHECK(at::equal(params["blocks.13.mlp.proj.weight"], stored("model.layers.13.mlp.down_proj.weight")));
  CHECK(at::equal(params["blocks.7.attn.qkv.weight"].narrow(0, 1024, 512), stored("model.layers.7.self_attn.k_proj.weight")));
  CHECK(at::equal(params["ln_f.weight"], stored("model.norm.weight")));
}

TEST_CASE("models: written in bfloat16 shards of 2 KB, a model is what transformers' save_pretrained writes",
          "[models][reference]") {
  for (const std::string kind : {"phi3", "bert_mlm"}) {
    INFO(kind);
    Reference ref(kind);
    auto model = lathe::models::load_model(ref.hf());
    TempDir out;
    lathe::models::HfWriteOptions options;
    options.dtype = at::kBFloat16;
    options.max_shard_bytes = 2000;
    const auto files = lathe::models::save_hf(model, out.path() / "ours", options);
    CHECK(files.size() > 4);  // config.json, the index and the shards
    CHECK(std::find(files.begin(), files.end(), "model.safetensors.index.json") != files.end());
    for (const auto& f : files) {
      if (!f.starts_with("model-")) continue;
      const auto st = lathe::io::load_safetensors(out.path() / "ours" / f);
      int64_t bytes = 0;
      for (const auto& [name, t] : st.tensors) {
        CHECK(t.scalar_type() == at::kBFloat16);
        bytes += static_cast<int64_t>(t.nbytes());
      }
      CHECK((bytes <= 2000 || st.tensors.size() == 1));
    }
    python({"resave", ref.hf().string(), (out.path() / "theirs").string(), "bfloat16", "2KB"});
    python({"same", (out.path() / "ours").string(), (out.path() / "theirs").string()});
    CHECK(lathe::models::hf_storage_dtype(out.path() / "ours") == at::kBFloat16);
    // Read back (every shard), the values are the bfloat16 ones.
    auto again = lathe::models::load_model(out.path() / "ours");
    auto a = again.module()->named_parameters(), b = model.module()->named_parameters();
    for (const auto& item : a)
      CHECK(at::equal(item.value(), b[item.key()].to(at::kBFloat16).to(at::kFloat)));
    if (kind == "phi3") {
      // The bfloat16 checkpoint computed in bfloat16 gives transformers' logits (which loads it
      // in its stored dtype) within bfloat16's precision.
      auto gpt = again.as<Gpt>();
      gpt->to(at::kBFloat16);
      gpt->eval();
      torch::NoGradGuard no_grad;
      const auto ours = gpt(ref["input_ids"]).to(at::kFloat);
      CHECK(max_diff(ours, ref.hf_logits(out.path() / "theirs")) <= kBf16LogitTol);
    }
  }
}

TEST_CASE("models: with train.init_from a Hugging Face directory the recipe's model keys come from its config.json",
          "[models][reference][recipe]") {
  Reference ref("llama3");
  const auto from = ref.hf().string();
  // No model section: every key is the checkpoint's.
  const std::string data = "data: {train_files: [c.txt], seq_len: 32}\n";
  auto r = lathe::recipe::parse_recipe(data + "train: {init_from: " + from + "}\n", "r.yaml");
  const auto want = read_hf_gpt_config(ref.hf());
  CHECK(r.model.arch == lathe::models::Arch::Gpt);
  CHECK(r.model.n_layer == 2);
  CHECK(r.model.d_head == 12);
  CHECK(r.model.n_kv_head == 2);
  CHECK(r.model.position == lathe::nn::Position::Rope);
  CHECK(r.model.rope_scaling == lathe::nn::RopeScaling::Llama3);
  CHECK(r.model.rope_original_max_seq_len == 32);
  CHECK(r.model.rope_theta == want.rope_theta);
  CHECK(r.model.norm_eps == want.norm_eps);
  CHECK(r.model.tie_embeddings);
  CHECK(lathe::models::architecture_differences(Arch::Gpt, want, r.model.options(97)).empty());
  r.model.vocab_size = 97;  // the tokenizer's size in a run
  CHECK_NOTHROW(lathe::train::initial_model(r, nullptr));
  // A key the recipe sets keeps the recipe's value (a setting such as dropout), and a shape key
  // that contradicts the checkpoint is refused by name where the recipe is read, at its line.
  r = lathe::recipe::parse_recipe(data + "train: {init_from: " + from + "}\nmodel: {dropout: 0.1}\n", "r.yaml");
  CHECK(r.model.dropout == 0.1);
  CHECK(r.model.d_head == 12);
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(data + "train: {init_from: " + from + "}\nmodel: {dropout: 0.1, n_layer: 3}\n",
                                           "r.yaml");
             }),
             Catch::Matchers::Contains("r.yaml:3:") && Catch::Matchers::Contains("model.n_layer: train.init_from") &&
                 Catch::Matchers::Contains("has another model: 2 in the checkpoint, 3 in the recipe; set the key"));
  // A preset's key is the preset's to drop.
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(data + "train: {init_from: " + from + "}\nmodel: {preset: gpt2-124m}\n",
                                           "r.yaml");
             }),
             Catch::Matchers::Contains("model.n_layer: train.init_from") &&
                 Catch::Matchers::Contains("model.preset gpt2-124m sets it; leave the preset out"));
  // And where training starts from it (a recipe edited after it was read, a lathe checkpoint).
  r.model.n_layer = 3;
  r.model.vocab_size = 97;
  CHECK_THAT(lathe::test::error_of([&] { lathe::train::initial_model(r, nullptr); }),
             Catch::Matchers::Contains("model.n_layer: 2 in the checkpoint, 3 in the recipe"));
  // A directory whose config.json lathe refuses is named where the recipe loads.
  TempDir bad;
  fs::copy(ref.hf(), bad.path(), fs::copy_options::recursive);
  auto config = nlohmann::json::parse(lathe::test::read_file(bad.path() / "config.json"));
  config["rope_parameters"]["rope_type"] = "yarn";
  std::ofstream(bad.path() / "config.json") << config.dump(2);
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(data + "train: {init_from: " + bad.path().string() + "}\n", "r.yaml");
             }),
             Catch::Matchers::Contains("train.init_from") && Catch::Matchers::Contains("rope_type = \"yarn\""));
}

TEST_CASE("models: BERT masked LM on a padded batch matches transformers", "[models][reference]") {
  Reference ref("bert_mlm");
  BertForMaskedLM model = load_hf_bert_mlm(ref.hf());
  model->eval();
  auto logits = model(ref["input_ids"], ref["token_type_ids"], ref["attention_mask"]);
  // Every position, padded ones included, is compared: the mask must reach every layer.
  const int64_t V = logits.size(-1);
  check_model(model, logits,
              at::cross_entropy_loss(logits.reshape({-1, V}), ref["labels"].reshape({-1}), {}, at::Reduction::Mean,
                                     /*ignore_index=*/-100),
              ref);
}

TEST_CASE("models: BERT sequence classification matches transformers", "[models][reference]") {
  Reference ref("bert_cls");
  std::vector<std::string> initialized;
  BertForSequenceClassification model = load_hf_bert_classifier(ref.hf(), 0, &initialized);
  CHECK(initialized.empty());
  CHECK(model->bert->options.num_labels == 3);
  model->eval();
  auto logits = model(ref["input_ids"], ref["token_type_ids"], ref["attention_mask"]);
  check_model(model, logits, at::cross_entropy_loss(logits, ref["labels"]), ref);

  // A masked-LM directory starts a classifier: the encoder is loaded, pooler and classifier are new.
  TempDir mlm_dir;
  BertForMaskedLM mlm(model->bert->options);
  save_hf(mlm, mlm_dir.path());
  initialized.clear();
  torch::manual_seed(11);
  auto fresh = load_hf_bert_classifier(mlm_dir.path(), 5, &initialized);
  CHECK(fresh->bert->options.num_labels == 5);
  CHECK(initialized == std::vector<std::string>{"bert.pooler.weight", "bert.pooler.bias", "classifier.weight",
                                                "classifier.bias"});
  CHECK(max_diff(fresh->bert->word_embeddings->weight, mlm->bert->word_embeddings->weight) == 0.0);
  // The new parameters are what a new classifier of the same seed draws.
  auto options = model->bert->options;
  options.num_labels = 5;
  torch::manual_seed(11);
  BertForSequenceClassification drawn(options);
  CHECK(at::equal(fresh->classifier->weight, drawn->classifier->weight));
  CHECK(at::equal(fresh->bert->pooler->weight, drawn->bert->pooler->weight));

  // Opened without materialising (an fsdp rank's start): parameters on the meta device, the same
  // values when they flow, for both kinds.
  for (const auto kind : {lathe::models::ModelKind::BertMaskedLm, lathe::models::ModelKind::BertClassifier}) {
    const auto dir = kind == lathe::models::ModelKind::BertMaskedLm ? mlm_dir.path() : ref.hf();
    auto opened = lathe::models::open_model(dir, kind, 0);
    for (const auto& p : opened.model.module()->parameters()) CHECK(p.is_meta());
    auto loaded = lathe::models::load_model(dir, kind, 0);
    auto made = lathe::models::materialise(opened).module()->named_parameters();
    for (const auto& item : loaded.module()->named_parameters()) CHECK(at::equal(made[item.key()], item.value()));
  }
}

TEST_CASE("models: a sharded Hugging Face checkpoint (model.safetensors.index.json) gives transformers' logits",
          "[models][reference]") {
  for (const std::string kind : {"gpt2", "llama"}) {
    INFO(kind);
    TempDir dir;
    python({"make", kind, dir.path().string(), "20KB"});
    const auto hf = dir.path() / "hf";
    REQUIRE(fs::exists(hf / "model.safetensors.index.json"));
    REQUIRE_FALSE(fs::exists(hf / "model.safetensors"));
    int shards = 0;
    for (const auto& e : fs::directory_iterator(hf)) shards += e.path().extension() == ".safetensors" ? 1 : 0;
    CHECK(shards >= 3);
    const auto ref = lathe::io::load_safetensors(dir.path() / "ref.safetensors");
    for (const auto read : {lathe::io::Read::Copy, lathe::io::Read::Map}) {
      auto model = load_hf_gpt(hf, read);
      model->eval();
      torch::NoGradGuard no_grad;
      CHECK(max_diff(model(ref.at("input_ids")), ref.at("logits")) <= kLogitTol);
    }
    {
      // Opened without materialising (what an fsdp rank starts from): nothing allocated, the
      // values a tensor at a time, each of a parameter's shape (GPT-2's stored transposed,
      // Llama's q/k/v and gate/up stacked).
      auto opened = lathe::models::open_model(hf, lathe::models::ModelKind::Gpt, 0);
      for (const auto& p : opened.model.module()->parameters()) CHECK(p.is_meta());
      auto model = lathe::models::materialise(opened).as<Gpt>();
      model->eval();
      torch::NoGradGuard no_grad;
      CHECK(max_diff(model(ref.at("input_ids")), ref.at("logits")) <= kLogitTol);
    }
    // A shard that the index names but the directory lacks is named.
    for (const auto& e : fs::directory_iterator(hf))
      if (e.path().filename().string().starts_with("model-00002")) fs::remove(e.path());
    CHECK_THAT(lathe::test::error_of([&] { load_hf_gpt(hf); }), Catch::Matchers::Contains("which does not exist"));
  }
}

TEST_CASE("models: a lathe-initialised GPT saved in HF layout gives transformers the same logits",
          "[models][reference]") {
  torch::manual_seed(7);
  ModelOptions o;
  o.vocab_size = 211;
  o.max_seq_len = 40;
  o.n_layer = 3;
  o.n_head = 4;
  o.d_model = 48;
  Gpt model(o);
  model->eval();
  TempDir dir;
  auto ids = at::randint(0, o.vocab_size, {2, 40}, at::kLong);
  lathe::io::save_safetensors(dir.path() / "ref.safetensors", {{"input_ids", ids}});
  save_hf(model, dir.path() / "model");
  const auto out = dir.path() / "logits.safetensors";
  python({"logits", (dir.path() / "model").string(), (dir.path() / "ref.safetensors").string(), out.string()});
  CHECK(max_diff(lathe::io::load_safetensors(out).at("logits"), model(ids)) <= kLogitTol);

  // GPT-2 init: std 0.02, residual projections 0.02 / sqrt(2 * n_layer), tied head.
  CHECK(model->blocks[0]->as<lathe::nn::Block>()->mlp->proj->weight.std().item<double>() ==
        Approx(0.02 / std::sqrt(6.0)).epsilon(0.05));
  CHECK(model->wte->weight.std().item<double>() == Approx(0.02).epsilon(0.05));
  CHECK(!model->lm_head);
}

TEST_CASE("models: KV-cached generation gives the tokens of full recomputation and of transformers",
          "[models][reference]") {
  Reference ref("gpt2");
  Gpt model = load_hf_gpt(ref.hf());
  const std::vector<int64_t> prompt{5, 17, 42, 3};

  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 24;
  auto cached = generate(model, prompt, greedy);
  greedy.use_cache = false;
  auto full = generate(model, prompt, greedy);
  CHECK(cached.tokens == full.tokens);
  CHECK(cached.tokens.size() == 24);
  CHECK(cached.finish_reason == "length");

  TempDir dir;
  lathe::io::save_safetensors(dir.path() / "prompt.safetensors", {{"prompt", at::tensor(prompt, at::kLong)}});
  python({"generate", ref.hf().string(), (dir.path() / "prompt.safetensors").string(),
          (dir.path() / "tokens.safetensors").string(), "24"});
  auto hf = lathe::io::load_safetensors(dir.path() / "tokens.safetensors").at("tokens");
  CHECK(std::vector<int64_t>(hf.data_ptr<int64_t>(), hf.data_ptr<int64_t>() + hf.numel()) == cached.tokens);

  // Sampling: the same seed gives the same tokens, with or without the cache.
  SamplingOptions sample;
  sample.temperature = 1.0;
  sample.top_k = 20;
  sample.top_p = 0.9;
  sample.seed = 11;
  sample.max_new_tokens = 40;
  auto a = generate(model, prompt, sample);
  sample.use_cache = false;
  auto b = generate(model, prompt, sample);
  CHECK(a.tokens == b.tokens);
  sample.seed = 12;
  CHECK(generate(model, prompt, sample).tokens != a.tokens);

  // Stop tokens end generation; the context limit (64 positions) ends it too.
  sample.stop_tokens = {a.tokens[3]};
  sample.seed = 11;
  sample.use_cache = true;
  auto stopped = generate(model, prompt, sample);
  CHECK(stopped.finish_reason == "stop_token");
  CHECK(stopped.tokens.size() <= 3);
  greedy.use_cache = true;
  greedy.max_new_tokens = 100;
  auto full_context = generate(model, prompt, greedy);
  CHECK(full_context.finish_reason == "context");
  CHECK(full_context.tokens.size() == 61);  // 64 positions fed, the token after the last one too
}

namespace {

/// Every parameter of `a` equals `b`'s bit for bit, under the same names.
void check_same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& item : pa) {
    INFO(item.key());
    REQUIRE(pb.find(item.key()));
    CHECK(at::equal(item.value(), pb[item.key()]));
  }
}

}  // namespace

TEST_CASE("models: mapped loading reads what copying reads and never writes the file", "[models][reference]") {
  Reference ref("gpt2");
  // A transformers directory (GPT-2's Conv1D weights are transposed on the way in).
  Gpt copied = load_hf_gpt(ref.hf());
  Gpt mapped = load_hf_gpt(ref.hf(), lathe::io::Read::Map);
  check_same_parameters(*copied, *mapped);
  mapped->eval();
  CHECK(max_diff(mapped(ref["input_ids"]), ref["logits"]) <= kLogitTol);

  // A lathe model file: parameters are views of the mapping; writing them leaves the file alone.
  TempDir dir;
  const auto file = dir.path() / "model.safetensors";
  AnyModel any(copied);
  save_model(any, file);
  const auto before = file_bytes(file);
  auto loaded = load_model(file, ModelKind::Gpt, 0, lathe::io::Read::Map);
  check_same_parameters(*copied, *loaded.as<Gpt>());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : loaded.as<Gpt>()->parameters()) p.add_(1.0);
  }
  CHECK(file_bytes(file) == before);
  check_same_parameters(*copied, *load_model(file, ModelKind::Gpt).as<Gpt>());
  // The mapping outlives the file's name: replaced by rename (as lathe saves), the loaded model
  // keeps the values it read.
  save_model(make_model(ModelKind::Gpt, copied->options), file);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : loaded.as<Gpt>()->parameters()) p.sub_(1.0);
  }
  auto again = load_model(file, ModelKind::Gpt);
  CHECK_FALSE(at::equal(again.as<Gpt>()->wte->weight, copied->wte->weight));    // the new file is another model
  CHECK(max_diff(loaded.as<Gpt>()->wte->weight, copied->wte->weight) <= 1e-6);  // +1 -1 in float32

  // Quantized layers (int8 codes, their scales): the kernels assume LibTorch's 64-byte
  // allocation alignment, which the file's layout gives or a copy does.
  for (auto scheme : {lathe::nn::QuantScheme::Int8WeightOnly, lathe::nn::QuantScheme::Int4WeightOnly}) {
    INFO(lathe::enum_name(scheme));
    AnyModel q(load_hf_gpt(ref.hf()));
    for (auto& [path, lin] : lathe::nn::linear_layers(*q.module()))
      lin->quantize(lathe::nn::quantize_rtn(lin->weight, {scheme, 32}, lathe::nn::QuantActivations::BFloat16));
    save_model(q, file);
    auto q_copied = load_model(file, ModelKind::Gpt), q_mapped = load_model(file, ModelKind::Gpt, 0, lathe::io::Read::Map);
    q_copied.as<Gpt>()->eval();
    q_mapped.as<Gpt>()->eval();
    torch::NoGradGuard no_grad;
    CHECK(max_diff(q_mapped.as<Gpt>()(ref["input_ids"]), q_copied.as<Gpt>()(ref["input_ids"])) == 0.0);
    // Decoding one token at a time (int8: lathe's few-rows product) against the whole batch at
    // once (48 rows: ATen's int8 / int4 kernels), both with bfloat16 activations.
    const auto whole = q_copied.as<Gpt>()(ref["input_ids"]);
    auto cache = q_mapped.as<Gpt>()->make_cache(1, 16);
    for (int64_t t = 0; t < 16; ++t)
      CHECK(max_diff(
                q_mapped.as<Gpt>()->forward(ref["input_ids"].narrow(0, 0, 1).narrow(1, t, 1), {}, &cache).select(1, 0),
                whole.narrow(0, 0, 1).select(1, t)) <= kBf16LogitTol);
  }
}

TEST_CASE("models: bfloat16 cached decoding follows transformers' float32 logits", "[models][reference]") {
  Reference ref("gpt2");
  Gpt model = load_hf_gpt(ref.hf(), lathe::io::Read::Map);
  model->to(at::kBFloat16);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto& ids = ref["input_ids"];  // (3, 16)
  const auto& want = ref["logits"];    // transformers, float32, the whole sequence at once
  // One token per step through the KV cache: the three rows together (3 rows per product), then
  // row 0 alone (1 row), as `lathe generate` decodes a batch and a single prompt.
  for (int64_t rows : {3, 1}) {
    INFO(rows << " rows per step");
    auto cache = model->make_cache(rows, ids.size(1));
    double worst = 0;
    for (int64_t t = 0; t < ids.size(1); ++t) {
      auto logits = model->forward(ids.narrow(0, 0, rows).narrow(1, t, 1), {}, &cache);
      REQUIRE(logits.scalar_type() == at::kBFloat16);
      worst = std::max(worst, max_diff(logits.select(1, 0), want.narrow(0, 0, rows).select(1, t)));
    }
    // Logits of this model are O(1)-O(10); bfloat16 keeps 8 bits: a few hundredths per logit.
    CHECK(worst <= kBf16LogitTol);
  }
}

TEST_CASE("models: Llama-style cached decoding equals full recomputation", "[models]") {
  torch::manual_seed(3);
  ModelOptions o;
  o.vocab_size = 50;
  o.max_seq_len = 32;
  o.n_layer = 2;
  o.n_head = 4;
  o.n_kv_head = 2;
  o.d_model = 32;
  o.position = lathe::nn::Position::Rope;
  o.norm = lathe::nn::NormKind::RmsNorm;
  o.activation = lathe::nn::Activation::SwiGlu;
  o.bias = false;
  o.init_std = 0.3;  // peaked distributions, so ties in argmax are impossible
  Gpt model(o);
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 20;
  auto a = generate(model, {1, 2, 3}, s);
  s.use_cache = false;
  CHECK(generate(model, {1, 2, 3}, s).tokens == a.tokens);

  // Prefill in two chunks equals one: the cache's bottom-right causal mask is right.
  torch::NoGradGuard no_grad;
  model->eval();
  auto ids = at::randint(0, 50, {2, 13}, at::kLong);
  auto whole = model(ids);
  auto cache = model->make_cache(2);
  auto first = model->forward(ids.narrow(1, 0, 5), {}, &cache);
  auto second = model->forward(ids.narrow(1, 5, 7), {}, &cache);
  // Then one token per row, as decoding goes (the grouped queries' own path), batch 2.
  auto third = model->forward(ids.narrow(1, 12, 1), {}, &cache);
  CHECK(max_diff(at::cat({first, second, third}, 1), whole) <= 1e-5);
  CHECK(cache.length == 13);
}

TEST_CASE("models: generation uses every position: a prompt of max_seq_len tokens still gets one token", "[models]") {
  torch::manual_seed(5);
  ModelOptions o;
  o.vocab_size = 50;
  o.max_seq_len = 32;
  o.n_layer = 1;
  o.n_head = 2;
  o.d_model = 16;
  o.init_std = 0.3;
  Gpt model(o);
  std::vector<int64_t> p33(33);
  for (std::size_t i = 0; i < p33.size(); ++i) p33[i] = static_cast<int64_t>(i * 7 % 50);
  const std::vector<int64_t> p31(p33.begin(), p33.begin() + 31), p32(p33.begin(), p33.begin() + 32);
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 10;
  for (bool cache : {true, false}) {
    INFO("cache " << cache);
    s.use_cache = cache;
    auto a = generate(model, p31, s);
    CHECK(a.tokens.size() == 2);
    CHECK(a.finish_reason == "context");
    auto b = generate(model, p32, s);
    REQUIRE(b.tokens.size() == 1);
    CHECK(b.finish_reason == "context");
    // The token after a full context is the argmax of the full forward pass's last position.
    torch::NoGradGuard no_grad;
    model->eval();
    auto logits = model(at::tensor(p32, at::kLong).unsqueeze(0));
    CHECK(b.tokens[0] == logits[0][31].argmax().item<int64_t>());
  }
  std::string err;
  try {
    generate(model, p33, s);
  } catch (const std::invalid_argument& e) {
    err = e.what();
  }
  CHECK(err == "generate: the prompt has 33 tokens, more than the model's context of 32 positions (max_seq_len); "
               "shorten the prompt");
  // A temperature so small that logits / T overflow samples the argmax, never NaN; one below the
  // smallest normal float (a zero once denormals are flushed) is greedy.
  for (double t : {1e-30, 1e-40}) {
    s.temperature = t;
    CHECK(generate(model, p31, s).tokens == generate(model, p31, [&] { auto g = s; g.temperature = 0; return g; }()).tokens);
  }
  // A padded embedding (vocab_limit below the rows) never yields the padded ids.
  s.temperature = 1.0;
  s.top_k = 0;
  s.vocab_limit = 3;
  s.max_new_tokens = 1;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    s.seed = seed;
    CHECK(generate(model, {1, 2}, s).tokens.at(0) < 3);
  }
}

TEST_CASE("models: left-padded GPT rows give the unpadded logits (learned positions from the mask)", "[models]") {
  torch::manual_seed(9);
  ModelOptions o;
  o.vocab_size = 40;
  o.max_seq_len = 16;
  o.n_layer = 2;
  o.n_head = 2;
  o.d_model = 16;
  o.init_std = 0.3;
  Gpt model(o);
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = at::randint(1, 40, {1, 6}, at::kLong);
  auto plain = model(ids);
  const int64_t pad = 3;
  auto padded_ids = at::cat({at::zeros({1, pad}, at::kLong), ids}, 1);
  auto mask = at::cat({at::zeros({1, pad}, at::kBool), at::ones({1, 6}, at::kBool)}, 1);
  auto padded = model(padded_ids, mask);
  CHECK(max_diff(padded.narrow(1, pad, 6), plain) <= kLogitTol);
  // Cached decoding of the padded row continues at the right position too.
  auto cache = model->make_cache(1);
  model->forward(padded_ids, mask, &cache);
  auto next = at::randint(1, 40, {1, 1}, at::kLong);
  auto step = model->forward(next, at::cat({mask, at::ones({1, 1}, at::kBool)}, 1), &cache);
  auto whole = model(at::cat({ids, next}, 1));
  CHECK(max_diff(step.select(1, 0), whole.select(1, 6)) <= kLogitTol);
}

TEST_CASE("models: preset parameter counts equal transformers' for the same configs", "[models][reference]") {
  TempDir dir;
  python({"counts", (dir.path() / "counts.json").string()});
  auto hf = nlohmann::json::parse(std::ifstream(dir.path() / "counts.json"));
  for (std::string name : {"gpt2-124m", "gpt2-355m", "gpt2-774m", "gpt2-1.5b", "gpt-tiny"}) {
    INFO(name);
    auto recipe = lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {preset: " + name + "}\n", "preset.yaml");
    auto o = recipe.model.options(/*vocab_size=*/1000);
    o.device = c10::Device(c10::kMeta);
    Gpt model(o);
    CHECK(parameter_count(*model) == hf[name].get<int64_t>());
  }
  for (std::string name : {"bert-base", "bert-large", "bert-tiny"}) {
    INFO(name);
    auto recipe = lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {preset: " + name + "}\ntrain: {task: masked_lm}\n",
                                              "preset.yaml");
    CHECK(recipe.model.arch == lathe::recipe::Arch::Bert);
    auto o = recipe.model.options(/*vocab_size=*/1000, /*pad_token_id=*/0);
    o.device = c10::Device(c10::kMeta);
    CHECK(parameter_count(*BertForMaskedLM(o)) == hf[name].get<int64_t>());
    CHECK(parameter_count(*BertForSequenceClassification(o)) == hf[name + "/classifier"].get<int64_t>());
  }
  // gpt2-124m's familiar number.
  CHECK(hf["gpt2-124m"].get<int64_t>() == 124439808);
}

TEST_CASE("models: invalid configs fail with messages naming the values", "[models]") {
  auto message = [](auto&& make) {
    try {
      make();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ModelOptions o;
  o.vocab_size = 10;
  o.d_model = 30;
  o.n_head = 4;
  CHECK(message([&] { Gpt m(o); }) == "gpt: n_head (4) must divide d_model (30)");
  o.d_model = 32;
  o.n_kv_head = 3;
  CHECK(message([&] { Gpt m(o); }) == "gpt: n_kv_head (3) must divide n_head (4)");
  o.n_kv_head = 0;
  o.max_seq_len = 8;
  o.n_layer = 1;
  Gpt small(o);
  CHECK(message([&] { small(at::zeros({1, 9}, at::kLong)); }) == "gpt: sequence of 9 positions exceeds max_seq_len (8)");
  auto b = ModelOptions::bert_defaults();
  b.vocab_size = 10;
  b.max_seq_len = 4;
  b.n_layer = 1;
  b.d_model = 8;
  b.n_head = 2;
  BertModel bert(b, true);
  CHECK(message([&] { bert(at::zeros({1, 5}, at::kLong)); }) == "bert: sequence of 5 tokens exceeds max_seq_len (4)");
  CHECK(message([&] { lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {preset: gpt2-125m}\n", "p.yaml"); })
            .find("p.yaml:2:17: model.preset: unknown preset 'gpt2-125m' (did you mean 'gpt2-124m'?)") !=
        std::string::npos);
  // A preset's numbers are checked like written ones, and reported at the preset.
  CHECK(message([&] { lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {preset: gpt-tiny, n_head: 3}\n", "p.yaml"); })
            .find("model.n_head: n_head (3) must divide d_model (64)") != std::string::npos);
}

TEST_CASE("models: config.json keys a family does not implement are refused by name", "[models][reference]") {
  // Each case: the family's directory, the change to its config.json, the words the error holds.
  struct Case {
    std::string kind;
    std::function<void(nlohmann::json&)> change;
    std::string says;
  };
  const std::vector<Case> cases{
      {"llama3", [](auto& c) { c["rope_parameters"]["rope_type"] = "yarn"; },
       "rope_parameters.rope_type = \"yarn\" is not supported"},
      {"llama3", [](auto& c) { c["rope_parameters"]["mscale"] = 1.2; },
       "rope_parameters.mscale = 1.2 is not supported"},
      {"llama3", [](auto& c) { c["rope_parameters"].erase("low_freq_factor"); },
       "rope_parameters: missing key 'low_freq_factor'"},
      {"llama3", [](auto& c) { c["rope_parameters"]["partial_rotary_factor"] = 0.5; },
       "rope_parameters.partial_rotary_factor = 0.5 is not supported"},
      {"llama3", [](auto& c) {
         c.erase("rope_parameters");
         c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
       },
       "rope_scaling.rope_type = \"dynamic\" is not supported"},
      {"llama3", [](auto& c) { c["pretraining_tp"] = 2; }, "pretraining_tp = 2 is not supported"},
      {"llama3", [](auto& c) { c["hidden_act"] = "gelu"; }, "hidden_act = \"gelu\" is not supported"},
      {"qwen2", [](auto& c) { c["use_sliding_window"] = true; }, "use_sliding_window = true is not supported"},
      {"qwen2", [](auto& c) { c["layer_types"][1] = "sliding_attention"; },
       "layer_types = \"sliding_attention\" is not supported"},
      {"mistral", [](auto& c) { c["sliding_window"] = -3; }, "sliding_window = -3 is not supported"},
      {"gemma", [](auto& c) { c["use_bidirectional_attention"] = true; },
       "use_bidirectional_attention = true is not supported"},
      {"gemma", [](auto& c) { c["hidden_act"] = "relu"; }, "hidden_act = \"relu\" is not supported"},
      {"gemma", [](auto& c) { c["attention_bias"] = true; }, "attention_bias = true is not supported"},
      {"gemma2", [](auto& c) {
         c["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
       },
       "layer_types = [\"full_attention\",\"sliding_attention\",\"sliding_attention\"] is not supported"},
      {"gemma2", [](auto& c) { c["layer_types"][1] = "chunked_attention"; },
       "layer_types[1] = \"chunked_attention\" is not supported"},
      {"gemma2", [](auto& c) { c["layer_types"] = {"sliding_attention"}; }, "layer_types = [\"sliding_attention\"] is "
                                                                          "not supported"},
      {"gemma2", [](auto& c) { c["hidden_activation"] = "relu"; }, "hidden_activation = \"relu\" is not supported"},
      {"gemma2", [](auto& c) { c["query_pre_attn_scalar"] = 12.5; }, "query_pre_attn_scalar = 12.5 is not supported"},
      {"gemma2", [](auto& c) { c["attn_logit_softcapping"] = -1.0; }, "attn_logit_softcapping = -1.0 is not supported"},
      {"gemma2", [](auto& c) { c["final_logit_softcapping"] = 0.0; }, "final_logit_softcapping = 0.0 is not supported"},
      {"gemma2", [](auto& c) { c["sliding_window"] = nullptr; }, "sliding_window = null is not supported"},
      {"gemma2", [](auto& c) { c["sliding_window"] = 0; }, "sliding_window = 0 is not supported"},
      {"gemma2", [](auto& c) { c["use_bidirectional_attention"] = true; },
       "use_bidirectional_attention = true is not supported"},
      {"phi3", [](auto& c) {
         c["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0},
                                 {"short_factor", std::vector<double>(4, 1.0)},
                                 {"long_factor", std::vector<double>(4, 2.0)}};
       },
       "rope_parameters.rope_type = \"longrope\" is not supported"},
      {"phi3", [](auto& c) { c["partial_rotary_factor"] = 0.75; }, "partial_rotary_factor = 0.75 is not supported"},
  };
  std::map<std::string, std::unique_ptr<Reference>> refs;
  for (const auto& c : cases) {
    INFO(c.kind << ": " << c.says);
    auto& ref = refs[c.kind];
    if (!ref) ref = std::make_unique<Reference>(c.kind);
    TempDir dir;
    fs::copy(ref->hf(), dir.path(), fs::copy_options::recursive);
    auto config = nlohmann::json::parse(file_bytes(dir.path() / "config.json"));
    c.change(config);
    std::ofstream(dir.path() / "config.json") << config.dump(2);
    const auto error = lathe::test::error_of([&] { load_hf_gpt(dir.path()); });
    CHECK_THAT(error, Catch::Matchers::Contains(c.says));
    CHECK_THAT(error, Catch::Matchers::Contains((dir.path() / "config.json").string()));
  }
}

TEST_CASE("models: loading reports every missing unexpected and mis-shaped tensor at once", "[models]") {
  Reference ref("gpt2");
  TempDir dir;
  fs::copy(ref.hf() / "config.json", dir.path() / "config.json");
  auto st = lathe::io::load_safetensors(ref.hf() / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, t] : st.tensors) {
    if (name == "transformer.h.1.ln_2.bias") continue;                   // missing
    if (name == "transformer.wpe.weight") t = t.narrow(0, 0, 10);        // wrong shape
    tensors.emplace_back(name, t);
  }
  tensors.emplace_back("transformer.h.0.attn.extra", at::zeros({2}));    // unexpected
  tensors.emplace_back("transformer.h.0.attn.bias", at::zeros({2}));     // a buffer old files carry: ignored
  lathe::io::save_safetensors(dir.path() / "model.safetensors", tensors);
  const auto msg = lathe::test::error_of([&] { load_hf_gpt(dir.path()); });
  CHECK(msg.find((dir.path() / "model.safetensors").string() + " does not match") != std::string::npos);
  CHECK(msg.find("missing tensors (1):\n    transformer.h.1.ln_2.bias") != std::string::npos);
  CHECK(msg.find("unexpected tensors (1):\n    transformer.h.0.attn.extra") != std::string::npos);
  CHECK(msg.find("transformer.wpe.weight [10, 32] for wpe.weight [64, 32]") != std::string::npos);

  fs::remove(dir.path() / "model.safetensors");
  CHECK(lathe::test::error_of([&] { load_hf_gpt(dir.path()); }).find("model.safetensors: not found") !=
        std::string::npos);
  std::ofstream(dir.path() / "config.json") << R"({"model_type": "t5"})";
  CHECK(lathe::test::error_of([&] { load_hf_gpt(dir.path()); }) ==
        (dir.path() / "config.json").string() +
            ": model_type 't5' is not a GPT lathe reads (gpt2, llama, qwen2, mistral, gemma, gemma2, phi3)");
}

TEST_CASE("models: batched generation of left-padded prompts gives each prompt's tokens alone", "[models]") {
  for (const bool llama : {false, true}) {
    torch::manual_seed(7);
    auto o = lathe::test::tiny(llama ? "llama" : "gpt");
    o.max_seq_len = 48;
    o.init_std = 0.3;  // peaked distributions: no near-ties in argmax between padded and unpadded sums
    Gpt model(o);
    const std::vector<std::vector<int64_t>> prompts{{5, 17, 42}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {33}, {8, 8, 8, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}};
    for (const double temperature : {0.0, 1.0}) {
      SamplingOptions s;
      s.temperature = temperature;
      s.top_k = 0;
      s.seed = 21;
      s.max_new_tokens = 20;
      std::vector<std::vector<int64_t>> streamed(prompts.size());
      const auto batch = generate_batch(model, prompts, s, [&](std::size_t row, int64_t id) {
        streamed[row].push_back(id);
        return true;
      });
      REQUIRE(batch.size() == prompts.size());
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        auto alone = s;
        alone.seed = s.seed + b;  // row b's stream
        const auto one = generate(model, prompts[b], alone);
        INFO("llama " << llama << ", temperature " << temperature << ", prompt " << b);
        CHECK(batch[b].tokens == one.tokens);
        CHECK(batch[b].finish_reason == one.finish_reason);
        CHECK(streamed[b] == one.tokens);
      }
    }
    // A stop token ends its row only; the others go on to max_new_tokens.
    SamplingOptions s;
    s.temperature = 0;
    s.max_new_tokens = 12;
    const auto free_run = generate(model, prompts[1], s);
    s.stop_tokens = {free_run.tokens[2]};
    const auto batch = generate_batch(model, prompts, s);
    CHECK(batch[1].finish_reason == "stop_token");
    CHECK(batch[1].tokens.size() <= 2);
    for (std::size_t b : {0u, 2u, 3u}) CHECK(batch[b].tokens == generate(model, prompts[b], s).tokens);
  }
}

TEST_CASE("models: a batched row goes on after a longer row has filled the context", "[models]") {
  for (const bool llama : {false, true}) {
    torch::manual_seed(11);
    auto o = lathe::test::tiny(llama ? "llama" : "gpt");
    o.max_seq_len = 32;
    o.init_std = 0.3;  // peaked distributions: no near-ties in argmax between padded and unpadded sums
    Gpt model(o);
    std::vector<int64_t> long_prompt;
    for (int64_t i = 0; i < 28; ++i) long_prompt.push_back((i * 7 + 3) % o.vocab_size);
    const std::vector<std::vector<int64_t>> prompts{long_prompt, {5}, {9, 4, 2}};
    for (const double temperature : {0.0, 1.0}) {
      SamplingOptions s;
      s.temperature = temperature;
      s.top_k = 0;
      s.seed = 5;
      s.max_new_tokens = 20;
      const auto batch = generate_batch(model, prompts, s);
      REQUIRE(batch.size() == prompts.size());
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        auto alone = s;
        alone.seed = s.seed + b;
        const auto one = generate(model, prompts[b], alone);
        INFO("llama " << llama << ", temperature " << temperature << ", prompt " << b);
        CHECK(batch[b].tokens == one.tokens);
        CHECK(batch[b].finish_reason == one.finish_reason);
      }
      CHECK(batch[0].finish_reason == "context");  // the long row alone meets the context
      CHECK(batch[1].finish_reason == "length");
    }
  }
}

TEST_CASE("models: every model kind has its row: spelling, task, class, file and Hugging Face round trips",
          "[models]") {
  // The spellings are the model file's "kind" values, which files already written carry.
  const std::vector<std::pair<ModelKind, std::string>> spelled{{ModelKind::Gpt, "gpt"},
                                                               {ModelKind::BertMaskedLm, "bert_masked_lm"},
                                                               {ModelKind::BertClassifier, "bert_classifier"},
                                                               {ModelKind::BertEncoder, "bert_encoder"}};
  const auto rows = model_kinds();
  REQUIRE(rows.size() == spelled.size());
  // Each training task is served by exactly one kind.
  for (const auto& [task, name] : lathe::EnumTable<lathe::recipe::Task>::values)
    CHECK(std::count_if(rows.begin(), rows.end(), [&](const auto& row) { return row.trains(name); }) == 1);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    INFO(spelled[i].second);
    CHECK(row.kind == spelled[i].first);
    CHECK(&kind_traits(row.kind) == &row);
    CHECK(lathe::parse_enum<ModelKind>(spelled[i].second) == row.kind);
    // A kind no task trains (the encoder) has no task name.
    CHECK((row.task.empty() || lathe::parse_enum<lathe::recipe::Task>(row.task).has_value()));
    auto o = lathe::test::tiny(row.arch == Arch::Gpt ? "gpt" : "bert");
    o.num_labels = 3;
    torch::manual_seed(3);
    const auto m = make_model(row.kind, o);
    CHECK(m.kind_name() == spelled[i].second);
    CHECK(AnyModel(m.module()).kind() == row.kind);  // the class tells the kind
    TempDir dir;
    save_model(m, dir.path() / "model.safetensors");
    const auto meta =
        nlohmann::json::parse(lathe::io::load_safetensors(dir.path() / "model.safetensors").metadata.at("lathe.model"));
    CHECK(meta.at("kind") == spelled[i].second);
    const auto loaded = load_model(dir.path());
    CHECK(loaded.kind() == row.kind);
    auto a = m.module()->named_parameters(), b = loaded.module()->named_parameters();
    REQUIRE(a.size() == b.size());
    for (const auto& item : a) CHECK(at::equal(item.value(), b[item.key()]));
    // The row's Hugging Face writer and reader: the directory reads back as the same kind.
    save_hf(m, dir.path() / "hf");
    const auto from_hf = load_model(dir.path() / "hf", row.kind);
    CHECK(from_hf.kind() == row.kind);
    auto c = from_hf.module()->named_parameters();
    for (const auto& item : a) CHECK(at::equal(item.value(), c[item.key()]));
  }
  CHECK(AnyModel(BertModel(lathe::test::tiny("bert"), /*with_pooler=*/false)).kind() == ModelKind::BertEncoder);
  CHECK_THROWS_AS(AnyModel().kind(), std::logic_error);
}

TEST_CASE("models: a file is refused as another kind, except a masked LM starting a classifier", "[models]") {
  TempDir dir;
  auto o = lathe::test::tiny("bert");
  o.num_labels = 3;
  torch::manual_seed(5);
  const auto mlm = make_model(ModelKind::BertMaskedLm, o);
  save_model(mlm, dir.path() / "mlm.safetensors");
  const auto file = (dir.path() / "mlm.safetensors").string();
  CHECK(lathe::test::error_of([&] { load_model(file, ModelKind::Gpt); }) ==
        file + ": holds a bert_masked_lm model, not the model this task needs");
  const auto classifier = load_model(file, ModelKind::BertClassifier, 4);
  CHECK(classifier.kind() == ModelKind::BertClassifier);
  CHECK(classifier.options().num_labels == 4);
  auto from = mlm.module()->named_parameters();
  int64_t copied = 0;  // the encoder's; the pooler (which the masked LM has not) and the classifier stay new
  for (const auto& item : classifier.module()->named_parameters())
    if (const auto* t = from.find(item.key())) {
      CHECK(at::equal(item.value(), *t));
      ++copied;
    }
  CHECK(copied == static_cast<int64_t>(mlm.as<BertForMaskedLM>()->bert->parameters().size()));
  save_model(classifier, dir.path() / "cls.safetensors");
  const auto cls_file = (dir.path() / "cls.safetensors").string();
  CHECK(lathe::test::error_of([&] { load_model(cls_file, ModelKind::BertClassifier, 2); }) ==
        cls_file + ": the classifier has 4 labels, 2 were asked for (model.num_labels)");
  CHECK(lathe::test::error_of([&] { load_model(cls_file, ModelKind::BertMaskedLm); }) ==
        cls_file + ": holds a bert_classifier model, not the model this task needs");
}

TEST_CASE("models: a model built on the meta device draws, a tensor at a time, the values make_model draws",
          "[models]") {
  using lathe::models::ModelKind;
  for (const auto kind : {ModelKind::Gpt, ModelKind::BertMaskedLm, ModelKind::BertClassifier}) {
    for (const std::string family : {"gpt", "llama"}) {
      if (kind != ModelKind::Gpt && family == "llama") continue;
      auto o = lathe::test::tiny(kind == ModelKind::Gpt ? family : "bert");
      if (kind != ModelKind::Gpt) {
        o.pad_token_id = 3;
        o.num_labels = 3;
      }
      INFO(lathe::enum_name(kind) << " " << family);
      torch::manual_seed(21);
      const auto whole = lathe::models::make_model(kind, o);
      torch::manual_seed(21);
      auto deferred = lathe::models::deferred_model(kind, o);
      for (const auto& p : deferred.model.module()->parameters()) CHECK(p.is_meta());
      // The source hands over each parameter once, in the model's order.
      std::vector<std::string> order;
      deferred.values([&](const std::string& name, const at::Tensor&) { order.push_back(name); });
      std::vector<std::string> names;
      for (const auto& item : whole.module()->named_parameters()) names.push_back(item.key());
      CHECK(order == names);
      torch::manual_seed(21);
      const auto built = lathe::models::materialise(deferred);
      auto want = whole.module()->named_parameters();
      for (const auto& item : built.module()->named_parameters()) {
        INFO(item.key());
        CHECK(item.value().equal(want[item.key()]));
      }
      // A BERT's [PAD] row is zero in both.
      if (kind != ModelKind::Gpt)
        CHECK(want["bert.word_embeddings.weight"][3].abs().sum().item<double>() == 0);
    }
  }
}
