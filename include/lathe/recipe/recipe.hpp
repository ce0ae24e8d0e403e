// The typed recipe: one struct per YAML section, each field with its default.
//
// Every field is declared once more, with its YAML key, its documentation and its allowed
// range, in the section's `visit` function right below the struct. That declaration is the
// schema: the loader binds YAML through it, `lathe recipe show` writes YAML through it and
// `lathe recipe keys` prints the key reference (docs/recipe-keys.md) from it.
//
// Units: steps are optimizer steps; sizes in tokens unless the key says otherwise; paths are
// relative to the directory `lathe` is started from. A `0` or empty value marked "derived"
// is filled in by the stage that uses it (see each key's text).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lathe/adapters/lora.hpp"
#include "lathe/compress/prune.hpp"
#include "lathe/compress/quantize.hpp"
#include "lathe/core/schema.hpp"
#include "lathe/models/options.hpp"
#include "lathe/recipe/enums.hpp"

namespace lathe::recipe {

struct RunConfig {
  std::string name = "lathe";
  std::string out_dir = "runs/lathe";
  int64_t seed = 1337;
  Device device = Device::Auto;
  int64_t threads = 0;
  bool force = false;
};

template <class V>
void visit(V& v, RunConfig& c) {
  v.field("name", c.name, "Run name, shown in logs and metrics.");
  v.field("out_dir", c.out_dir, "Directory that receives every artifact of the run (tokenizer, shards, "
                                "checkpoints, metrics, exports).");
  v.field("seed", c.seed, "Seed of every random stream (init, data order, dropout, masking).", at_least(0));
  v.field("device", c.device, "Where to compute: auto takes CUDA when a GPU is visible, else the CPU.");
  v.field("threads", c.threads, "CPU threads for LibTorch's intra-op pool; 0 keeps LibTorch's default (CPU "
                                "ranks of a data-parallel job: the node's cores shared out among its ranks).",
          at_least(0));
  v.field("force", c.force, "Re-run stages whose outputs already exist (otherwise they are skipped).");
}

struct TokenizerConfig {
  TokenizerType type = TokenizerType::Bpe;
  std::string path;
  std::vector<std::string> train_files;
  int64_t vocab_size = 8192;
  int64_t min_frequency = 2;
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
  bool lowercase = false;
  std::string pre_tokenizer = "gpt2";
  std::string pattern;
  std::string eos_token;
  std::string chat_template;
};

template <class V>
void visit(V& v, TokenizerConfig& c) {
  v.field("type", c.type, "Tokenizer model: byte-level BPE (GPT-2 style) or WordPiece (BERT).");
  v.field("path", c.path, "An existing tokenizer (tokenizer.json, vocab.json with merges.txt beside it, vocab.txt, "
                          "or a tiktoken file such as cl100k_base.tiktoken) to use instead of training one. Empty: "
                          "the tokenizer stage trains <out_dir>/tokenizer.json.");
  v.field("train_files", c.train_files, "Text or JSONL files (globs allowed) to train the tokenizer on. Empty: "
                                        "data.train_files.");
  v.field("vocab_size", c.vocab_size, "Vocabulary size to train to, special tokens included.", between(256, 1 << 24));
  v.field("min_frequency", c.min_frequency, "Pairs seen fewer times than this are never merged.", at_least(1));
  v.field("special_tokens", c.special_tokens, "Tokens matched before pre-tokenization and never split (trained "
                                              "tokenizers and tiktoken files; a tokenizer.json names its own).");
  v.field("lowercase", c.lowercase, "WordPiece only: lower-case and strip accents (uncased BERT).");
  v.field("pre_tokenizer", c.pre_tokenizer,
          "BPE training: how text is split before merging: gpt2 (GPT-2's rule), cl100k (GPT-4 / Llama 3: "
          "case-insensitive contractions, numbers in runs of 1-3 digits), o200k (GPT-4o), or a regex of your own "
          "(Oniguruma syntax, as in a tokenizer.json Split).");
  v.field("pattern", c.pattern, "A tiktoken file (tokenizer.path ending .tiktoken) only: its split pattern. Empty: "
                                "the pattern of the encoding the file is named after (r50k_base, p50k_base, "
                                "cl100k_base, o200k_base).");
  v.field("eos_token", c.eos_token, "The end-of-text token put between documents (e.g. <|end_of_text|>, </s>, "
                                    "<|eot_id|>); it must be a token of the tokenizer. Empty: the eos_token of a "
                                    "tokenizer_config.json beside tokenizer.path, else <|endoftext|>, else [SEP].");
  v.field("chat_template", c.chat_template, "A Jinja chat template, or a file holding one (.jinja), that renders "
                                            "conversations (sft, lathe generate --chat). Empty: the tokenizer's "
                                            "(chat_template.jinja or tokenizer_config.json beside tokenizer.path).");
}

struct DataConfig {
  std::vector<std::string> train_files;
  std::vector<std::string> val_files;
  double val_fraction = 0.05;
  DataFormat format = DataFormat::Auto;
  std::string jsonl_field = "text";
  std::string shard_dir;
  int64_t shard_tokens = 100'000'000;
  int64_t seq_len = 256;
  Sampler sampler = Sampler::Random;
  int64_t num_workers = 2;
  int64_t prefetch = 4;
  double mlm_probability = 0.15;
  bool whole_word_mask = false;
  std::string text_field = "text";
  std::string text_pair_field;
  std::string label_field = "label";
  bool packing = false;
};

template <class V>
void visit(V& v, DataConfig& c) {
  v.field("train_files", c.train_files, "Training corpus: text, JSONL, CSV/TSV (classification) files, "
                                        "directories or globs.");
  v.field("val_files", c.val_files, "Validation files. Empty: val_fraction of the training documents.");
  v.field("val_fraction", c.val_fraction, "Share of training documents held out for validation when "
                                          "val_files is empty.", in_closed_open(0.0, 1.0));
  v.field("format", c.format, "Input format; auto decides by file extension (.jsonl/.json is JSONL).");
  v.field("jsonl_field", c.jsonl_field, "JSONL field that holds a document's text.");
  v.field("shard_dir", c.shard_dir, "Where token shards are written and read. Empty: <out_dir>/shards.");
  v.field("shard_tokens", c.shard_tokens, "Tokens per shard file.", at_least(1024));
  v.field("seq_len", c.seq_len, "Tokens per training sequence (context length seen in training).", at_least(1));
  v.field("sampler", c.sampler, "random: random windows every step; sequential: consecutive windows, "
                                "epoch by epoch.");
  v.field("num_workers", c.num_workers, "Background threads that assemble batches; 0 builds each batch on the "
                                           "training thread when the step needs it.", at_least(0));
  v.field("prefetch", c.prefetch, "Batches prepared ahead of the training step.", at_least(1));
  v.field("mlm_probability", c.mlm_probability, "masked_lm: share of tokens selected for prediction "
                                                "(80% masked, 10% random, 10% kept).",
          in_open_closed(0.0, 1.0));
  v.field("whole_word_mask", c.whole_word_mask, "masked_lm: select whole words rather than single pieces.");
  v.field("text_field", c.text_field, "classification: column or JSON field with the text.");
  v.field("text_pair_field", c.text_pair_field, "classification: field with the second text of a pair "
                                                "(empty: single texts).");
  v.field("label_field", c.label_field, "classification: field with the label.");
  v.field("packing", c.packing, "sft: several examples in one row of seq_len tokens, each attending only within "
                                "itself with its positions restarting at 0 (the loss and gradients of the examples "
                                "unpacked); the share of real tokens is reported.");
}

/// The model section: a preset and an architecture, then the model's own options, declared
/// once with the model (lathe/models/options.hpp).
struct ModelConfig : models::ModelOptions {
  std::string preset;
  Arch arch = Arch::Gpt;

