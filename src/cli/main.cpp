// The `lathe` command: argument parsing and dispatch to lathe_core. No logic lives here.
//
// Exit codes: 0 success; 1 the command failed (invalid recipe, missing file, capability not in
// this build); 2 usage error (unknown command or option, missing argument); 3 interrupted by
// SIGTERM / SIGINT after a checkpoint was saved (the same command resumes).

// --set values may hold commas (lists such as pipeline=[data,train]): never split them.
// A repeated option gives one value per occurrence and no value is ever split: argv strings
// hold no NUL, so a prompt or a stop string may contain newlines and commas.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "lathe/core/build_info.hpp"
#include "lathe/core/console.hpp"
#include "lathe/core/env_info.hpp"
#include "lathe/nn/gemv.hpp"
#include "lathe/core/error.hpp"
#include "lathe/core/denormals.hpp"
#include "lathe/core/host_memory.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/pipeline/registry.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/device.hpp"
#include "lathe/eval/harness.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/task.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/tokenizer/wordpiece.hpp"

#include <chrono>
#include <fstream>
#include <sstream>

namespace {

using lathe::recipe::Recipe;

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kInterrupted = 3;

/// Raised for a command line that cannot be understood; main prints it with the usage line.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Command {
  std::string name;     // "train", "tokenizer encode"
  std::string args;     // positional synopsis, e.g. "RECIPE"
  std::string summary;  // one line for `lathe --help`
  // Adds the command's options; absent for commands without options beyond --help.
  std::function<void(cxxopts::Options&)> options;
  std::function<int(const cxxopts::ParseResult&)> run;
};

std::string usage_line(const Command& c) {
  return fmt::format("usage: lathe {} {}[options]  (lathe {} --help)", c.name, c.args.empty() ? "" : c.args + " ",
                     c.name);
}

// ---------------------------------------------------------------------------------- options

void recipe_options(cxxopts::Options& o) {
  o.add_options()("recipe", "Recipe file (YAML)", cxxopts::value<std::string>())(
      "set", "Override a recipe key, e.g. --set optim.lr=3e-4 (repeatable)",
      cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"recipe"});
}

std::vector<std::string> overrides(const cxxopts::ParseResult& r) {
  return r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
}

std::string required(const cxxopts::ParseResult& r, const std::string& key, const std::string& what) {
  if (!r.count(key)) throw UsageError("missing " + what);
  return r[key].as<std::string>();
}

Recipe load(const cxxopts::ParseResult& r) {
  return lathe::recipe::load_recipe(required(r, "recipe", "RECIPE"), overrides(r));
}


// ---------------------------------------------------------------------------------- commands

int cmd_recipe_check(const cxxopts::ParseResult& r) {
  if (!r.count("files")) throw UsageError("missing FILE");
  int status = kOk;
  for (const auto& file : r["files"].as<std::vector<std::string>>()) {
    try {
      const auto recipe = lathe::recipe::load_recipe(file, overrides(r));
      // What the recipe names besides its keys: the chat template it renders with.
      if (const auto problem = lathe::pipeline::chat_template_problem(recipe); !problem.empty()) {
        std::cerr << file << ": " << problem << "\n";
        status = kFailed;
        continue;
      }
      std::cout << file << ": ok\n";
    } catch (const lathe::recipe::RecipeError& e) {
      std::cerr << e.what() << "\n"
                << fmt::format("{}: {} problem(s)\n", file, e.diagnostics().size());
      status = kFailed;
    }
  }
  return status;
}

int cmd_recipe_show(const cxxopts::ParseResult& r) {
  std::cout << lathe::recipe::to_yaml(load(r));
  return kOk;
}

