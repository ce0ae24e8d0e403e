// Direct preference optimisation: the loss and rewards against trl's own DPOTrainer loss on the
// same log-probabilities, preference pairs read from JSONL, and short runs (with and without LoRA)
// that raise the reward accuracy on held-out pairs.

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include <ATen/ATen.h>

#include "chat_fixture.hpp"
#include "lathe/data/sft.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/task.hpp"
#include "support.hpp"

using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

/// Pairs whose chosen completion always ends a verse with " Amen." and the rejected one with
/// " Selah.": a preference a small model learns from a few steps and shows on prompts it never saw.
/// Every third pair is a chat (messages), the others plain strings.
fs::path write_pairs(const TempDir& dir, int n) {
  std::ifstream in(lathe::test::source_dir() / "data/kjv/kjv.txt");
  std::string out, line;
  for (int i = 0; i < n && std::getline(in, line);) {
    if (line.size() < 20) continue;
    const auto prompt = line.substr(0, 60);
    nlohmann::json row;
    if (i % 3 == 0) {
      row["prompt"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
      row["chosen"] = nlohmann::json::array({{{"role", "assistant"}, {"content", "Amen."}}});
      row["rejected"] = nlohmann::json::array({{{"role", "assistant"}, {"content", "Selah."}}});
    } else {
      row = {{"prompt", prompt}, {"chosen", " Amen."}, {"rejected", " Selah."}};
    }
    out += row.dump() + "\n";
    ++i;
  }
  return dir.write("pairs.jsonl", out);
}

}  // namespace

TEST_CASE("dpo: the loss and rewards equal trl's on the same log-probabilities", "[dpo][reference]") {
  const double ls = GENERATE(0.0, 0.2);
  INFO("label smoothing " << ls);
  TempDir dir;
  at::manual_seed(7);
  const int64_t n = 9;
  const auto logps = -at::rand({2 * n}, at::kDouble) * 40.0;
  const auto reference = logps.view({2, n}).t() + at::randn({n, 2}, at::kDouble) * 3.0;
  lathe::io::save_safetensors(dir.path() / "in.safetensors",
                              {{"logps", logps.contiguous()}, {"reference", reference.contiguous()}});
  const double beta = 0.3;
  lathe::test::run_reference("dpo_reference.py", {"loss", (dir.path() / "in.safetensors").string(),
                                                  (dir.path() / "out.safetensors").string(), fmt::format("{}", beta),
                                                  fmt::format("{}", ls)});
  const auto theirs = lathe::io::load_safetensors(dir.path() / "out.safetensors");
  const auto ours = lathe::train::preference_terms(logps, reference, beta, ls);
  CHECK((ours.loss - theirs.at("loss")).abs().max().item<double>() <= 1e-12);
  CHECK((ours.chosen_rewards - theirs.at("chosen_rewards")).abs().max().item<double>() <= 1e-12);
  CHECK((ours.rejected_rewards - theirs.at("rejected_rewards")).abs().max().item<double>() <= 1e-12);
}

