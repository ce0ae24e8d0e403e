// Supervised fine-tuning: packed rows against the same examples one at a time, and the examples
// read from JSONL against transformers' own chat templates and assistant masks.

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "lathe/data/sft.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/store.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/train/task.hpp"
#include "chat_fixture.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using lathe::data::SftExample;
using lathe::test::ChatFixture;
using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {

/// Largest |difference| between the packed and unpacked loss and gradients, float32: the same
/// sums in another order, attention over fewer (masked) keys.
constexpr double kPackTol = 2e-5;

std::vector<SftExample> random_examples(int n, int64_t max_len, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<SftExample> out;
  for (int i = 0; i < n; ++i) {
    SftExample e;
    const auto len = static_cast<int64_t>(2 + rng() % static_cast<uint64_t>(max_len - 1));
    const auto prompt = static_cast<int64_t>(rng() % static_cast<uint64_t>(len));  // tokens before the answer
    for (int64_t t = 0; t < len; ++t) {
      e.ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
      e.scored.push_back(t > 0 && t >= prompt ? 1 : 0);
    }
    e.scored.back() = 1;  // every example scores something
    out.push_back(std::move(e));
  }
  return out;
}

/// The loss and the gradients of every parameter for `batch`.
std::pair<double, std::vector<at::Tensor>> loss_and_grads(lathe::models::AnyModel& m, const lathe::train::Batch& b) {
  auto loss = lathe::train::task_loss(m, b);
  auto params = m.module()->parameters();
  auto grads = torch::autograd::grad({loss}, params);
  return {loss.item<double>(), grads};
}

}  // namespace

TEST_CASE("sft: a packed batch gives the loss and gradients of its examples unpacked, and of each example alone",
          "[sft][train]") {
  const int64_t T = 16;
  const auto examples = random_examples(11, T, 64, 7);
  std::vector<int64_t> lengths;
  for (const auto& e : examples) lengths.push_back(static_cast<int64_t>(e.ids.size()));
  const auto packed_rows = lathe::data::pack_examples(lengths, T);
  CHECK(packed_rows.size() < examples.size());  // something was packed
  std::vector<std::vector<const SftExample*>> packed, unpacked;
  for (const auto& row : packed_rows) {
    packed.emplace_back();
    for (const auto i : row) packed.back().push_back(&examples[i]);
  }
  for (const auto& e : examples) unpacked.push_back({&e});
  const auto p = lathe::data::collate_sft(packed, T, 0, /*packed=*/true);
  const auto u = lathe::data::collate_sft(unpacked, 0, 0, /*packed=*/false);
  REQUIRE(p.segments.defined());
  CHECK_FALSE(u.segments.defined());
  CHECK(p.tokens == u.tokens);

  // GPT-2 style (learned positions restart), Llama style (rotary), and a windowed model with
  // soft-capped attention (the explicit attention path) and sandwich norms.
  for (const std::string family : {"gpt", "llama", "capped"}) {
    INFO(family);
    auto o = lathe::test::tiny(family == "gpt" ? "gpt" : "llama");
    if (family == "capped") {
      o.sliding_window = 5;
      o.sliding_window_pattern = 2;
      o.attn_softcap = 1.5;
      o.logit_softcap = 2.0;
      o.sandwich_norm = true;
    }
    torch::manual_seed(3);
    auto m = lathe::models::make_model(lathe::models::ModelKind::Gpt, o);
    const auto [packed_loss, packed_grads] =
        loss_and_grads(m, lathe::train::Batch{p.input_ids, p.targets, {}, {}, p.tokens, p.segments});
    const auto [unpacked_loss, unpacked_grads] = loss_and_grads(m, lathe::train::Batch{u.input_ids, u.targets, {}, {}, u.tokens});
    CHECK(std::abs(packed_loss - unpacked_loss) <= kPackTol);
    for (std::size_t i = 0; i < packed_grads.size(); ++i)
      CHECK((packed_grads[i] - unpacked_grads[i]).abs().max().item<double>() <= kPackTol);

    // Each example alone, without padding: the mean over every scored token of the summed losses.
    auto gpt = m.as<lathe::models::Gpt>();
    double sum = 0;
    int64_t count = 0;
    for (const auto& e : examples) {
      const auto n = static_cast<int64_t>(e.ids.size());
      const auto ids = at::tensor(std::vector<int64_t>(e.ids.begin(), e.ids.end())).view({1, n});
      auto logits = gpt(ids).squeeze(0);
      for (int64_t t = 0; t + 1 < n; ++t)
        if (e.scored[t + 1]) {
          sum += at::cross_entropy_loss(logits[t].unsqueeze(0), at::tensor({static_cast<int64_t>(e.ids[t + 1])}))
                     .item<double>();
          ++count;
        }
    }
    CHECK(std::abs(packed_loss - sum / static_cast<double>(count)) <= kPackTol);
    // And packing matters: the same rows without their segments attend across examples.
    const auto [mixed_loss, mixed_grads] = loss_and_grads(m, lathe::train::Batch{p.input_ids, p.targets, {}, {}, p.tokens});
    CHECK(std::abs(mixed_loss - packed_loss) > 10 * kPackTol);
  }
}