int cmd_recipe_keys(const cxxopts::ParseResult& r) {
  if (r.count("stages")) {
    std::cout << lathe::pipeline::stage_table_markdown();
    return kOk;
  }
  const auto keys = lathe::recipe::recipe_keys();
  if (r.count("markdown")) {
    std::cout << "| key | type | default | meaning |\n|---|---|---|---|\n";
    auto cell = [](std::string text) {  // a | inside a cell would end it
      for (std::size_t p = 0; (p = text.find('|', p)) != std::string::npos; p += 2) text.replace(p, 1, "\\|");
      return text;
    };
    for (const auto& k : keys)
      std::cout << fmt::format("| `{}` | {} | `{}` | {} |\n", k.key, cell(k.type), cell(k.value), cell(k.doc));
  } else {
    for (const auto& k : keys) std::cout << fmt::format("{:<30} {:<36} {:<22} {}\n", k.key, k.type, k.value, k.doc);
  }
  return kOk;
}

bool stdout_is_tty() { return isatty(fileno(stdout)) != 0; }

/// A stage stopped by SIGTERM / SIGINT after its checkpoint: kInterrupted for one process; 0
/// for the ranks of a data-parallel job, which stopped together after one agreed checkpoint —
/// the clean end of a preempted job that launchers (srun, torchrun) must not count as a failure.
int interrupted_code() { return lathe::dist::detect_world().distributed() ? kOk : kInterrupted; }

int cmd_run(const cxxopts::ParseResult& r) {
  Recipe recipe = load(r);
  lathe::pipeline::RunOptions options;
  options.force = r.count("force") > 0 || recipe.run.force;
  options.dry_run = r.count("dry-run") > 0;
  options.progress = lathe::console_progress();
  options.console_is_tty = stdout_is_tty();
  if (lathe::dist::detect_world().rank == 0) std::cout << "# resolved recipe\n" << lathe::recipe::to_yaml(recipe) << "\n";
  auto report = lathe::pipeline::run_pipeline(recipe, options, std::cout);
  return report.interrupted ? interrupted_code() : kOk;
}

/// A stage's own command (`lathe prune RECIPE`, `lathe data prepare RECIPE`, ...): runs that stage
/// of the recipe alone, as `lathe run` would.
int run_stage_command(lathe::recipe::Stage stage, const Recipe& recipe, const cxxopts::ParseResult& r) {
  const auto result = lathe::pipeline::stage_spec(stage).run(
      {recipe, r.count("force") > 0 || recipe.run.force, {&std::cout, stdout_is_tty()}, lathe::console_progress()});
  if (lathe::dist::detect_world().rank == 0) std::cout << (result.skipped ? "skipped, " : "") << result.summary << "\n";
  return result.interrupted ? interrupted_code() : kOk;
}

int cmd_train(const cxxopts::ParseResult& r) {
  Recipe recipe = load(r);
  if (r.count("resume")) recipe.train.resume = r["resume"].as<std::string>();
  return run_stage_command(lathe::recipe::Stage::Train, recipe, r);
}


/// The table or JSON `lathe eval` prints for tasks run without a recipe.
int print_task_results(const std::vector<lathe::eval::TaskResult>& results, const std::string& format) {
  if (format == "table") {
    std::cout << lathe::eval::results_table(results);
    return kOk;
  }
  nlohmann::json j = nlohmann::json::object();
  for (const auto& t : results) j["tasks"][t.task] = nlohmann::json::parse(t.to_json().dump());
  std::cout << j.dump(2) << "\n";
  return kOk;
}