  /// The options a model is built with: the derived values filled in. `vocab_size` is used
  /// when the recipe leaves it at 0 (the tokenizer's size); `pad_token_id` is the tokenizer's
  /// [PAD] id, or -1 (BERT only).
  models::ModelOptions options(int64_t vocab_size, int64_t pad_token_id = -1) const {
    models::ModelOptions o = *this;
    if (o.vocab_size <= 0) o.vocab_size = vocab_size;
    o.pad_token_id = arch == Arch::Bert ? pad_token_id : -1;
    return o;
  }
};

template <class V>
void visit(V& v, ModelConfig& c) {
  v.field("preset", c.preset, "Named size that fills every model key this recipe does not set: gpt2-124m, "
                              "gpt2-355m, gpt2-774m, gpt2-1.5b, gpt-tiny, bert-base, bert-large, bert-tiny.");
  v.field("arch", c.arch, "gpt: decoder-only causal LM; bert: bidirectional encoder.");
  visit(v, static_cast<models::ModelOptions&>(c));
}

struct OptimConfig {
  Optimizer name = Optimizer::AdamW;
  double lr = 3e-4;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double momentum = 0.9;
  bool nesterov = false;
  double grad_clip = 1.0;
  bool decay_embeddings = false;
  bool fused = true;
};

template <class V>
void visit(V& v, OptimConfig& c) {
  v.field("name", c.name, "Optimizer.");
  v.field("lr", c.lr, "Peak learning rate (the schedule scales it).", greater_than(0.0));
  v.field("weight_decay", c.weight_decay, "Decoupled weight decay; never applied to biases and norms.",
          at_least(0.0));
  v.field("beta1", c.beta1, "adamw: first-moment decay.", in_closed_open(0.0, 1.0));
  v.field("beta2", c.beta2, "adamw: second-moment decay.", in_closed_open(0.0, 1.0));
  v.field("eps", c.eps, "adamw: denominator epsilon.", greater_than(0.0));
  v.field("momentum", c.momentum, "sgd: momentum.", in_closed_open(0.0, 1.0));
  v.field("nesterov", c.nesterov, "sgd: Nesterov momentum.");
  v.field("grad_clip", c.grad_clip, "Clip the global gradient norm to this value; 0 turns clipping off.",
          at_least(0.0));
  v.field("decay_embeddings", c.decay_embeddings, "Apply weight decay to embedding tables too.");
  v.field("fused", c.fused, "adamw: use the fused multi-tensor kernel where the device has one.");
}

struct ScheduleConfig {
  Schedule name = Schedule::Cosine;
  int64_t warmup_steps = 100;
  double min_lr_ratio = 0.1;
  double decay_fraction = 0.2;
};

template <class V>
void visit(V& v, ScheduleConfig& c) {
  v.field("name", c.name, "constant, linear warmup then cosine or linear decay, or warmup-stable-decay (wsd).");
  v.field("warmup_steps", c.warmup_steps, "Steps of linear warmup from 0 to optim.lr.", at_least(0));
  v.field("min_lr_ratio", c.min_lr_ratio, "Floor of the decay, as a fraction of optim.lr.", between(0.0, 1.0));
  v.field("decay_fraction", c.decay_fraction, "wsd: final share of train.max_steps spent decaying.",
          in_open_closed(0.0, 1.0));
}

struct TrainConfig {
  Task task = Task::CausalLm;
  int64_t max_steps = 1000;
  int64_t batch_size = 8;
  int64_t grad_accum = 1;
  Precision precision = Precision::Fp32;
  bool cuda_graphs = false;
  std::string activation_checkpointing = "none";
  int64_t eval_every = 100;
  int64_t eval_batches = 20;
  int64_t log_every = 10;
  int64_t save_every = 500;
  int64_t keep_last = 3;
  bool keep_best = true;
  std::string resume = "auto";
  std::string init_from;
  NanPolicy nan_policy = NanPolicy::Error;
  LossOn loss_on = LossOn::Assistant;
  double dpo_beta = 0.1;
  double dpo_label_smoothing = 0;
};

template <class V>
void visit(V& v, TrainConfig& c) {
  v.field("task", c.task, "causal_lm needs model.arch gpt; masked_lm and classification need bert; sft (supervised "
                          "fine-tuning on JSONL conversations {\"messages\": [...]} rendered with the tokenizer's "
                          "chat template, or {\"prompt\", \"completion\"} pairs) needs gpt; dpo (direct preference "
                          "optimisation on JSONL {\"prompt\", \"chosen\", \"rejected\"}, strings or chat messages, "
                          "against the train.init_from model as reference) needs gpt.");
  v.field("max_steps", c.max_steps, "Optimizer steps to train.", at_least(1));
  v.field("batch_size", c.batch_size, "Sequences per micro-batch on each rank.", at_least(1));
  v.field("grad_accum", c.grad_accum, "Micro-batches accumulated per optimizer step (global batch = "
                                      "batch_size * grad_accum * world size).",
          at_least(1));
  v.field("precision", c.precision, "fp32, bf16 autocast (CPU and CUDA) or fp16 autocast with loss scaling "
                                    "(CUDA only).");
  v.field("cuda_graphs", c.cuda_graphs,
          "CUDA, causal_lm, one process: capture a micro-batch's forward and backward as a CUDA graph after 3 "
          "eager micro-batches and replay it (one launch instead of one per kernel); the update stays eager. "
          "Same results as without; a batch of other shapes runs eagerly.");
  v.field("activation_checkpointing", c.activation_checkpointing,
          "none; blocks: every transformer block keeps only its input in the forward and runs again in the "
          "backward (the same dropout masks: gradients equal the unchecked run's); every_<n>: blocks 0, n, 2n, ... "
          "only. Trades about one more forward per step for the activations of the checkpointed blocks.");
  v.field("eval_every", c.eval_every, "Steps between validation runs; 0: only at the end.", at_least(0));
  v.field("eval_batches", c.eval_batches, "Batches per validation run.", at_least(1));
  v.field("log_every", c.log_every, "Steps between metric records.", at_least(1));
  v.field("save_every", c.save_every, "Steps between checkpoints; 0: only at the end.", at_least(0));
  v.field("keep_last", c.keep_last, "Checkpoints kept besides the best one.", at_least(1));
  v.field("keep_best", c.keep_best, "Also keep the checkpoint with the lowest validation loss.");
  v.field("resume", c.resume, "auto: continue the run in out_dir from its newest complete checkpoint "
                              "(a fresh start when there is none); none: a fresh start, refused when out_dir "
                              "holds checkpoints (use --force); or a checkpoint directory.");
  v.field("init_from", c.init_from, "Start from these weights: a lathe checkpoint or a Hugging Face model "
                                    "directory. Empty: random initialisation.");
  v.field("nan_policy", c.nan_policy, "On a NaN or infinite loss: stop with an error, or skip the step.");
  v.field("loss_on", c.loss_on, "sft: the tokens the loss is taken on: assistant (the assistant turns of "
                                "conversations, the completions of prompt / completion pairs), completion (the "
                                "last assistant turn, or the completion) or all.");
  v.field("dpo_beta", c.dpo_beta, "dpo: beta, the strength of the pull towards the reference model (the rewards "
                                  "are beta * (log pi - log pi_ref) of each completion).",
          greater_than(0.0));
  v.field("dpo_label_smoothing", c.dpo_label_smoothing, "dpo: the share of pairs assumed mislabelled (conservative "
                                                        "DPO): the loss is -(1 - s) log sigmoid(beta d) - s log "
                                                        "sigmoid(-beta d).",
          in_closed_open(0.0, 0.5));
}

/// The adapters section: LoRA / QLoRA, declared with the adapters (lathe/adapters/lora.hpp).
using AdaptersConfig = adapters::AdapterOptions;

/// The distributed section: the data-parallel options, declared with the communicator
/// (lathe/dist/options.hpp).
using DistributedConfig = dist::DistOptions;

/// A quality gate of a stage that changes a model (prune.gate, quantize.gate, export.gate): a
/// metric of the stage's output, measured after the stage on the same data as the same metric
/// of the stage's source model, may move the wrong way by at most a limit. A failed gate ends
/// the run with exit 1 and marks the output failed: no later stage or run uses it.
struct GateConfig {
  std::string metric;        // val_<metric> (val_loss, val_perplexity, ...) or a task metric (acc, acc_norm, ...)
  std::string task;          // the eval.tasks task the metric is of; empty: a validation metric
  std::string filter;        // the task metric's filter ("none", "strict-match"); empty: its first
  std::string max_increase;  // "2%" (of the source's figure), "0.5" (in the metric's units), "1pt" (0.01)
  std::string max_drop;      // as max_increase, for a metric that must not fall

