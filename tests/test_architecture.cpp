// One definition per concept: model options declared once (and what is driven from that
// declaration), parameter roles, the one corpus reader, the loader without workers.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>

#include "lathe/data/loader.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/roles.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/optimizer.hpp"
#include "support.hpp"

using lathe::models::Arch;
using lathe::models::ModelOptions;
using lathe::nn::Role;
using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {

ModelOptions small_gpt() {
  ModelOptions o;
  o.vocab_size = 40;
  o.n_layer = 2;
  o.n_head = 4;
  o.d_model = 16;
  o.max_seq_len = 8;
  return o;
}

ModelOptions small_llama() {
  auto o = small_gpt();
  o.position = lathe::nn::Position::Rope;
  o.norm = lathe::nn::NormKind::RmsNorm;
  o.activation = lathe::nn::Activation::SwiGlu;
  o.bias = false;
  o.n_kv_head = 2;
  o.tie_embeddings = false;
  return o;
}

std::map<std::string, Role> role_map(const torch::nn::Module& m) {
  std::map<std::string, Role> out;
  for (const auto& p : lathe::nn::roles_of(m)) out[p.name] = p.role;
  return out;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("roles: every parameter of every model has the role its layer gave it", "[models][roles]") {
  SECTION("GPT-2 style") {
    lathe::models::Gpt gpt(small_gpt());
    const auto roles = role_map(*gpt);
    CHECK(roles.size() == gpt->named_parameters().size());
    CHECK(roles.at("wte.weight") == Role::Embedding);
    CHECK(roles.at("wpe.weight") == Role::Embedding);
    CHECK(roles.at("blocks.0.attn.qkv.weight") == Role::HeadBlock);
    CHECK(roles.at("blocks.0.attn.qkv.bias") == Role::Bias);
    CHECK(roles.at("blocks.1.attn.proj.weight") == Role::ResidualProjection);
    CHECK(roles.at("blocks.1.mlp.fc.weight") == Role::NeuronBlock);
    CHECK(roles.at("blocks.1.mlp.proj.weight") == Role::ResidualProjection);
    CHECK(roles.at("blocks.0.ln_1.weight") == Role::Norm);
    CHECK(roles.at("ln_f.bias") == Role::Bias);
  }
  SECTION("Llama style: untied output head, no biases") {
    lathe::models::Gpt gpt(small_llama());
    const auto roles = role_map(*gpt);
    CHECK(roles.size() == gpt->named_parameters().size());
    CHECK(roles.at("lm_head.weight") == Role::OutputHead);
    CHECK(roles.count("blocks.0.attn.qkv.bias") == 0);
    CHECK(roles.count("wpe.weight") == 0);
  }
  SECTION("BERT heads") {
    auto o = ModelOptions::bert_defaults();
    o.vocab_size = 40;
    o.n_layer = 1;
    o.n_head = 2;
    o.d_model = 8;
    o.max_seq_len = 8;
    lathe::models::BertForMaskedLM mlm(o);
    auto roles = role_map(*mlm);
    CHECK(roles.size() == mlm->named_parameters().size());
    CHECK(roles.at("mlm_bias") == Role::Bias);
    CHECK(roles.at("mlm_dense.weight") == Role::Matrix);
    CHECK(roles.at("bert.token_type_embeddings.weight") == Role::Embedding);
    lathe::models::BertForSequenceClassification cls(o);
    roles = role_map(*cls);
    CHECK(roles.size() == cls->named_parameters().size());
    CHECK(roles.at("classifier.weight") == Role::OutputHead);
    CHECK(roles.at("bert.pooler.weight") == Role::Matrix);
  }
  SECTION("a parameter registered without a role is refused by name") {
    struct Bare : torch::nn::Module {
      Bare() { register_parameter("stray", torch::zeros({2})); }
    };
    Bare bare;
    CHECK(message_of([&] { lathe::nn::roles_of(bare); }) == "parameter 'stray' was registered without a role");
  }
}

TEST_CASE("roles: parameters are selected by role or by path pattern", "[models][roles]") {
  lathe::models::Gpt gpt(small_llama());
  auto names = [&](const std::vector<std::string>& patterns) {
    std::vector<std::string> out;
    for (const auto& p : lathe::nn::roles_of(*gpt))
      if (lathe::nn::selected(p, patterns)) out.push_back(p.name);
    return out;
  };
  CHECK(names({"embedding", "output_head"}) == std::vector<std::string>{"wte.weight", "lm_head.weight"});
  CHECK(names({"lm_head"}) == std::vector<std::string>{"lm_head.weight"});
  CHECK(names({"blocks.1.mlp"}) == std::vector<std::string>{"blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight"});
  CHECK(names({"blocks.*.attn.qkv"}) ==
        std::vector<std::string>{"blocks.0.attn.qkv.weight", "blocks.1.attn.qkv.weight"});
  CHECK(names({"lm_hea"}).empty());
  CHECK(names({}).empty());
}

TEST_CASE("roles: decay groups and initialisation follow the roles", "[models][roles]") {
  lathe::models::Gpt gpt(small_llama());
  lathe::recipe::OptimConfig oc;
  lathe::train::Optimizer opt(*gpt, oc);
  std::set<std::string> decayed;
  for (const auto& n : opt.decayed_names()) decayed.insert(n);
  for (const auto& p : lathe::nn::roles_of(*gpt)) {
    INFO(p.name);
    CHECK(decayed.count(p.name) == (lathe::nn::is_matrix(p.role) ? 1u : 0u));
    if (p.role == Role::Norm) CHECK(at::all(p.tensor == 1).item<bool>());
  }
  // Residual projections start narrower: std / sqrt(2 * n_layer).
  const auto proj = gpt->named_parameters()["blocks.0.mlp.proj.weight"].std().item<double>();
  const auto fc = gpt->named_parameters()["blocks.0.mlp.fc.weight"].std().item<double>();
  CHECK(proj < 0.8 * fc);
}

TEST_CASE("options: one validation, the same wording for recipes, models and config.json", "[models][recipe]") {
  auto o = small_gpt();
  o.n_head = 3;
  const auto problems = o.problems(Arch::Gpt, /*complete=*/true);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].keys == std::vector<std::string>{"n_head", "d_model"});
  CHECK(problems[0].message == "n_head (3) must divide d_model (16)");
  CHECK(message_of([&] { lathe::models::Gpt m(o); }) == "gpt: n_head (3) must divide d_model (16)");
  CHECK(message_of([&] {
          lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {n_layer: 1, n_head: 3, d_model: 16}\n", "r.yaml");
        }).find("r.yaml:2:29: model.n_head: n_head (3) must divide d_model (16)") != std::string::npos);
  // Ranges are declared with the option and checked for models too.
  o = small_gpt();
  o.dropout = 1.5;
  CHECK(message_of([&] { lathe::models::Gpt m(o); }) == "gpt: dropout must be in [0, 1), got 1.5");
  // A rule of one architecture: SwiGLU is refused for BERT in the recipe as in the model.
  CHECK(message_of([&] {
          lathe::recipe::parse_recipe("pipeline: [train]\nmodel: {arch: bert, activation: swiglu}\ntrain: {task: masked_lm}\n",
                                      "r.yaml");
        }).find("model.activation: swiglu is not a BERT activation") != std::string::npos);
}