int cmd_eval(const cxxopts::ParseResult& r) {
  const std::string format = r.count("format") ? r["format"].as<std::string>() : (stdout_is_tty() ? "table" : "json");
  if (format != "json" && format != "table") throw UsageError("--format must be json or table");
  if (!r.count("recipe")) {  // tasks on a model, as lm_eval --model hf --tasks does
    if (!r.count("checkpoint") || !r.count("task"))
      throw UsageError("give a RECIPE, or --checkpoint MODEL with --task FILE");
    lathe::eval::RunOptions options;
    if (r.count("num-fewshot")) options.num_fewshot = r["num-fewshot"].as<int64_t>();
    if (r.count("limit")) options.limit = r["limit"].as<int64_t>();
    const std::filesystem::path model = r["checkpoint"].as<std::string>();
    if (!std::filesystem::exists(model)) throw UsageError("--checkpoint: no model at " + model.string());
    lathe::pipeline::refuse_model_of_failed_gate(model);
    return print_task_results(
        lathe::train::evaluate_task_files(r["checkpoint"].as<std::string>(), r["task"].as<std::vector<std::string>>(),
                                          r.count("tokenizer") ? r["tokenizer"].as<std::string>() : "", options),
        format);
  }
  Recipe recipe = load(r);
  if (r.count("num-fewshot")) recipe.eval.num_fewshot = r["num-fewshot"].as<int64_t>();
  if (r.count("limit")) recipe.eval.limit = r["limit"].as<int64_t>();
  if (r.count("split")) {
    auto split = lathe::recipe::parse_enum<lathe::recipe::Split>(r["split"].as<std::string>());
    if (!split) throw UsageError("--split must be val or train");
    recipe.eval.split = *split;
  }
  // --task: a task of eval.tasks by name, or a task file (added when the recipe does not list it).
  std::vector<std::string> only;
  if (r.count("task"))
    for (const auto& t : r["task"].as<std::vector<std::string>>()) {
      only.push_back(t);
      const bool listed = std::find(recipe.eval.tasks.begin(), recipe.eval.tasks.end(), t) != recipe.eval.tasks.end();
      if (!listed && std::filesystem::is_regular_file(t)) recipe.eval.tasks.push_back(t);
    }
  const auto model = r.count("checkpoint")
                         ? std::filesystem::path(r["checkpoint"].as<std::string>())
                         : lathe::pipeline::source_model(recipe, recipe.eval.source, lathe::recipe::Stage::Eval,
                                                         recipe.eval.checkpoint);
  lathe::pipeline::refuse_model_of_failed_gate(model);
  const auto result = lathe::train::evaluate_checkpoint(recipe, model, only);
  if (format == "json") {
    std::cout << result.to_json().dump(2) << "\n";
    return kOk;
  }
  for (const auto& [k, v] : result.metrics) std::cout << fmt::format("{:<14} {:.4f}\n", k, v);
  std::cout << fmt::format("({} batches of {}, {} targets)\n", result.batches,
                           lathe::recipe::enum_name(recipe.eval.split), result.targets);
  if (!result.tasks.empty()) std::cout << "\n" << lathe::eval::results_table(result.tasks);
  return kOk;
}

/// lathe generate's sampling, stop, dtype and chat flags over what the recipe (if any) set.
void read_generate_flags(const cxxopts::ParseResult& r, const std::optional<Recipe>& recipe,
                         lathe::pipeline::GenerateRequest& req) {
  if (r.count("max-new-tokens")) req.sampling.max_new_tokens = r["max-new-tokens"].as<int64_t>();
  if (r.count("temperature")) req.sampling.temperature = r["temperature"].as<double>();
  if (r.count("top-k")) req.sampling.top_k = r["top-k"].as<int64_t>();
  if (r.count("top-p")) req.sampling.top_p = r["top-p"].as<double>();
  if (r.count("seed")) req.sampling.seed = r["seed"].as<uint64_t>();
  if (r.count("greedy")) req.sampling.temperature = 0;
  if (r.count("chat")) {
    req.chat = true;
    if (recipe) req.chat_template = lathe::train::chat_template_source(*recipe);
  }
  if (r.count("stop")) req.stop = r["stop"].as<std::vector<std::string>>();
  if (r.count("dtype")) {
    auto dtype = lathe::recipe::parse_enum<lathe::recipe::Precision>(r["dtype"].as<std::string>());
    if (!dtype) throw UsageError("--dtype must be fp32, bf16 or fp16");
    req.dtype = *dtype;
  }
}