TEST_CASE("dpo: preference pairs score their completions alone, as strings or chats", "[dpo][data]") {
  lathe::test::ChatFixture f;
  TempDir dir;
  const auto tok = lathe::tokenizer::load_tokenizer(f.tokenizer());
  const auto source = lathe::tokenizer::find_chat_template(f.tokenizer());
  REQUIRE(source);
  const lathe::tokenizer::ChatTemplate chat(*source, "the tokenizer's chat template");
  lathe::data::SftOptions o;
  o.loss_on = lathe::data::SftLoss::Completion;
  o.chat_template = &chat;
  o.template_context = lathe::data::chat_template_context(f.tokenizer(), *tok);
  o.eos_id = tok->eos_id();
  const auto file = dir.write("p.jsonl", R"({"prompt": "In the beginning", "chosen": " God", "rejected": " light"}
{"prompt": [{"role": "user", "content": "Who?"}], "chosen": [{"role": "assistant", "content": "Moses"}], "rejected": [{"role": "assistant", "content": "Aaron and Hur"}]}
{"prompt": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Aaron"}, {"role": "user", "content": "And?"}], "chosen": [{"role": "assistant", "content": "Hur"}, {"role": "user", "content": "More?"}, {"role": "assistant", "content": "Joshua"}], "rejected": [{"role": "assistant", "content": "Pharaoh"}]}
)");
  lathe::data::SftStats stats;
  const auto pairs = lathe::data::read_preference_pairs(file, *tok, o, stats);
  REQUIRE(pairs.size() == 3);
  CHECK(stats.examples == 3);
  // The string pair: the prompt's tokens, then the completion's and the eos token, scored.
  const auto prompt = tok->encode("In the beginning");
  const auto& c = pairs[0].chosen;
  REQUIRE(c.ids.size() > prompt.size());
  CHECK(std::vector<int32_t>(c.ids.begin(), c.ids.begin() + static_cast<std::ptrdiff_t>(prompt.size())) == prompt);
  CHECK(c.ids.back() == tok->eos_id());
  for (std::size_t t = 0; t < c.ids.size(); ++t) CHECK(c.scored[t] == (t >= prompt.size() ? 1 : 0));
  // The chat pair: the rendering of prompt + completion, the assistant turn alone scored, and the
  // same prompt tokens before both completions.
  const auto& cc = pairs[1].chosen;
  const auto& rr = pairs[1].rejected;
  const auto first_c = std::find(cc.scored.begin(), cc.scored.end(), 1) - cc.scored.begin();
  const auto first_r = std::find(rr.scored.begin(), rr.scored.end(), 1) - rr.scored.begin();
  CHECK(first_c == first_r);
  CHECK(std::equal(cc.ids.begin(), cc.ids.begin() + first_c, rr.ids.begin()));
  CHECK(tok->decode(std::vector<int32_t>(cc.ids.begin() + first_c, cc.ids.end())) == "Moses<|im_end|>\n");
  // An assistant turn in the prompt is context; every assistant turn of the completion is scored.
  auto scored_text = [&](const lathe::data::SftExample& e) {
    std::vector<int32_t> ids;
    for (std::size_t t = 0; t < e.ids.size(); ++t)
      if (e.scored[t]) ids.push_back(e.ids[t]);
    return tok->decode(ids);
  };
  CHECK(scored_text(pairs[2].chosen) == "Hur<|im_end|>Joshua<|im_end|>");
  CHECK(scored_text(pairs[2].rejected) == "Pharaoh<|im_end|>");

  // Malformed rows name the line.
  const auto bad = dir.write("bad.jsonl", R"({"prompt": "a", "chosen": "b", "rejected": "c"}
{"prompt": "a", "chosen": "b"}
)");
  CHECK_THAT(lathe::test::error_of([&] { lathe::data::read_preference_pairs(bad, *tok, o, stats); }),
             Catch::Contains("bad.jsonl:2: expected {\"prompt\""));
  const auto mixed = dir.write("mixed.jsonl", R"({"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}], "rejected": "c"})");
  CHECK_THAT(lathe::test::error_of([&] { lathe::data::read_preference_pairs(mixed, *tok, o, stats); }),
             Catch::Contains("mixed.jsonl:1: \"prompt\" and \"chosen\" must both be strings or both lists"));
}