  /// How far the metric may move: `amount` in the metric's units, or a fraction of the source's
  /// figure; `increase` for max_increase.
  struct Limit {
    double amount = 0;
    bool relative = false;
    bool increase = true;
  };
  bool enabled() const { return !metric.empty(); }
  /// The limit; throws std::invalid_argument naming the key when it is not a number, "N%" or "Npt".
  Limit limit() const;
  /// The problems of the section, keys relative to it.
  std::vector<models::OptionProblem> problems() const;
};

template <class V>
void visit(V& v, GateConfig& c) {
  v.field("metric", c.metric, "The gated metric: val_<name> for a validation metric of eval.batches batches "
                              "(val_loss, val_perplexity, val_accuracy, ...), or a metric of `task` (acc, "
                              "acc_norm, perplexity, word_perplexity, exact_match, ...). Empty: no gate.");
  v.field("task", c.task, "The task (its `task:` name in eval.tasks) whose metric is gated; empty: a validation "
                          "metric.");
  v.field("filter", c.filter, "The task metric's filter (none, strict-match, ...); empty: the first it has.");
  v.field("max_increase", c.max_increase, "The most the metric may rise over the source model's: \"2%\" of the "
                                          "source's figure, a number in the metric's units, or \"1pt\" (0.01).");
  v.field("max_drop", c.max_drop, "The most the metric may fall below the source model's, spelled as max_increase.");
}

/// The prune section: the pruning options, declared with the pruner
/// (lathe/compress/prune.hpp), the checkpoint to prune and the gate on the result.
struct PruneConfig : compress::PruneOptions {
  std::string checkpoint;
  GateConfig gate;
};

template <class V>
void visit(V& v, PruneConfig& c) {
  visit(v, static_cast<compress::PruneOptions&>(c));
  v.field("checkpoint", c.checkpoint, "Checkpoint to prune. Empty: the newest in <out_dir>/checkpoints.");
  v.section("gate", c.gate, "Quality gate on the pruned (and fine-tuned) model against the checkpoint.");
}

/// The quantize section: the quantization options, declared with the quantizer
/// (lathe/compress/quantize.hpp), and the model to quantize.
struct QuantizeConfig : compress::QuantizeOptions {
  ModelSource source = ModelSource::Auto;
  std::string checkpoint;
  GateConfig gate;
};

template <class V>
void visit(V& v, QuantizeConfig& c) {
  visit(v, static_cast<compress::QuantizeOptions&>(c));
  v.field("source", c.source, "Model to quantize: checkpoint, pruned, or auto (the pruned model when prune "
                              "comes earlier in the pipeline).");
  v.field("checkpoint", c.checkpoint, "source checkpoint: a checkpoint, a lathe model file or a Hugging Face "
                                      "directory (docs/models.md lists the families). Empty: the newest in "
                                      "<out_dir>/checkpoints.");
  v.section("gate", c.gate, "Quality gate on the quantized model against its float source.");
}

struct ExportConfig {
  std::vector<ExportFormat> format = {ExportFormat::Onnx};
  std::vector<GgufType> gguf_type = {GgufType::Auto};
  Pooling pooling = Pooling::Auto;
  bool normalize = false;
  int64_t opset = 17;
  bool dynamic_axes = true;
  OnnxAttention onnx_attention = OnnxAttention::Standard;
  ModelSource source = ModelSource::Auto;
  std::string checkpoint;
  std::string path;
  HfDtype hf_dtype = HfDtype::Auto;
  std::string max_shard_size = "5GB";
  GateConfig gate;