int cmd_generate(const cxxopts::ParseResult& r) {
  lathe::pipeline::GenerateRequest req;
  std::optional<Recipe> recipe;
  if (r.count("recipe")) recipe = load(r);
  if (recipe) req = lathe::pipeline::generate_request(*recipe);
  if (r.count("model")) req.model = r["model"].as<std::string>();
  else if (recipe)
    req.model = lathe::pipeline::source_model(*recipe, recipe->generate.source, lathe::recipe::Stage::Generate);
  else throw UsageError("give a RECIPE (its newest checkpoint) or --model");
  if (r.count("tokenizer")) req.tokenizer = r["tokenizer"].as<std::string>();
  else if (!recipe) {
    const std::filesystem::path dir = std::filesystem::is_directory(req.model) ? req.model : req.model.parent_path();
    req.tokenizer = dir / "tokenizer.json";
  }
  if (r.count("prompt")) req.prompts = r["prompt"].as<std::vector<std::string>>();
  if (req.prompts.empty()) req.prompts = {""};
  read_generate_flags(r, recipe, req);
  try {
    req.sampling.validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  lathe::pipeline::Generator generator(req);  // loads first: an error is not mixed into a prompt
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (generator.prompts() > 1) {
    // Several prompts run as one batch (one forward per step for all); each is printed whole.
    const auto start = Clock::now();
    const auto samples = generator.generate_all();
    const double took = seconds(start, Clock::now());
    int64_t total = 0;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      std::cout << samples[i].prompt << (req.chat ? "\n" : "") << samples[i].text << "\n"
                << (i + 1 < samples.size() ? "---\n" : "")
                << std::flush;
      std::cerr << fmt::format("[{} tokens, {}]\n", samples[i].tokens, samples[i].finish_reason);
      total += samples[i].tokens;
    }
    std::cerr << fmt::format("batch of {}: {} tokens in {:.2f} s, {:.1f} tokens/s\n", samples.size(), total, took,
                             static_cast<double>(total) / took);
    return kOk;
  }
  for (std::size_t i = 0; i < generator.prompts(); ++i) {
    // The prompt is echoed with the first piece of its continuation: a prompt the model
    // refuses (longer than its context) leaves no text behind on stdout.
    bool echoed = false;
    auto echo = [&] {
      // A chat reply is an answer on its own line, not a continuation of the prompt's text.
      if (!echoed) std::cout << req.prompts[i] << (req.chat ? "\n" : "");
      echoed = true;
    };
    const auto start = Clock::now();
    std::optional<Clock::time_point> first;
    auto sample = generator.generate(i, [&](const std::string& piece) {
      if (!first) first = Clock::now();
      echo();
      std::cout << piece << std::flush;
    });
    const auto end = Clock::now();
    echo();
    std::cout << "\n";
    if (i + 1 < generator.prompts()) std::cout << "---\n";
    // Decode speed: the tokens after the first over the time after the first piece was shown.
    std::string timing;
    if (first && sample.tokens > 1 && end > *first)
      timing = fmt::format(" first text after {:.3f} s, then {:.1f} tokens/s", seconds(start, *first),
                           static_cast<double>(sample.tokens - 1) / seconds(*first, end));
    std::cerr << fmt::format("[{} tokens, {}]{}\n", sample.tokens, sample.finish_reason, timing);
  }
  return kOk;
}

/// The inputs of encode/decode: each named file, or stdin when none is named.
std::vector<std::pair<std::string, std::string>> read_inputs(const cxxopts::ParseResult& r) {
  std::vector<std::pair<std::string, std::string>> inputs;
  auto slurp = [](std::istream& in) {
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  };
  if (!r.count("files")) {
    inputs.emplace_back("<stdin>", slurp(std::cin));
    return inputs;
  }
  for (const auto& f : r["files"].as<std::vector<std::string>>()) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw lathe::Error("cannot read '" + f + "'");
    inputs.emplace_back(f, slurp(in));
  }
  return inputs;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    auto nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

