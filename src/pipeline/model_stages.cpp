// The train, eval and generate stages.

#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/trainer.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

int64_t checkpoint_step(const fs::path& dir) {
  std::ifstream in(dir / "meta.json");
  auto meta = json::parse(in, nullptr, false);
  return meta.is_object() ? meta.value("step", int64_t{-1}) : -1;
}

json read_json_or_null(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  auto j = json::parse(in, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}

/// Model path for eval/generate: the recipe's choice, else the newest checkpoint.
fs::path chosen_checkpoint(const recipe::Recipe& r, const std::string& configured) {
  return configured.empty() ? train::newest_checkpoint(r) : fs::path(configured);
}

}  // namespace

StageResult run_train_stage(const recipe::Recipe& r, bool force, const ConsoleOptions& console) {
  const auto root = recipe::checkpoint_dir(r);
  auto existing = train::list_checkpoints(root);
  recipe::Recipe run = r;
  if (!existing.empty()) {
    if (force) {
      fs::remove_all(root);
    } else {
      const int64_t step = checkpoint_step(existing.back());
      if (step >= r.train.max_steps)
        return {true, fmt::format("{} reached step {} of {}", existing.back().string(), step, r.train.max_steps)};
      if (run.train.resume == "none") run.train.resume = "auto";
    }
  }
  train::Trainer trainer(run, {console.out, console.is_tty, /*handle_signals=*/true});
  const auto rep = trainer.run();
  std::string val;
  for (const auto& [k, v] : rep.val) val += fmt::format(", val {} {:.4f}", k, v);
  return {false, fmt::format("{} at step {}{} (train loss {:.4f}{}; {:.0f} tokens/s over {:.1f} s) -> {}",
                             rep.interrupted ? "interrupted" : "trained", rep.steps,
                             rep.start_step ? fmt::format(" (resumed at {})", rep.start_step) : "", rep.train_loss,
                             val, rep.tokens_per_s, rep.seconds, rep.checkpoint.string())};
}

StageResult run_eval_stage(const recipe::Recipe& r, bool force) {
  const auto ckpt = chosen_checkpoint(r, r.eval.checkpoint);
  const auto out = fs::path(r.run.out_dir) / "eval.json";
  const auto previous = read_json_or_null(out);
  if (!force && previous.is_object() && previous.value("checkpoint", "") == ckpt.string() &&
      previous.value("split", "") == recipe::enum_name(r.eval.split))
    return {true, fmt::format("{} describes {}", out.string(), ckpt.string())};
  const auto metrics = train::evaluate_checkpoint(r, ckpt);
  json j = {{"checkpoint", ckpt.string()}, {"split", recipe::enum_name(r.eval.split)}, {"metrics", metrics}};
  io::write_file_atomic(out, j.dump(2) + "\n");
  std::string text;
  for (const auto& [k, v] : metrics) text += fmt::format("{}{} {:.4f}", text.empty() ? "" : ", ", k, v);
  return {false, fmt::format("{} on {}: {} -> {}", ckpt.filename().string(), recipe::enum_name(r.eval.split), text,
                             out.string())};
}

std::vector<Sample> generate_samples(const GenerateRequest& req, const std::function<void(const std::string&)>& on_text) {
  auto loaded = models::load_model(req.model, models::ModelKind::Gpt);
  auto tok = tokenizer::load_tokenizer(req.tokenizer);
  if (tok->vocab_size() > loaded.gpt->options.vocab_size)
    throw Error(fmt::format("vocabulary mismatch: {} has {} tokens, the model {} has {} embedding rows",
                            req.tokenizer.string(), tok->vocab_size(), req.model.string(),
                            loaded.gpt->options.vocab_size));
  loaded.gpt->to(train::resolve_device(req.device));
  int32_t eos = tok->token_to_id("<|endoftext|>");
  if (eos < 0) eos = tok->token_to_id("[SEP]");
  auto sampling = req.sampling;
  if (eos >= 0) sampling.stop_tokens.push_back(eos);

  std::vector<Sample> out;
  for (std::size_t index = 0; index < req.prompts.size(); ++index) {
    const auto& prompt = req.prompts[index];
    sampling.seed = req.sampling.seed + index;  // each prompt its own stream
    auto ids32 = tok->encode(prompt);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (ids.empty()) {
      if (eos < 0) throw Error("an empty prompt needs an end-of-text token (<|endoftext|> or [SEP]) in the tokenizer");
      ids.push_back(eos);
    }
    Sample s;
    s.prompt = prompt;
    std::vector<int32_t> generated;
    std::size_t shown = 0;
    bool stopped = false;
    auto g = models::generate(loaded.gpt, ids, sampling, [&](int64_t id) {
      generated.push_back(static_cast<int32_t>(id));
      std::string text = tok->decode(generated);
      for (const auto& stop : req.stop) {
        if (auto pos = text.find(stop); !stop.empty() && pos != std::string::npos) {
          text.resize(pos);
          stopped = true;
        }
      }
      // Only whole characters are shown: hold back a trailing partial UTF-8 sequence.
      std::size_t complete = text.size();
      while (complete > 0 && (static_cast<unsigned char>(text[complete - 1]) & 0xC0) == 0x80) --complete;
      if (complete > 0 && static_cast<unsigned char>(text[complete - 1]) >= 0xC0) --complete;
      if (stopped) complete = text.size();
      if (on_text && complete > shown) on_text(text.substr(shown, complete - shown));
      shown = std::max(shown, complete);
      s.text = text;
      return !stopped;
    });
    s.tokens = static_cast<int64_t>(g.tokens.size());
    s.finish_reason = stopped ? "stop_string" : g.finish_reason;
    if (on_text && s.text.size() > shown) on_text(s.text.substr(shown));
    out.push_back(std::move(s));
  }
  return out;
}

StageResult run_generate_stage(const recipe::Recipe& r, bool force, std::ostream* console) {
  const auto ckpt = train::newest_checkpoint(r);
  const auto path = fs::path(r.run.out_dir) / "samples.jsonl";
  if (!force && fs::exists(path)) {
    std::ifstream in(path);
    std::string first;
    std::getline(in, first);
    auto j = json::parse(first, nullptr, false);
    if (j.is_object() && j.value("checkpoint", "") == ckpt.string())
      return {true, fmt::format("{} holds samples of {}", path.string(), ckpt.string())};
  }
  GenerateRequest req;
  req.model = ckpt;
  req.tokenizer = recipe::tokenizer_path(r);
  req.prompts = r.generate.prompts;
  req.sampling.max_new_tokens = r.generate.max_new_tokens;
  req.sampling.temperature = r.generate.temperature;
  req.sampling.top_k = r.generate.top_k;
  req.sampling.top_p = r.generate.top_p;
  req.sampling.seed = static_cast<uint64_t>(r.run.seed);
  req.stop = r.generate.stop;
  req.device = r.run.device;
  auto samples = generate_samples(req);
  std::string lines;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    if (console)
      *console << fmt::format("--- sample {} of {} ({} tokens, {})\n{}{}\n", i + 1, samples.size(), s.tokens,
                              s.finish_reason, s.prompt, s.text);
    lines += json({{"checkpoint", ckpt.string()},
                   {"prompt", s.prompt},
                   {"text", s.text},
                   {"tokens", s.tokens},
                   {"finish_reason", s.finish_reason}})
                 .dump(-1, ' ', false, json::error_handler_t::replace) +
             "\n";
  }
  io::write_file_atomic(path, lines);
  return {false, fmt::format("{} sample(s) from {} -> {}", samples.size(), ckpt.filename().string(), path.string())};
}

}  // namespace lathe::pipeline