  /// max_shard_size in bytes: an integer, or a whole number of KB / MB / GB (powers of 1000) or
  /// KiB / MiB / GiB (of 1024); std::invalid_argument saying so otherwise.
  int64_t max_shard_bytes() const;
  /// Whether `format` lists `f` (both stands for onnx and hf).
  bool writes(ExportFormat f) const;
};

template <class V>
void visit(V& v, ExportConfig& c) {
  v.field("format", c.format, "What to write, one or a list: onnx (model.onnx, and decoder_with_past_model.onnx "
                              "for a GPT), hf (Hugging Face config.json + model.safetensors), gguf (llama.cpp: "
                              "model.gguf, or model-<TYPE>.gguf per gguf_type), both (onnx and hf).");
  v.field("gguf_type", c.gguf_type, "gguf: the ggml type of the weight matrices, one or a list (a file each): f32, "
                                    "f16, bf16, q8_0, q4_0, q4_1, or auto (model.gguf: quantized layers in the closest "
                                    "type of their scheme, int8 -> q8_0, int4 -> q4_1; float ones as hf_dtype says).");
  v.field("opset", c.opset, "ONNX opset of the default domain (17: LayerNormalization; at most the newest the "
                            "linked onnx library checks).", between(17, 21));
  v.field("dynamic_axes", c.dynamic_axes, "Leave the batch dimension symbolic in the ONNX graphs; false fixes it "
                                          "at 1 (sequence dimensions stay symbolic).");
  v.field("onnx_attention", c.onnx_attention,
          "onnx, a GPT: the attention of decoder_with_past_model.onnx (the graph ONNX Runtime GenAI runs): "
          "standard (ONNX ops any runtime runs, left-padded batches too) or group_query (one ONNX Runtime "
          "com.microsoft GroupQueryAttention node per layer, as GenAI's model builder writes it: rows whose real "
          "tokens come first, a continuation after a cache at batch 1; no sliding window, heads a multiple of 8 "
          "wide, 16 with rotary). model.onnx always has standard ops.");
  v.field("source", c.source, "Model to export: checkpoint, pruned, quantized, or auto (the output of the "
                              "nearest earlier prune or quantize stage of the pipeline, else the checkpoint).");
  v.field("checkpoint", c.checkpoint, "source checkpoint: a checkpoint, a lathe model file or a Hugging Face "
                                      "directory (docs/models.md lists the families; a BertModel directory, such "
                                      "as a sentence-embedding model, exports as a feature extractor). Empty: the "
                                      "newest in <out_dir>/checkpoints.");
  v.field("path", c.path, "Output directory. Empty: <out_dir>/export.");
  v.field("pooling", c.pooling, "A BERT encoder's sentence embedding (ONNX output sentence_embedding; "
                                "sentence-transformers' modules.json and 1_Pooling beside the Hugging Face files): "
                                "mean (of the real tokens), cls (the first token), none, or auto (the pooling of "
                                "the sentence-transformers directory the model came from, with its Normalize).");
  v.field("normalize", c.normalize, "pooling mean or cls: L2-normalise the sentence embedding.");
  v.field("hf_dtype", c.hf_dtype, "hf: storage dtype of the weights: float32, bfloat16, float16, or auto (that of "
                                  "the Hugging Face directory the model came from, export.checkpoint or "
                                  "train.init_from; float32 otherwise).");
  v.field("max_shard_size", c.max_shard_size, "hf: the largest model-0000k-of-0000n.safetensors shard, as "
                                              "transformers' save_pretrained takes it (\"500MB\", \"2GiB\", bytes); "
                                              "a smaller model is one model.safetensors. 0: never sharded.");
  v.section("gate", c.gate, "Quality gate on the exported Hugging Face directory, read back, against the model "
                            "export read (needs format hf or both).");
}

struct EvalConfig {
  ModelSource source = ModelSource::Auto;
  std::string checkpoint;
  int64_t batches = 50;
  Split split = Split::Val;
  std::vector<std::string> tasks;
  int64_t num_fewshot = -1;
  int64_t limit = 0;
  int64_t bootstrap_iters = 100000;
  int64_t every = 0;
  bool log_samples = false;
};

template <class V>
void visit(V& v, EvalConfig& c) {
  v.field("source", c.source, "Model to evaluate: checkpoint, pruned, quantized, or auto (the output of the "
                              "nearest earlier prune or quantize stage of the pipeline, else the checkpoint).");
  v.field("checkpoint", c.checkpoint, "source checkpoint: the checkpoint to evaluate. Empty: the newest in "
                                      "<out_dir>/checkpoints.");
  v.field("batches", c.batches, "Batches to evaluate.", at_least(1));
  v.field("split", c.split, "Which shards to evaluate on.");
  v.field("tasks", c.tasks, "Task files (lm-evaluation-harness task YAML over local documents; docs/evaluation.md) "
                            "scored by the eval stage, as the harness scores them.");
  v.field("num_fewshot", c.num_fewshot, "Few-shot examples per prompt for every task; -1: each task's num_fewshot.",
          at_least(-1));
  v.field("limit", c.limit, "Documents scored per task (the first ones); 0: all.", at_least(0));
  v.field("bootstrap_iters", c.bootstrap_iters, "Resamples of the bootstrapped standard errors (perplexity), as the "
                                                "harness draws them; 0: no standard errors.", at_least(0));
  v.field("every", c.every, "Training steps between runs of eval.tasks during training (logged to metrics.jsonl "
                            "and TensorBoard as task/<task>/<metric>); 0: never.", at_least(0));
  v.field("log_samples", c.log_samples, "Write each document's prompt, responses and scores to "
                                        "<out_dir>/eval_samples/<task>.jsonl.");
}

struct GenerateConfig {
  std::vector<std::string> prompts = {""};
  int64_t max_new_tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 50;
  double top_p = 1.0;
  std::vector<std::string> stop;
  ModelSource source = ModelSource::Auto;
  Precision dtype = Precision::Fp32;
  bool chat = false;
};

template <class V>
void visit(V& v, GenerateConfig& c) {
  v.field("prompts", c.prompts, "Prompts to continue (an empty prompt starts from the end-of-text token).");
  v.field("max_new_tokens", c.max_new_tokens, "Tokens generated per prompt.", at_least(1));
  v.field("temperature", c.temperature, "Sampling temperature; 0 is greedy decoding.", at_least(0.0));
  v.field("top_k", c.top_k, "Sample from the k most likely tokens; 0 disables.", at_least(0));
  v.field("top_p", c.top_p, "Nucleus sampling: smallest set of tokens with this much probability.",
          in_open_closed(0.0, 1.0));
  v.field("stop", c.stop, "Strings that end a generation.");
  v.field("source", c.source, "Model to sample from: checkpoint (the newest), pruned, quantized, or auto (the "
                              "output of the nearest earlier prune or quantize stage of the pipeline, else the "
                              "checkpoint).");
  v.field("dtype", c.dtype, "Weights and activations while generating: fp32, bf16 (half the bytes read per token, "
                            "about twice the decode speed on a CPU) or fp16 (CUDA only).");
  v.field("chat", c.chat, "Each prompt is a user message, rendered with the chat template (tokenizer.chat_template, "
                          "else the tokenizer's) and its generation prompt, as transformers' "
                          "apply_chat_template(add_generation_prompt=True) renders it; the tokenizer's eos_token ends "
                          "the reply.");
}

/// A whole recipe: what `lathe run` executes and every stage command reads.
struct Recipe {
  std::vector<Stage> pipeline = {Stage::Tokenizer, Stage::Data, Stage::Train, Stage::Eval};
  RunConfig run;
  TokenizerConfig tokenizer;
  DataConfig data;
  ModelConfig model;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  AdaptersConfig adapters;
  DistributedConfig distributed;
  PruneConfig prune;
  QuantizeConfig quantize;
  ExportConfig export_;
  EvalConfig eval;
  GenerateConfig generate;
  // Not a key: the recipe files this recipe was read from (the file, then its extends: bases).
  // Inputs of the run, which lathe never writes over.
  std::vector<std::filesystem::path> sources;
};

template <class V>
void visit(V& v, Recipe& r) {
  v.field("pipeline", r.pipeline, "Stages `lathe run` executes, in order.");
  v.section("run", r.run, "Run identity, output directory, seed and device.");
  v.section("tokenizer", r.tokenizer, "Tokenizer to train or load.");
  v.section("data", r.data, "Corpus, token shards and batching.");
  v.section("model", r.model, "Transformer architecture.");
  v.section("optim", r.optim, "Optimizer.");
  v.section("schedule", r.schedule, "Learning-rate schedule.");
  v.section("train", r.train, "Training loop, evaluation cadence and checkpoints.");
  v.section("adapters", r.adapters, "Low-rank adapters (LoRA, QLoRA) trained on a frozen train.init_from model.");
  v.section("distributed", r.distributed, "Multi-process training.");
  v.section("prune", r.prune, "Pruning stage.");
  v.section("quantize", r.quantize, "Post-training quantization stage.");
  v.section("export", r.export_, "Export stage.");
  v.section("eval", r.eval, "Evaluation stage.");
  v.section("generate", r.generate, "Sample generation stage.");
}

}  // namespace lathe::recipe