/// --cased keeps a vocab.txt cased (otherwise its vocabulary decides, as for a recipe);
/// --pattern and --special describe a tiktoken file.
lathe::tokenizer::LoadOptions load_options(const cxxopts::ParseResult& r) {
  lathe::tokenizer::LoadOptions o;
  if (r.count("cased")) o.lowercase = false;
  if (r.count("pattern")) o.pattern = r["pattern"].as<std::string>();
  if (r.count("special")) o.special_tokens = r["special"].as<std::vector<std::string>>();
  return o;
}

/// The options that name and describe a tokenizer file (encode and decode).
void add_tokenizer_file_options(cxxopts::Options& o) {
  o.add_options()("tokenizer", "tokenizer.json, vocab.json (merges.txt beside it), vocab.txt or a tiktoken file",
                  cxxopts::value<std::string>())(
      "pattern", "tiktoken file: split pattern (default: by the file's name, e.g. cl100k_base)",
      cxxopts::value<std::string>())("special", "tiktoken file: a special token (repeatable)",
                                     cxxopts::value<std::vector<std::string>>());
}

int cmd_tokenizer_encode(const cxxopts::ParseResult& r) {
  auto tok = lathe::tokenizer::load_tokenizer(required(r, "tokenizer", "--tokenizer FILE"), load_options(r));
  const bool lines = r.count("lines") > 0, offsets = r.count("offsets") > 0, specials = r.count("specials") > 0;
  const int threads = r.count("threads") ? r["threads"].as<int>() : 1;
  std::size_t bytes = 0, count = 0;
  double seconds = 0;
  std::string out;
  for (const auto& [name, text] : read_inputs(r)) {
    std::vector<std::string> texts = lines ? split_lines(text) : std::vector<std::string>{text};
    std::vector<std::vector<int32_t>> ids;
    std::vector<std::vector<lathe::tokenizer::Offset>> spans(texts.size());
    const auto start = std::chrono::steady_clock::now();
    if (offsets) {
      for (std::size_t i = 0; i < texts.size(); ++i) ids.push_back(tok->encode(texts[i], &spans[i]));
    } else if (specials) {
      for (const auto& t : texts) ids.push_back(tok->encode_with_specials(t).ids);
    } else {
      ids = tok->encode_batch(texts, threads);
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bytes += text.size();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      count += ids[i].size();
      for (std::size_t k = 0; k < ids[i].size(); ++k) {
        if (k) out += ' ';
        out += std::to_string(ids[i][k]);
        if (offsets) out += fmt::format(":{}-{}", spans[i][k].first, spans[i][k].second);
      }
      out += '\n';
    }
  }
  std::cout << out;
  if (r.count("stats"))
    std::cerr << fmt::format("encoded {} bytes into {} tokens in {:.3f} s: {:.2f} MB/s, {:.2f} bytes/token\n", bytes,
                             count, seconds, seconds > 0 ? static_cast<double>(bytes) / 1e6 / seconds : 0.0,
                             count ? static_cast<double>(bytes) / static_cast<double>(count) : 0.0);
  return kOk;
}

int cmd_tokenizer_decode(const cxxopts::ParseResult& r) {
  auto tok = lathe::tokenizer::load_tokenizer(required(r, "tokenizer", "--tokenizer FILE"), load_options(r));
  const bool lines = r.count("lines") > 0;
  for (const auto& [name, text] : read_inputs(r)) {
    int lineno = 0;
    for (const auto& line : split_lines(text)) {
      ++lineno;
      std::vector<int32_t> ids;
      std::istringstream in(line);
      for (std::string word; in >> word;) {
        long long id = -1;
        try {
          std::size_t used = 0;
          id = std::stoll(word, &used);
          if (used != word.size()) throw std::invalid_argument(word);
        } catch (const std::exception&) {
          throw lathe::Error(fmt::format("{}:{}: '{}' is not a token id", name, lineno, word));
        }
        if (id < 0 || id >= tok->vocab_size())
          throw lathe::Error(fmt::format("{}:{}: token id {} is outside the vocabulary (0 to {})", name, lineno, word,
                                         tok->vocab_size() - 1));
        ids.push_back(static_cast<int32_t>(id));
      }
      std::cout << tok->decode(ids) << (lines ? "\n" : "");
    }
  }
  return kOk;
}