TEST_CASE("options: the model file stores every declared option and reads them back", "[models]") {
  TempDir dir;
  auto o = small_llama();
  o.rope_theta = 5e5;
  o.norm_eps = 1e-6;
  o.d_ff = 24;
  auto m = lathe::models::make_model(lathe::models::ModelKind::Gpt, o);
  lathe::models::save_model(m, dir.path() / "model.safetensors");
  auto back = lathe::models::load_model(dir.path() / "model.safetensors");
  CHECK(lathe::models::architecture_differences(Arch::Gpt, back.options(), o).empty());
  CHECK(back.options().rope_theta == 5e5);
  CHECK(back.options().d_ff == 24);
  // Derived values are compared, not spellings: d_ff 0 is 4 * d_model.
  auto a = small_gpt(), b = small_gpt();
  b.d_ff = 4 * b.d_model;
  CHECK(lathe::models::architecture_differences(Arch::Gpt, a, b).empty());
  b.n_layer = 3;
  CHECK(lathe::models::architecture_differences(Arch::Gpt, a, b) ==
        std::vector<std::string>{"model.n_layer: 2 in the checkpoint, 3 in the recipe"});
}

TEST_CASE("options: Hugging Face config.json is written and read through the same declarations", "[models]") {
  TempDir dir;
  auto o = small_llama();
  o.rope_theta = 5e5;
  lathe::models::Gpt gpt(o);
  lathe::models::save_hf(gpt, dir.path() / "hf");
  const auto config = nlohmann::json::parse(std::ifstream(dir.path() / "hf/config.json"));
  CHECK(config["hidden_size"] == 16);
  CHECK(config["num_key_value_heads"] == 2);
  CHECK(config["intermediate_size"] == 64);
  CHECK(config["rope_theta"] == 5e5);
  const auto read = lathe::models::read_hf_gpt_config(dir.path() / "hf");
  CHECK(lathe::models::architecture_differences(Arch::Gpt, read, o).empty());
}