TEST_CASE("sft: best-fit decreasing packing fills rows and never splits an example", "[sft]") {
  const std::vector<int64_t> lengths{9, 3, 7, 2, 16, 5, 1, 8, 8, 4};
  const auto rows = lathe::data::pack_examples(lengths, 16);
  std::vector<int> seen(lengths.size(), 0);
  int64_t total = 0;
  for (const auto& row : rows) {
    int64_t used = 0;
    for (const auto i : row) {
      ++seen[i];
      used += lengths[i];
    }
    CHECK(used <= 16);
    total += used;
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
  // 63 tokens: best-fit decreasing needs the 4 rows that are the least possible.
  CHECK(total == 63);
  CHECK(rows.size() == 4);
  CHECK_THROWS_WITH(lathe::data::pack_examples({17}, 16), Catch::Contains("an example of 17 tokens in rows of 16"));
}

namespace {

std::vector<std::vector<int64_t>> json_rows(const nlohmann::json& rows, const char* key) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& r : rows) out.push_back(r[key].get<std::vector<int64_t>>());
  return out;
}

}  // namespace

TEST_CASE("sft: conversations rendered with the tokenizer's chat template give transformers' ids and assistant "
          "masks", "[sft][chat][reference]") {
  ChatFixture f;
  const auto masks_file = f.dir.path() / "masks.json";
  lathe::test::run_reference("sft_reference.py", {"masks", f.dir.path().string(), f.conversations.string(),
                                                  masks_file.string()});
  const auto ref = nlohmann::json::parse(lathe::test::read_file(masks_file));
  const auto want_ids = json_rows(ref, "ids"), want_mask = json_rows(ref, "mask");
  auto tok = lathe::tokenizer::load_tokenizer(f.tokenizer());
  const auto source = lathe::tokenizer::find_chat_template(f.tokenizer());
  REQUIRE(source.has_value());
  const lathe::tokenizer::ChatTemplate marked(*source);
  lathe::data::SftOptions o;
  o.chat_template = &marked;
  o.template_context = lathe::data::chat_template_context(f.tokenizer(), *tok);
  lathe::data::SftStats stats;
  const auto examples = lathe::data::read_sft_examples(f.conversations, *tok, o, stats);
  REQUIRE(examples.size() == want_ids.size());
  CHECK(stats.examples == 50);
  CHECK(stats.truncated == 0);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    INFO("conversation " << i + 1);
    CHECK(std::vector<int64_t>(examples[i].ids.begin(), examples[i].ids.end()) == want_ids[i]);
    std::vector<int64_t> scored(examples[i].scored.begin(), examples[i].scored.end());
    scored[0] = want_mask[i][0];  // the first token is never a target
    CHECK(scored == want_mask[i]);
  }

  // The same template without its {% generation %} blocks: the assistant turns are found by
  // rendering each prefix; a turn then runs to the next message (the newline after <|im_end|>
  // too), so it scores transformers' tokens and one more per assistant turn.
  std::string plain = *source;
  for (const std::string tag : {"{% generation %}", "{% endgeneration %}"})
    for (auto at = plain.find(tag); at != std::string::npos; at = plain.find(tag)) plain.erase(at, tag.size());
  const lathe::tokenizer::ChatTemplate unmarked(plain);
  std::vector<std::string> lines;
  {
    std::ifstream in(f.conversations);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  o.chat_template = &unmarked;
  lathe::data::SftStats plain_stats;
  const auto by_prefix = lathe::data::read_sft_examples(f.conversations, *tok, o, plain_stats);
  REQUIRE(by_prefix.size() == examples.size());
  for (std::size_t i = 0; i < examples.size(); ++i) {
    INFO("conversation " << i + 1);
    CHECK(by_prefix[i].ids == examples[i].ids);
    int64_t extra = 0, turns = 0;
    for (std::size_t t = 0; t < examples[i].scored.size(); ++t) {
      CHECK(by_prefix[i].scored[t] >= examples[i].scored[t]);
      extra += by_prefix[i].scored[t] - examples[i].scored[t];
    }
    const auto row = nlohmann::json::parse(lines[i]);
    for (const auto& m : row["messages"]) turns += m["role"] == "assistant";
    CHECK(extra == turns);
  }

  // loss_on completion: the last assistant turn only; all: every token after the first.
  o.chat_template = &marked;
  o.loss_on = lathe::data::SftLoss::Completion;
  lathe::data::SftStats s2;
  const auto last = lathe::data::read_sft_examples(f.conversations, *tok, o, s2);
  o.loss_on = lathe::data::SftLoss::All;
  lathe::data::SftStats s3;
  const auto all = lathe::data::read_sft_examples(f.conversations, *tok, o, s3);
  CHECK(s2.scored < stats.scored);
  CHECK(s3.scored == s3.tokens - s3.examples);
  // A limit of 24 tokens cuts the long conversations and leaves out those whose first 24 tokens
  // hold no assistant token.
  o.loss_on = lathe::data::SftLoss::Assistant;
  o.max_tokens = 24;
  lathe::data::SftStats s4;
  const auto cut = lathe::data::read_sft_examples(f.conversations, *tok, o, s4);
  CHECK(s4.truncated > 0);
  CHECK(s4.examples + s4.unscored == 50);
  for (const auto& e : cut) CHECK(e.ids.size() <= 24);
}