int cmd_env(const cxxopts::ParseResult&) {
  std::cout << lathe::environment_report();
  std::cout << lathe::environment_line("decoding", lathe::nn::gemv_kernels());
  // The world a training command started here would join, and how its ranks would meet.
  const auto world = lathe::dist::detect_world();
  std::string how = "one process (no launcher variables set)";
  if (world.distributed()) {
    const bool cuda = lathe::train::resolve_device(lathe::recipe::Device::Auto).is_cuda();
    how = fmt::format("{}; distributed.backend auto: {}", world.describe(), cuda ? "nccl" : "mpi");
    how += cuda ? (world.master_addr.empty() ? "; MASTER_ADDR / MASTER_PORT are not set: nccl needs them"
                                             : fmt::format("; rank 0 serves the c10d store at {}:{}",
                                                           world.master_addr, world.master_port))
                : "; rank 0 serves the heartbeat store on a free port and tells the ranks through MPI";
  }
  std::cout << lathe::environment_line("rendezvous", how);
  return kOk;
}

// The options of each command beyond the recipe's (recipe_options).

void run_options(cxxopts::Options& o) {
  o.add_options()("force", "Re-run stages whose outputs already exist")(
      "dry-run", "Validate and print the plan; write nothing");
}

void train_options(cxxopts::Options& o) {
  o.add_options()("resume", "none, auto or a checkpoint directory", cxxopts::value<std::string>())(
      "force", "Start over: remove lathe's checkpoints and metrics of the earlier run first");
}

void eval_options(cxxopts::Options& o) {
  o.add_options()("checkpoint", "Checkpoint directory or model (default: eval.source)", cxxopts::value<std::string>())(
      "split", "val or train (default: eval.split)", cxxopts::value<std::string>())(
      "task", "Run only this task: a task of eval.tasks (its name or file) or another task file; repeatable",
      cxxopts::value<std::vector<std::string>>())(
      "format", "json or table (default: table on a terminal, json otherwise)", cxxopts::value<std::string>())(
      "tokenizer", "Without a recipe: the tokenizer (default: tokenizer.json beside the model)",
      cxxopts::value<std::string>())(
      "num-fewshot", "Few-shot examples per prompt for every task (default: eval.num_fewshot, else each task's)",
      cxxopts::value<int64_t>())(
      "limit", "Documents per task (default: eval.limit, else all)", cxxopts::value<int64_t>());
}

void generate_options(cxxopts::Options& o) {
  o.add_options()("model", "Checkpoint directory, lathe model file or Hugging Face directory",
                  cxxopts::value<std::string>())(
      "tokenizer", "Tokenizer file (default: the recipe's, else tokenizer.json beside the model)",
      cxxopts::value<std::string>())("prompt", "Prompt text (repeatable; default: generate.prompts)",
                                     cxxopts::value<std::vector<std::string>>())(
      "max-new-tokens", "Tokens to generate", cxxopts::value<int64_t>())(
      "temperature", "Sampling temperature (0: greedy)", cxxopts::value<double>())(
      "greedy", "Greedy decoding (temperature 0)")("top-k", "Top-k (0: off)", cxxopts::value<int64_t>())(
      "top-p", "Nucleus probability (1: off)", cxxopts::value<double>())(
      "seed", "Sampling seed", cxxopts::value<uint64_t>())(
      "stop", "A string that ends generation (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "dtype", "fp32, bf16 or fp16 (CUDA) weights and activations (default: generate.dtype)",
      cxxopts::value<std::string>())(
      "chat", "Each prompt is a user message rendered with the chat template (default: generate.chat)");
}

