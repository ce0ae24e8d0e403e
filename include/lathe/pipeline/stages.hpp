// The stages of a recipe, each runnable alone (`lathe tokenizer train`, ...) or from `lathe run`.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <vector>
#include <ostream>
#include <string>

#include "lathe/models/generate.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// Called with (stage, done, total) as a stage makes progress.
using Progress = std::function<void(const std::string&, int64_t, int64_t)>;

struct StageResult {
  bool skipped = false;      // outputs existed and the stage was not forced
  std::string summary;       // one line for the log
  bool interrupted = false;  // SIGTERM / SIGINT stopped it after a checkpoint; running it again resumes
};

/// How a model's time compares with its source's in a summary: "1.52x faster" when
/// `after_ms` is shorter than `before_ms`, "2.04x slower" (never "0.49x faster") when longer.
std::string speed_change(double before_ms, double after_ms);

/// The locks a stage that writes holds: run.out_dir and, when it lies elsewhere, the shard
/// directory (io::DirLock; re-entrant in one process, so stages nest inside `lathe run`).
class RunLock {
 public:
  explicit RunLock(const recipe::Recipe& recipe);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The files a recipe reads and lathe must never write over: the recipe and its extends:
/// bases, the corpus files, tokenizer.path, train.init_from and the models the prune,
/// quantize, eval and export sections name.
std::vector<std::filesystem::path> run_inputs(const recipe::Recipe& recipe);

/// Throws lathe::Error when writing or removing one of `outputs` would destroy one of
/// run_inputs(): an output is an input, or a directory that holds one. The inputs are expanded
/// once for all outputs.
void check_not_input(const recipe::Recipe& recipe, const std::vector<std::filesystem::path>& outputs);

/// Every stage records what its output was made from — the recipe keys it reads, the size and
/// mtime of its input files, the tokenizer's fingerprint, the checkpoint's identity — in the
/// output itself (index.json's "made_from") or in <out_dir>/stages.json, and is skipped only when
/// all of it is unchanged. Otherwise it runs again and says what changed; the tokenizer and data
/// stages refuse instead when out_dir holds checkpoints (they were trained on the old inputs).

/// Tokenizer stage: with tokenizer.path set, checks that it loads; otherwise trains a byte-level
/// BPE or WordPiece tokenizer (tokenizer.type) on tokenizer.train_files (or data.train_files)
/// into <out_dir>/tokenizer.json.
/// Throws lathe::Error when the model at `model` (a file, or a directory) is a stage's output whose
/// quality gate failed or never finished (gate.json beside it): a model named by path is refused
/// as one found by eval.source / export.source is.
void refuse_model_of_failed_gate(const std::filesystem::path& model);

StageResult run_tokenizer_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

/// Data stage: tokenizes data.train_files (and data.val_files) with the run's tokenizer into
/// train/val shards under shard_dir().
StageResult run_data_stage(const recipe::Recipe& recipe, bool force, const Progress& progress = {});

}  // namespace lathe::pipeline