TEST_CASE("sft: bad examples are refused naming the file and line", "[sft][chat][errors]") {
  ChatFixture f;
  auto tok = lathe::tokenizer::load_tokenizer(f.tokenizer());
  const lathe::tokenizer::ChatTemplate chat(*lathe::tokenizer::find_chat_template(f.tokenizer()));
  lathe::data::SftOptions o;
  o.chat_template = &chat;
  auto refused = [&](const std::string& line, const std::string& says) {
    INFO(line);
    TempDir d;
    const auto file = d.write("bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n" + line + "\n");
    lathe::data::SftStats s;
    const auto msg = lathe::test::error_of([&] { lathe::data::read_sft_examples(file, *tok, o, s); });
    CHECK_THAT(msg, Catch::Contains(file.string() + ":2: ") && Catch::Contains(says));
  };
  refused("not json", "not a JSON object");
  refused("{\"text\": \"a\"}", "expected {\"messages\": [...]} or {\"prompt\"");
  refused("{\"messages\": []}", "\"messages\" must be a non-empty list");
  refused("{\"messages\": [{\"content\": \"x\"}]}", "every message needs a \"role\"");
  refused("{\"prompt\": \"a\", \"completion\": 3}", "needs two strings");
  o.chat_template = nullptr;
  refused("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "a conversation needs a chat template");
}

TEST_CASE("sft: a recipe trains on conversations, packed or not, and the exported model answers a chat prompt as "
          "transformers' generate does", "[sft][pipeline][reference]") {
  ChatFixture f;
  for (const bool packing : {false, true}) {
    INFO("packing " << packing);
    const auto out = f.dir.path() / (packing ? "packed" : "unpacked");
    const auto r = lathe::recipe::parse_recipe(fmt::format(R"(pipeline: [train, eval, export]
run: {{out_dir: {}, seed: 5, device: cpu}}
tokenizer: {{path: {}}}
data: {{train_files: [{}], seq_len: 64, val_fraction: 0.2, packing: {}, num_workers: 1}}
model: {{n_layer: 2, n_head: 2, d_model: 32, max_seq_len: 64}}
optim: {{lr: 3.0e-3}}
schedule: {{warmup_steps: 2}}
train: {{task: sft, max_steps: 30, batch_size: 4, save_every: 30, eval_every: 30}}
eval: {{batches: 4}}
export: {{format: hf}}
)",
                                                           out.string(), f.tokenizer().string(),
                                                           f.conversations.string(), packing),
                                               "sft.yaml");
    std::ostringstream log;
    lathe::pipeline::run_pipeline(r, {}, log);
    INFO(log.str());
    CHECK_THAT(log.str(), Catch::Contains("sft data.train_files: ") && Catch::Contains("of them scored"));
    if (packing) CHECK_THAT(log.str(), Catch::Contains("% real tokens"));
    const auto eval = nlohmann::json::parse(lathe::test::read_file(out / "eval.json"));
    CHECK(eval["metrics"]["loss"].get<double>() < std::log(600.0));

    // lathe generate --chat on the export, and transformers on the same directory and prompt.
    lathe::pipeline::GenerateRequest req;
    req.model = out / "export";
    req.tokenizer = f.tokenizer();
    req.prompts = {"And the LORD said unto Moses"};
    req.chat = true;
    req.sampling.temperature = 0;
    req.sampling.max_new_tokens = 12;
    const auto ours = lathe::pipeline::Generator(req).generate(0);
    const auto theirs = lathe::test::run_python(
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[2]).eval()\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': sys.argv[3]}], add_generation_prompt=True,\n"
        "                              return_tensors='pt', return_dict=True)['input_ids']\n"
        "eos = tok.convert_tokens_to_ids('<|im_end|>')\n"
        "out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,\n"
        "                     eos_token_id=eos, pad_token_id=eos)[0, ids.shape[1]:].tolist()\n"
        "if out and out[-1] == eos: out = out[:-1]\n"
        "sys.stdout.write(tok.decode(out))\n",
        {f.dir.path().string(), (out / "export").string(), req.prompts[0]});
    INFO(theirs.err);
    REQUIRE(theirs.code == 0);
    CHECK(ours.text == theirs.out);
    if (packing) continue;

    // The finished run is not taken for one trained on other examples: a changed key is refused,
    // naming it; --force with a malformed file is refused before the checkpoints are removed.
    auto other = r;
    other.data.packing = true;
    std::ostringstream refused;
    CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(other, {}, refused); }),
               Catch::Contains("finished training on other examples (data.packing: false -> true)") &&
                   Catch::Contains("--force"));
    auto broken = r;
    broken.data.train_files = {f.dir.write("broken.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n").string()};
    lathe::pipeline::RunOptions force;
    force.force = true;
    CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(broken, force, refused); }),
               Catch::Contains("broken.jsonl:2: not a JSON object"));
    CHECK(fs::exists(out / "checkpoints" / "step_00000030" / "model.safetensors"));
  }
}