void encode_options(cxxopts::Options& o) {
  add_tokenizer_file_options(o);
  o.add_options()("lines", "Encode each line on its own; one output line each")(
      "specials", "Add the post-processor's special tokens ([CLS] ... [SEP], <|begin_of_text|> ...)")(
      "offsets", "Write id:start-end byte offsets")(
      "cased", "vocab.txt: keep case and accents (default: as the vocabulary is cased)")(
      "threads", "Encoding threads for --lines", cxxopts::value<int>())(
      "stats", "Print bytes, tokens and MB/s to stderr")("files", "Input files",
                                                          cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"files"});
}

void decode_options(cxxopts::Options& o) {
  add_tokenizer_file_options(o);
  o.add_options()("lines", "End each decoded line with a newline")(
      "cased", "vocab.txt: keep case and accents (default: as the vocabulary is cased)")(
      "files", "Input files", cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"files"});
}

void check_options(cxxopts::Options& o) {
  o.add_options()("files", "Recipe files", cxxopts::value<std::vector<std::string>>())(
      "set", "Override a recipe key (repeatable)", cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"files"});
}

void keys_options(cxxopts::Options& o) {
  o.add_options()("markdown", "As a Markdown table")(
      "stages", "The pipeline's stages instead: the keys and files each reads, what it writes (Markdown)");
}

std::vector<Command> commands() {
  using lathe::recipe::Stage;
  auto with_recipe = [](void (*more)(cxxopts::Options&) = nullptr) {
    return [more](cxxopts::Options& o) {
      recipe_options(o);
      if (more) more(o);
    };
  };
  auto summary = [](Stage s) { return std::string(lathe::pipeline::stage_spec(s).summary); };
  // A stage whose command takes the recipe and --force only.
  auto stage_command = [&](Stage s) {
    const auto& spec = lathe::pipeline::stage_spec(s);
    return Command{std::string(spec.command), "RECIPE", std::string(spec.summary), with_recipe([](cxxopts::Options& o) {
                     o.add_options()("force", "Run it again even if its output is up to date");
                   }),
                   [s](const cxxopts::ParseResult& r) { return run_stage_command(s, load(r), r); }};
  };
  std::vector<Command> out = {
      {"run", "RECIPE", "Run the recipe's pipeline of stages in order", with_recipe(run_options), cmd_run},
      {"train", "RECIPE", summary(Stage::Train), with_recipe(train_options), cmd_train},
      {"eval", "[RECIPE]", summary(Stage::Eval), with_recipe(eval_options), cmd_eval},
      {"generate", "[RECIPE]", summary(Stage::Generate), with_recipe(generate_options), cmd_generate},
  };
  // Every other stage of the registry: its command takes the recipe and --force.
  for (const auto& spec : lathe::pipeline::stage_registry())
    if (spec.stage != Stage::Train && spec.stage != Stage::Eval && spec.stage != Stage::Generate)
      out.push_back(stage_command(spec.stage));
  out.insert(out.end(),
             {
                 {"tokenizer encode", "[FILE...]", "Encode text files (or stdin) to token ids, one line per file",
                  encode_options, cmd_tokenizer_encode},
                 {"tokenizer decode", "[FILE...]", "Decode lines of token ids (or stdin) to text", decode_options,
                  cmd_tokenizer_decode},
                 {"recipe check", "FILE...", "Validate recipes; print every problem as file:line:col: key: message",
                  check_options, cmd_recipe_check},
                 {"recipe show", "RECIPE", "Print the fully resolved recipe as YAML", with_recipe(), cmd_recipe_show},
                 {"recipe keys", "", "List every recipe key with its type, default and meaning", keys_options,
                  cmd_recipe_keys},
                 {"env", "", "Show versions, devices, backends and thread settings", {}, cmd_env},
             });
  return out;
}