namespace lathe::pipeline {

/// Where the train stage prints its progress line and messages.
struct ConsoleOptions {
  std::ostream* out = nullptr;  // null: silent
  bool is_tty = false;          // redraw the progress line in place
};

/// Train stage: trains to train.max_steps. Skipped when the newest checkpoint already reached
/// max_steps (unless forced). train.resume decides how an existing run is continued (auto, the
/// default, resumes it). Forced, it starts over: lathe's checkpoints, metrics.jsonl and
/// TensorBoard files of the earlier run are removed first (with train.resume naming a checkpoint
/// of out_dir, only the checkpoints after it), and the summary says what was removed.
StageResult run_train_stage(const recipe::Recipe& recipe, bool force, const ConsoleOptions& console = {});

/// Eval stage: evaluates the model eval.source names (auto: the pruned model when prune comes
/// earlier in the pipeline, else the newest checkpoint or eval.checkpoint) and writes
/// <out_dir>/eval.json.
StageResult run_eval_stage(const recipe::Recipe& recipe, bool force);

/// The model a stage reads: `source` (auto resolved against the stages before `reader` in the
/// pipeline, all of it when `reader` is not listed): the checkpoint (`checkpoint`, else the
/// newest), <out_dir>/pruned/model.safetensors, or the quantized model. Throws naming the
/// stage to run when the model is not there.
std::filesystem::path source_model(const recipe::Recipe& recipe, recipe::ModelSource source, recipe::Stage reader,
                                   const std::string& checkpoint = {});

/// Prune stage: prunes prune.checkpoint (or the newest checkpoint) as the prune section says,
/// fine-tunes it for prune.finetune_steps with the pruned weights held at zero (its own run in
/// <out_dir>/pruned/finetune, resumed when interrupted), and writes
/// <out_dir>/pruned/model.safetensors and the report <out_dir>/prune.json (sparsity per layer,
/// parameters, validation metrics and, for structured pruning, forward latency, before and
/// after), also printed as a table.
StageResult run_prune_stage(const recipe::Recipe& recipe, bool force, const ConsoleOptions& console = {});

/// Quantize stage: quantizes the quantize.source model (auto: the pruned model when prune comes
/// earlier in the pipeline, else quantize.checkpoint or the newest checkpoint) as the quantize
/// section says, on the CPU (GPTQ calibrated on training batches), and writes
/// <out_dir>/quantized/model.safetensors and the report <out_dir>/quantize.json (bytes of the
/// weights, validation metrics and forward latency at batch 1 and 8, before and after, and the
/// error of each layer), also printed as a table.
StageResult run_quantize_stage(const recipe::Recipe& recipe, bool force, const ConsoleOptions& console = {});

/// Export stage: writes the export.source model to export.path (default <out_dir>/export) as
/// export.format says — onnx: model.onnx (and, for a GPT, decoder_with_past_model.onnx; see
/// export/onnx.hpp), checked before anything is written, quantized layers in ONNX's integer
/// operators; hf: config.json + model.safetensors (a quantized model's weights as the float
/// values their codes stand for); both: all of them — and the tokenizer file beside them.
StageResult run_export_stage(const recipe::Recipe& recipe, bool force);

/// Why the recipe's export section cannot run (an opset this build cannot check), naming the
/// key; empty when it can.
std::string export_problem(const recipe::Recipe& recipe);

/// Why the chat template an sft task or generate.chat renders with cannot be used (a template
/// that does not parse, a .jinja file that cannot be read, generate.chat without any template),
/// naming the key; empty when it can (or nothing renders one). A template beside a tokenizer
/// the pipeline has yet to train is checked when it exists.
std::string chat_template_problem(const recipe::Recipe& recipe);

struct Sample {
  std::string prompt;
  std::string text;           // the continuation (cut at a stop string)
  int64_t tokens = 0;         // tokens generated
  std::string finish_reason;  // length, stop_token, stop_string, context
};

struct GenerateRequest {
  std::filesystem::path model;      // a checkpoint directory, a lathe model file or a HF directory
  std::filesystem::path tokenizer;  // the tokenizer file
  std::vector<std::string> prompts; // "" starts from the end-of-text token
  models::SamplingOptions sampling; // stop_tokens: the end-of-text token is added
  std::vector<std::string> stop;    // strings that end a generation
  recipe::Device device = recipe::Device::Auto;
  recipe::Precision dtype = recipe::Precision::Fp32;  // of the weights and activations
  int64_t threads = 0;                                 // intra-op threads; 0: LibTorch's default
  /// Each prompt is a user message rendered with `chat_template` (empty: the one beside the
  /// tokenizer) and the generation prompt.
  bool chat = false;
  std::string chat_template;
};

/// The request a recipe's generate section makes (prompts, sampling, stop strings, device,
/// the run's tokenizer); the model is the caller's to choose.
GenerateRequest generate_request(const recipe::Recipe& recipe);

/// A loaded model and tokenizer that continue prompts. Loading happens in the constructor, so
/// a missing or mismatched model is reported before anything is printed.
class Generator {
 public:
  explicit Generator(const GenerateRequest& request);
  ~Generator();
  /// Continues prompt number `index` of the request (its sampling seed is seed + index);
  /// `on_text` (optional) receives each piece of text as it is decoded.
  Sample generate(std::size_t index, const std::function<void(const std::string&)>& on_text = {});
  /// Continues every prompt in one batch (models::generate_batch): the samples generate(i)
  /// gives, one forward per step for all prompts.
  std::vector<Sample> generate_all();
  std::size_t prompts() const;

 private:
  std::vector<int64_t> prompt_ids(std::size_t index) const;
  struct State;
  std::unique_ptr<State> state_;
};

/// Continues each prompt of the request, all in one batch.
std::vector<Sample> generate_samples(const GenerateRequest& request);

/// Generate stage: samples for generate.prompts from the newest checkpoint, printed to `out`
/// and written to <out_dir>/samples.jsonl.
StageResult run_generate_stage(const recipe::Recipe& recipe, bool force, std::ostream* out = nullptr);

}  // namespace lathe::pipeline