TEST_CASE("sft: its keys are refused for other tasks, naming the key", "[sft][recipe][errors]") {
  const std::string base = "data: {train_files: [c.txt], seq_len: 32}\nmodel: {n_layer: 1, n_head: 2, d_model: 16, "
                           "max_seq_len: 32}\n";
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(base + "train: {task: causal_lm, loss_on: completion}\n", "r.yaml");
             }),
             Catch::Contains("train.loss_on: train.loss_on chooses the targets of sft examples; train.task is causal_lm"));
  CHECK_THAT(lathe::test::error_of([&] {
               lathe::recipe::parse_recipe(
                   "data: {train_files: [c.txt], seq_len: 32, packing: true}\nmodel: {n_layer: 1, n_head: 2, d_model: "
                   "16, max_seq_len: 32}\n",
                   "r.yaml");
             }),
             Catch::Contains("data.packing: data.packing packs sft examples; train.task is causal_lm"));
  CHECK_NOTHROW(lathe::recipe::parse_recipe(base + "train: {task: sft, loss_on: all}\n", "r.yaml"));

  // The chat template is checked before any stage runs (and by lathe recipe check).
  TempDir dir;
  const auto run = fmt::format("run: {{out_dir: {}}}\n", (dir.path() / "run").string());
  auto bad = lathe::recipe::parse_recipe(
      run + base + "train: {task: sft}\ntokenizer: {chat_template: \"{% for m in messages %}{{ m.content }}\"}\n",
      "r.yaml");
  CHECK_THAT(lathe::pipeline::chat_template_problem(bad), Catch::Contains("tokenizer.chat_template:1"));
  std::ostringstream log;
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_pipeline(bad, {}, log); }),
             Catch::Contains("tokenizer.chat_template:1") && Catch::Contains("(nothing was run)"));
  CHECK_FALSE(fs::exists(dir.path() / "run" / "checkpoints"));
  auto missing = lathe::recipe::parse_recipe(run + base + "train: {task: sft}\ntokenizer: {chat_template: none.jinja}\n",
                                             "r.yaml");
  CHECK_THAT(lathe::pipeline::chat_template_problem(missing), Catch::Contains("cannot read 'none.jinja'"));
  auto chat = lathe::recipe::parse_recipe(run + base + "pipeline: [generate]\ngenerate: {chat: true}\n", "r.yaml");
  CHECK_THAT(lathe::pipeline::chat_template_problem(chat), Catch::Contains("generate.chat: no chat template"));
  // sft on prompt / completion pairs needs none.
  CHECK(lathe::pipeline::chat_template_problem(
            lathe::recipe::parse_recipe(run + base + "train: {task: sft}\n", "r.yaml")) == "");
}