void print_help(const std::vector<Command>& cmds) {
  std::cout << fmt::format("lathe {} - train transformers from raw text to an exported model\n\n", lathe::build::kVersion)
            << "usage: lathe <command> [args] [options]\n\ncommands:\n";
  for (const auto& c : cmds) std::cout << fmt::format("  {:<18} {}\n", c.name, c.summary);
  std::cout << "\nlathe <command> --help shows a command's options; lathe --version prints the version.\n";
}

int run_command(const Command& c, int argc, char** argv) {
  cxxopts::Options o("lathe " + c.name, c.summary);
  o.positional_help(c.args);
  if (c.options) c.options(o);
  o.add_options()("h,help", "Show this help");
  try {
    auto result = o.parse(argc, argv);
    if (result.count("help")) {
      std::cout << o.help();
      return kOk;
    }
    if (!result.unmatched().empty()) throw UsageError("unexpected argument '" + result.unmatched().front() + "'");
    return c.run(result);
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "lathe " << c.name << ": " << e.what() << "\n" << usage_line(c) << "\n";
    return kUsage;
  } catch (const UsageError& e) {
    std::cerr << "lathe " << c.name << ": " << e.what() << "\n" << usage_line(c) << "\n";
    return kUsage;
  }
}

}  // namespace

int main(int argc, char** argv) {
  lathe::core::keep_freed_host_memory();
  lathe::core::flush_denormals_by_default();
  const auto cmds = commands();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << "usage: lathe <command> [args] [options]  (lathe --help lists the commands)\n";
    return kUsage;
  }
  if (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    print_help(cmds);
    return kOk;
  }
  if (args[0] == "--version" || args[0] == "-V") {
    std::cout << "lathe " << lathe::build::kVersion << " (LibTorch " << lathe::torch_version() << ")\n";
    return kOk;
  }

  // Commands are one word ("train") or a group and a word ("tokenizer encode").
  const Command* found = nullptr;
  int consumed = 1;
  for (const auto& c : cmds) {
    if (c.name == args[0]) found = &c;
    if (args.size() > 1 && c.name == args[0] + " " + args[1]) {
      found = &c;
      consumed = 2;
      break;
    }
  }
  if (!found) {
    std::string group_words;
    for (const auto& c : cmds)
      if (c.name.starts_with(args[0] + " ")) group_words += (group_words.empty() ? "" : "|") + c.name.substr(args[0].size() + 1);
    if (!group_words.empty() && args.size() > 1 && (args[1] == "--help" || args[1] == "-h")) {
      for (const auto& c : cmds)
        if (c.name.starts_with(args[0] + " ")) std::cout << fmt::format("  lathe {:<18} {}\n", c.name, c.summary);
      return kOk;
    }
    if (!group_words.empty())
      std::cerr << fmt::format("lathe {}: expected one of {}\nusage: lathe {} {{{}}} ...\n", args[0], group_words,
                               args[0], group_words);
    else
      std::cerr << fmt::format("lathe: unknown command '{}'\nusage: lathe <command> [args] [options]  (lathe --help "
                               "lists the commands)\n",
                               args[0]);
    return kUsage;
  }

  // cxxopts sees the command name as argv[0] and the rest as arguments.
  std::vector<char*> rest{argv[0]};
  for (int i = 1 + consumed; i < argc; ++i) rest.push_back(argv[i]);
  try {
    return run_command(*found, static_cast<int>(rest.size()), rest.data());
  } catch (const lathe::recipe::RecipeError& e) {
    std::cerr << e.what() << "\n";
    return kFailed;
  } catch (const lathe::Error& e) {
    std::cerr << "lathe " << found->name << ": " << e.what() << "\n";
    return kFailed;
  } catch (const std::invalid_argument& e) {
    // The libraries' options checks: a value the user gave is out of range, said with its name.
    std::cerr << "lathe " << found->name << ": " << e.what() << "\n";
    return kFailed;
  } catch (const std::exception& e) {
    std::cerr << "lathe " << found->name << ": internal error: " << e.what() << "\n";
    return kFailed;
  }
}