TEST_CASE("corpus: the tokenizer trains on what the data stage reads (data.format)", "[tokenizer][data]") {
  // JSON lines in a .txt file, read as JSONL because the recipe says so: the tokenizer learns
  // the texts, never the JSON around them.
  TempDir dir;
  std::string jsonl, plain;
  for (int i = 0; i < 200; ++i) {
    const std::string text = "the quick brown fox " + std::to_string(i % 7) + " jumps over the lazy dog";
    jsonl += "{\"body\": \"" + text + "\"}\n";
    plain += text + "\n\n";
  }
  const auto as_json = dir.write("corpus.txt", jsonl);
  const auto as_text = dir.write("plain.txt", plain);
  auto recipe = [&](const fs::path& corpus, const std::string& out, const std::string& format) {
    return lathe::recipe::parse_recipe(
        "pipeline: [tokenizer]\nrun: {out_dir: " + (dir.path() / out).string() + "}\n" +
            "tokenizer: {vocab_size: 300, min_frequency: 1}\ndata: {train_files: [" + corpus.string() +
            "], format: " + format + ", jsonl_field: body}\n",
        "corpus.yaml");
  };
  const auto a = recipe(as_json, "a", "jsonl"), b = recipe(as_text, "b", "text");
  lathe::pipeline::run_tokenizer_stage(a, false);
  lathe::pipeline::run_tokenizer_stage(b, false);
  auto vocab = [](const lathe::recipe::Recipe& r) {
    return nlohmann::json::parse(std::ifstream(lathe::recipe::tokenizer_path(r)))["model"]["vocab"];
  };
  CHECK(vocab(a) == vocab(b));
  CHECK(!vocab(a).contains("body"));
}

TEST_CASE("loader: zero workers build each batch on the calling thread, in order", "[data]") {
  std::vector<std::thread::id> built_on;
  lathe::data::PrefetchLoader<int> loader(
      [&](uint64_t step) {
        built_on.push_back(std::this_thread::get_id());
        return static_cast<int>(step * 10);
      },
      /*workers=*/0, /*prefetch=*/4, /*first_step=*/3);
  CHECK(loader.workers() == 0);
  CHECK(loader.next() == 30);
  CHECK(loader.next() == 40);
  CHECK(built_on == std::vector<std::thread::id>{std::this_thread::get_id(), std::this_thread::get_id()});
  lathe::data::PrefetchLoader<int> threaded([](uint64_t step) { return static_cast<int>(step); }, 2, 2);
  CHECK(threaded.workers() == 2);
  CHECK(threaded.next() == 0);
}

TEST_CASE("recipe: train.resume is none, auto or an existing checkpoint directory", "[recipe]") {
  auto problem = [](const std::string& value) {
    return message_of([&] { lathe::recipe::parse_recipe("pipeline: [train]\ntrain: {resume: " + value + "}\n", "r.yaml"); });
  };
  CHECK(problem("auto") == "no error");
  CHECK(problem("none") == "no error");
  CHECK(problem("atuo").find("r.yaml:2:17: train.resume: must be none, auto or an existing checkpoint directory, got "
                             "'atuo' (did you mean 'auto'?)") != std::string::npos);
  TempDir dir;
  CHECK(problem(dir.path().string()) == "no error");
}

TEST_CASE("options: the compile-time option list is visit's, as the recipe binds it", "[models][recipe]") {
  // The consumers' per-option tables (src/models/hf.cpp, src/export/onnx.cpp) are checked at
  // compile time against model_option_keys(); here that list against the keys the recipe's
  // model: section really binds through visit.
  std::vector<std::string> bound;
  for (const auto& k : lathe::recipe::recipe_keys())
    if (k.key.starts_with("model.") && k.key != "model.arch" && k.key != "model.preset") bound.push_back(k.key.substr(6));
  std::vector<std::string> declared;
  for (auto k : lathe::models::model_option_keys())
    // pad_token_id is taken from the tokenizer, pooler from the checkpoint: not recipe keys.
    if (k != "pad_token_id" && k != "pooler") declared.emplace_back(k);
  CHECK(declared == bound);
  CHECK(lathe::models::kModelOptionCount == declared.size() + 2);
  lathe::models::ModelOptions o;
  o.norm = lathe::nn::NormKind::RmsNorm;
  o.n_kv_head = 3;
  CHECK(lathe::models::option_value(o, "norm") == lathe::enum_name(lathe::nn::NormKind::RmsNorm));  // as recipes spell it
  CHECK(lathe::models::option_value(o, "n_kv_head") == "3");
  CHECK(lathe::models::option_value(o, "bias") == "true");
  CHECK(lathe::models::option_value(o, "nonexistent").empty());
}