TEST_CASE("dpo: a short run raises the reward accuracy on held-out pairs, with and without LoRA",
          "[dpo][lora][pipeline]") {
  lathe::test::ChatFixture f;
  TempDir dir;
  lathe::test::run_reference("lora_reference.py", {"make", dir.path().string(), "llama", "600"});
  const auto pairs = write_pairs(dir, 90);
  // The LoRA run starts from a PEFT adapter on the base (what an sft run with LoRA leaves): its
  // model, and its reference, is that base with the adapter merged.
  auto config = nlohmann::json::parse(lathe::test::read_file(dir.path() / "adapter" / "adapter_config.json"));
  config["base_model_name_or_path"] = (dir.path() / "base").string();
  dir.write("adapter/adapter_config.json", config.dump());
  for (const bool lora : {true, false}) {
    INFO("lora " << lora);
    const auto out = dir.path() / (lora ? "lora" : "full");
    const auto init = dir.path() / (lora ? "adapter" : "base");
    const auto r = lathe::recipe::parse_recipe(
        fmt::format(R"(pipeline: [train, eval]
run: {{out_dir: {}, seed: 3, device: cpu}}
tokenizer: {{path: {}}}
data: {{train_files: [{}], seq_len: 64, val_fraction: 0.25, num_workers: 1}}
optim: {{lr: {}}}
schedule: {{warmup_steps: 2}}
train: {{task: dpo, dpo_beta: 0.1, max_steps: 16, batch_size: 4, save_every: 16, eval_every: 16, eval_batches: 10,
         init_from: {}}}
adapters: {{kind: {}, rank: 8, alpha: 16}}
eval: {{batches: 10}}
)",
                    out.string(), f.tokenizer().string(), pairs.string(), lora ? "5.0e-3" : "1.0e-3",
                    init.string(), lora ? "lora" : "none"),
        "dpo.yaml");
    std::ostringstream log;
    lathe::pipeline::run_pipeline(r, {}, log);
    INFO(log.str());
    CHECK_THAT(log.str(), Catch::Contains("dpo data.train_files: ") &&
                              Catch::Contains("dpo: the reference log-probabilities of"));
    // Before training the policy is the reference: every reward is 0 and none is the larger.
    const auto before = lathe::train::evaluate_checkpoint(r, init).metrics;
    CHECK(before.at("rewards_accuracy") == 0.0);
    CHECK(before.at("loss") == Approx(std::log(2.0)).epsilon(1e-6));
    const auto eval = nlohmann::json::parse(lathe::test::read_file(out / "eval.json"))["metrics"];
    CHECK(eval["rewards_accuracy"].get<double>() >= 0.9);
    CHECK(eval["rewards_margin"].get<double>() > 0);
    CHECK(eval["loss"].get<double>() < std::log(2.0));
    double val_accuracy = -1, train_margin = -1;
    for (const auto& j : read_jsonl(out / "metrics.jsonl")) {
      if (j.value("split", "") == "val") val_accuracy = j["rewards_accuracy"].get<double>();
      if (j.value("split", "") == "train") train_margin = j["rewards_margin"].get<double>();
    }
    CHECK(val_accuracy == Approx(eval["rewards_accuracy"].get<double>()));
    CHECK(train_margin > 0);  // the training records carry the rewards of their steps too

    // The rewards are measured with train.dpo_beta: another beta makes the eval stage run again
    // (training, finished, is not repeated), every reward scaled by the ratio.
    auto doubled = r;
    doubled.train.dpo_beta = 0.2;
    std::ostringstream again;
    lathe::pipeline::run_pipeline(doubled, {}, again);
    INFO(again.str());
    CHECK_THAT(again.str(), Catch::Contains("stage train: skipped"));
    CHECK_THAT(again.str(), !Catch::Contains("stage eval: skipped"));
    const auto rescored = nlohmann::json::parse(lathe::test::read_file(out / "eval.json"))["metrics"];
    CHECK(rescored["rewards_margin"].get<double>() ==
          Approx(2 * eval["rewards_margin"].get<double>()).epsilon(1e-6));
  }
}

TEST_CASE("dpo: recipes are checked for what dpo cannot do, naming the keys", "[dpo][recipe][errors]") {
  const std::string base = "data: {train_files: [c.txt], seq_len: 32}\nmodel: {n_layer: 1, n_head: 2, d_model: 16, "
                           "max_seq_len: 32}\n";
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(base + "train: {task: dpo}\ndistributed: {strategy: zero1}\n", "r.yaml");
             }),
             Catch::Contains("strategy ddp"));
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(base + "train: {task: dpo, dpo_label_smoothing: 0.5}\n", "r.yaml");
             }),
             Catch::Contains("train.dpo_label_smoothing"));
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe("data: {train_files: [c.txt], seq_len: 32}\nmodel: {n_layer: 1, n_head: 2, "
                                           "d_model: 16, max_seq_len: 32, dropout: 0.1}\ntrain: {task: dpo}\n",
                                           "r.yaml");
             }),
             Catch::Contains("model.dropout: dpo trains without dropout"));
  CHECK_NOTHROW(lathe::recipe::parse_recipe(base + "train: {task: dpo, dpo_beta: 0.5}\n", "r.yaml"));
}
