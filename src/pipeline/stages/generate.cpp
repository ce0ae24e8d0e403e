// The generate stage and the Generator behind it (and behind `lathe generate`).

#include <algorithm>
#include <fstream>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/data/sft.hpp"
#include "lathe/tokenizer/chat_template.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/trainer.hpp"
#include "lathe/train/checkpointer.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/pipeline/provenance.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

std::string chat_template_problem(const recipe::Recipe& r) {
  const bool generates = std::find(r.pipeline.begin(), r.pipeline.end(), recipe::Stage::Generate) != r.pipeline.end();
  const bool chat = generates && r.generate.chat;
  if (!recipe::renders_chats(r.train.task) && !chat) return {};
  try {
    const auto source = train::chat_template_source(r);
    if (source.empty())
      return chat ? "generate.chat: no chat template: the tokenizer has none beside it (chat_template.jinja or "
                    "tokenizer_config.json); set tokenizer.chat_template"
                  : "";  // sft on prompt / completion pairs needs none; a conversation says so
    tokenizer::ChatTemplate parsed(source, r.tokenizer.chat_template.empty() ? "the tokenizer's chat template"
                                                                             : "tokenizer.chat_template");
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

GenerateRequest generate_request(const recipe::Recipe& r) {
  GenerateRequest req;
  req.tokenizer = recipe::tokenizer_path(r);
  req.prompts = r.generate.prompts;
  req.sampling.max_new_tokens = r.generate.max_new_tokens;
  req.sampling.temperature = r.generate.temperature;
  req.sampling.top_k = r.generate.top_k;
  req.sampling.top_p = r.generate.top_p;
  req.sampling.seed = static_cast<uint64_t>(r.run.seed);
  req.stop = r.generate.stop;
  req.device = r.run.device;
  req.dtype = r.generate.dtype;
  req.threads = r.run.threads;
  req.chat = r.generate.chat;
  if (req.chat) req.chat_template = train::chat_template_source(r);
  return req;
}

struct Generator::State {
  GenerateRequest req;
  models::AnyModel loaded;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  models::SamplingOptions sampling;
  int32_t eos = -1;
  std::optional<tokenizer::ChatTemplate> chat;
  nlohmann::ordered_json chat_context;
};

Generator::Generator(const GenerateRequest& req) : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.req = req;
  if (req.threads > 0) at::set_num_threads(static_cast<int>(req.threads));
  // Refused before anything is read (a quantized model, which runs on the CPU, is refused below).
  if (req.dtype == recipe::Precision::Fp16 && !train::resolve_device(req.device).is_cuda())
    throw Error("generate.dtype: fp16 runs on CUDA only (this run is on the " +
                train::resolve_device(req.device).str() + "); use bf16 or fp32");
  {
    // Built in the dtype it runs in. A Hugging Face directory is read a tensor at a time straight
    // into the parameters (no float32 model first, no copy of a shard); lathe's own file is
    // mapped, its weights views of the file where they are stored in that dtype (copied into it
    // otherwise). The guard sets LibTorch's process-wide default dtype while the model is built:
    // nothing else builds tensors meanwhile in this single-threaded start.
    nn::BuildDtypeGuard built_in(recipe::scalar_type(req.dtype));
    const auto read = models::is_hf_model_dir(req.model) ? io::Read::Copy : io::Read::Map;
    s.loaded = adapters::load_model(req.model, models::ModelKind::Gpt, /*num_labels=*/0, read);
  }
  s.tok = tokenizer::load_tokenizer(req.tokenizer);
  if (s.tok->vocab_size() > s.loaded.vocab_size())
    throw Error(fmt::format("vocabulary mismatch: {} has {} tokens, the model {} has {} embedding rows",
                            req.tokenizer.string(), s.tok->vocab_size(), req.model.string(), s.loaded.vocab_size()));
  const auto device = train::model_device(s.loaded, req.device);
  if (req.dtype == recipe::Precision::Fp16 && !device.is_cuda())
    throw Error("generate.dtype: fp16 runs on CUDA only (this run is on the " + device.str() + "); use bf16 or fp32");
  s.loaded.as<models::Gpt>()->to(device, recipe::scalar_type(req.dtype));
  s.eos = s.tok->eos_id();  // tokenizer_config.json's eos_token, else <|endoftext|>, else [SEP]
  if (req.chat) {
    auto source = req.chat_template.empty() ? tokenizer::find_chat_template(req.tokenizer).value_or("") : req.chat_template;
    if (source.empty())
      throw Error("chat: no chat template beside " + req.tokenizer.string() +
                  " (chat_template.jinja, or tokenizer_config.json's chat_template); give one with tokenizer.chat_template");
    s.chat.emplace(std::move(source), req.chat_template.empty() ? "the tokenizer's chat template" : "tokenizer.chat_template");
    s.chat_context = data::chat_template_context(req.tokenizer, *s.tok);
  }
  s.sampling = req.sampling;
  if (s.eos >= 0) s.sampling.stop_tokens.push_back(s.eos);
  s.sampling.vocab_limit = s.tok->vocab_size();
}

Generator::~Generator() = default;

std::size_t Generator::prompts() const { return state_->req.prompts.size(); }

namespace {

/// One continuation's text as its tokens arrive: decoded, cut at the first stop string, and
/// the part that may be shown so far (whole UTF-8 characters only).
struct RowText {
  RowText(const tokenizer::Tokenizer& t, const std::vector<std::string>& s) : tok(t), stops(s) {}
  const tokenizer::Tokenizer& tok;
  const std::vector<std::string>& stops;
  std::vector<int32_t> generated;
  std::string text;
  std::size_t shown = 0;
  bool stopped = false;

  /// Takes a token; returns the text that became showable.
  std::string add(int64_t id) {
    generated.push_back(static_cast<int32_t>(id));
    text = tok.decode(generated);
    for (const auto& stop : stops) {
      if (auto pos = text.find(stop); !stop.empty() && pos != std::string::npos) {
        text.resize(pos);
        stopped = true;
      }
    }
    // Hold back a trailing partial UTF-8 sequence.
    std::size_t complete = text.size();
    while (complete > 0 && (static_cast<unsigned char>(text[complete - 1]) & 0xC0) == 0x80) --complete;
    if (complete > 0 && static_cast<unsigned char>(text[complete - 1]) >= 0xC0) --complete;
    if (stopped) complete = text.size();
    std::string piece = complete > shown ? text.substr(shown, complete - shown) : std::string();
    shown = std::max(shown, complete);
    return piece;
  }
  /// What is left to show at the end.
  std::string rest() const { return text.size() > shown ? text.substr(shown) : std::string(); }
};

}  // namespace

std::vector<int64_t> Generator::prompt_ids(std::size_t index) const {
  const auto& st = *state_;
  auto text = st.req.prompts.at(index);
  if (st.chat) {
    auto context = st.chat_context;
    context["messages"] = nlohmann::ordered_json::array({{{"role", "user"}, {"content", text}}});
    context["add_generation_prompt"] = true;
    text = st.chat->render(context).text;
  }
  auto ids32 = st.tok->encode(text);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  if (ids.empty()) {
    if (st.eos < 0) throw Error("an empty prompt needs an end-of-text token (<|endoftext|> or [SEP]) in the tokenizer");
    ids.push_back(st.eos);
  }
  return ids;
}

Sample Generator::generate(std::size_t index, const std::function<void(const std::string&)>& on_text) {
  auto& st = *state_;
  auto sampling = st.sampling;
  sampling.seed = st.req.sampling.seed + index;  // each prompt its own stream
  RowText row(*st.tok, st.req.stop);
  auto gpt = st.loaded.as<models::Gpt>();
  auto g = models::generate(gpt, prompt_ids(index), sampling, [&](int64_t id) {
    const auto piece = row.add(id);
    if (on_text && !piece.empty()) on_text(piece);
    return !row.stopped;
  });
  if (on_text && !row.rest().empty()) on_text(row.rest());
  return {st.req.prompts[index], row.text, static_cast<int64_t>(g.tokens.size()),
          row.stopped ? "stop_string" : g.finish_reason};
}

std::vector<Sample> Generator::generate_all() {
  auto& st = *state_;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<RowText> rows;
  for (std::size_t i = 0; i < st.req.prompts.size(); ++i) {
    prompts.push_back(prompt_ids(i));
    rows.emplace_back(*st.tok, st.req.stop);
  }
  // Row i samples with seed + i, as generate(i) does.
  auto gpt = st.loaded.as<models::Gpt>();
  const auto gens = models::generate_batch(gpt, prompts, st.sampling, [&](std::size_t i, int64_t id) {
    rows[i].add(id);
    return !rows[i].stopped;
  });
  std::vector<Sample> out;
  for (std::size_t i = 0; i < gens.size(); ++i)
    out.push_back({st.req.prompts[i], rows[i].text, static_cast<int64_t>(gens[i].tokens.size()),
                   rows[i].stopped ? "stop_string" : gens[i].finish_reason});
  return out;
}

std::vector<Sample> generate_samples(const GenerateRequest& req) { return Generator(req).generate_all(); }

StageResult run_generate_stage(const recipe::Recipe& r, bool force, std::ostream* console) {
  RunLock lock(r);
  const auto ckpt = source_model(r, r.generate.source, recipe::Stage::Generate);
  const auto path = fs::path(r.run.out_dir) / "samples.jsonl";
  const MadeFrom made_from = stage_record(r, recipe::Stage::Generate, ckpt);
  const auto fresh = freshness(force, path, read_stage_record(r.run.out_dir, "generate"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} holds samples of {}", path.string(), ckpt.string())};
  check_not_input(r, {path});
  io::claim(path);
  GenerateRequest req = generate_request(r);
  req.model = ckpt;
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
  write_stage_record(r.run.out_dir, "generate", made_from);
  return {false, fmt::format("{}{} sample(s) from {} -> {}", fresh.why(), samples.size(), ckpt.filename().string(),
                             path.string())};
}

}  // namespace lathe::pipeline
