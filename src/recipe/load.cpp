// Binding a composed YAML tree to the typed Recipe, then the checks that span several keys.

#include "lathe/recipe/load.hpp"

#include <algorithm>
#include <optional>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>

#include "lathe/adapters/lora.hpp"
#include "lathe/export/onnx.hpp"
#include "lathe/core/error.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/kind.hpp"
#include "lathe/models/presets.hpp"
#include "lathe/nn/checkpoint.hpp"

#include "tree.hpp"
#include "values.hpp"

namespace lathe::recipe {
namespace {

using detail::Node;

std::string dotted(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

std::string join_names(const std::vector<std::string_view>& names) {
  std::string out;
  for (auto n : names) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

/// Schema visitor that reads values from a tree and reports every problem it meets.
class Binder {
 public:
  Binder(const Node& map, std::vector<Diagnostic>& diags, std::string prefix = "")
      : map_(map), diags_(diags), prefix_(std::move(prefix)) {}

  template <class T>
  void field(std::string_view key, T& value, std::string_view /*doc*/, Range range = {}, Traits traits = {}) {
    if (!traits.recipe_key) return;
    known_.push_back(key);
    if (const Node* n = map_.find(key)) read(*n, dotted(prefix_, key), value, range);
  }

  template <class S>
  void section(std::string_view key, S& section, std::string_view /*doc*/) {
    known_.push_back(key);
    const Node* n = map_.find(key);
    if (!n || n->kind == Node::Kind::Null) return;  // "section:" alone keeps the defaults
    if (n->kind != Node::Kind::Map) {
      error(n->mark, dotted(prefix_, key), "expected a section (a mapping of keys), got " + std::string(n->kind_name()));
      return;
    }
    Binder sub(*n, diags_, dotted(prefix_, key));
    visit(sub, section);
    sub.report_unknown();
  }

  void report_unknown() const {
    for (const auto& e : map_.entries) {
      if (std::find(known_.begin(), known_.end(), e.key) != known_.end()) continue;
      std::string msg = "unknown key '" + e.key + "'";
      if (auto hint = detail::closest(e.key, known_); !hint.empty())
        msg += " (did you mean '" + hint + "'?)";
      else
        msg += "; the keys here are: " + join_names(known_);
      diags_.push_back({e.key_mark, dotted(prefix_, e.key), msg});
    }
  }

 private:
  void error(const Mark& m, const std::string& key, std::string msg) const {
    diags_.push_back({m, key, std::move(msg)});
  }

  template <class T>
  void read(const Node& n, const std::string& key, T& out, const Range& range) {
    if constexpr (detail::is_vector<T>::value) {
      using E = typename detail::is_vector<T>::element;
      T values;
      bool ok = true;
      if (n.kind == Node::Kind::Scalar) {  // a single value stands for a one-element list
        E v{};
        ok = read_scalar(n, key, v);
        values.push_back(std::move(v));
      } else if (n.kind == Node::Kind::Sequence) {
        for (std::size_t i = 0; i < n.items.size(); ++i) {
          E v{};
          ok = read_scalar(n.items[i], key + "[" + std::to_string(i) + "]", v) && ok;
          values.push_back(std::move(v));
        }
      } else {
        error(n.mark, key, "expected a " + detail::type_name<T>() + ", got " + std::string(n.kind_name()));
        ok = false;
      }
      if (ok) out = std::move(values);
    } else {
      T v{};
      if (!read_scalar(n, key, v)) return;
      if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) {
        if (!range.contains(static_cast<double>(v))) {
          error(n.mark, key, "must be " + range.describe() + ", got " + n.scalar);
          return;
        }
      }
      out = v;
    }
  }

  template <class T>
  bool read_scalar(const Node& n, const std::string& key, T& out) {
    const std::string expected = std::is_same_v<T, int64_t> ? "an integer"
                                 : std::is_same_v<T, double> ? "a number"
                                 : std::is_same_v<T, bool>   ? "true or false"
                                                             : "a " + detail::type_name<T>();
    if (n.kind != Node::Kind::Scalar) {
      error(n.mark, key, "expected " + expected + ", got " + std::string(n.kind_name()));
      return false;
    }
    if constexpr (std::is_same_v<T, std::string>) {
      out = n.scalar;
      return true;
    } else if constexpr (SpelledEnum<T>) {
      if (auto v = parse_enum<T>(n.scalar)) {
        out = *v;
        return true;
      }
      std::vector<std::string_view> names;
      for (const auto& entry : EnumTable<T>::values) names.push_back(entry.second);
      std::string msg = "unknown value '" + n.scalar + "'";
      if (auto hint = detail::closest(n.scalar, names); !hint.empty()) msg += " (did you mean '" + hint + "'?)";
      error(n.mark, key, msg + "; expected one of " + enum_choices<T>(", "));
      return false;
    } else {
      if (n.quoted) {
        error(n.mark, key, "expected " + expected + ", got the string \"" + n.scalar + "\" (remove the quotes)");
        return false;
      }
      std::optional<T> v;
      if constexpr (std::is_same_v<T, bool>) v = detail::read_bool(n.scalar);
      else if constexpr (std::is_same_v<T, int64_t>) v = detail::read_int(n.scalar);
      else v = detail::read_double(n.scalar);
      if (!v) {
        error(n.mark, key, "expected " + expected + ", got '" + n.scalar + "'");
        return false;
      }
      if constexpr (std::is_same_v<T, double>) {
        // No key of a recipe means anything infinite or NaN (.inf passes "> 0" otherwise).
        if (!std::isfinite(*v)) {
          error(n.mark, key, "expected a finite number, got '" + n.scalar + "'");
          return false;
        }
      }
      out = *v;
      return true;
    }
  }

  const Node& map_;
  std::vector<Diagnostic>& diags_;
  std::string prefix_;
  std::vector<std::string_view> known_;
};

/// Finds where a dotted key was written, for checks that involve several keys.
class Locator {
 public:
  explicit Locator(const Node& root) : root_(root) {}

  /// The mark of the value at `key`, or of the deepest enclosing section that was written.
  Mark find(std::string_view key) const {
    const Node* cur = &root_;
    Mark best = root_.mark;
    std::size_t start = 0;
    while (cur && cur->kind == Node::Kind::Map) {
      auto dot = key.find('.', start);
      auto part = key.substr(start, dot == std::string_view::npos ? key.size() - start : dot - start);
      const Node* next = cur->find(part);
      if (!next) return best;
      best = (dot == std::string_view::npos) ? next->mark : cur->key_mark(part);
      if (dot == std::string_view::npos) return best;
      cur = next;
      start = dot + 1;
    }
    return best;
  }

  bool given(std::string_view key) const {
    const Node* cur = &root_;
    std::size_t start = 0;
    for (;;) {
      auto dot = key.find('.', start);
      auto part = key.substr(start, dot == std::string_view::npos ? key.size() - start : dot - start);
      if (!cur || cur->kind != Node::Kind::Map || !(cur = cur->find(part))) return false;
      if (dot == std::string_view::npos) return true;
      start = dot + 1;
    }
  }

 private:
  const Node& root_;
};

/// Checks that involve more than one key, or what a stage in the pipeline requires, one method
/// per area. Checks whose keys already failed to bind are skipped: their values are only defaults.
class ConsistencyCheck {
 public:
  ConsistencyCheck(const Recipe& r, const Node& root, std::vector<Diagnostic>& diags)
      : r_(r), loc_(root), diags_(diags) {
    for (const auto& d : diags) bad_.push_back(d.key);
  }

  void run() {
    pipeline_and_run();
    model();
    training();
    devices();
    sections();
    stage_needs();
  }

 private:
  static std::string s(int64_t v) { return std::to_string(v); }

  bool intact(const std::vector<std::string>& keys) const {
    for (const auto& k : keys)
      for (const auto& b : bad_)
        if (b == k || b.starts_with(k + ".") || b.starts_with(k + "[") || k.starts_with(b + ".")) return false;
    return true;
  }
  // A pipeline that failed to bind holds only the default stages: check no stage against it.
  bool has_stage(Stage st) const {
    return intact({"pipeline"}) && std::find(r_.pipeline.begin(), r_.pipeline.end(), st) != r_.pipeline.end();
  }
  // Reports at the first of `keys` the user wrote (that is the value to change), else the first.
  void fail(const std::vector<std::string>& keys, std::string msg) {
    if (!intact(keys)) return;
    std::string_view at = keys.front();
    for (const auto& k : keys)
      if (loc_.given(k)) {
        at = k;
        break;
      }
    diags_.push_back({loc_.find(at), std::string(at), std::move(msg)});
  }
  // A section's own problems, reported at its keys.
  void section_problems(const std::string& section, const std::vector<models::OptionProblem>& problems) {
    for (const auto& problem : problems) {
      std::vector<std::string> keys;
      for (const auto& k : problem.keys) keys.push_back(section + "." + k);
      fail(keys, problem.message);
    }
  }

  void pipeline_and_run() {
    if (r_.pipeline.empty()) fail({"pipeline"}, "lists no stage; name at least one of " + enum_choices<Stage>(", "));
    for (std::size_t i = 0; i < r_.pipeline.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (r_.pipeline[i] == r_.pipeline[j])
          fail({"pipeline"}, "stage '" + std::string(enum_name(r_.pipeline[i])) + "' is listed twice");
    if (r_.run.out_dir.empty()) fail({"run.out_dir"}, "must not be empty");
    if (r_.run.name.empty()) fail({"run.name"}, "must not be empty");
  }

  // The model's shape, and what the tokenizer, the task and the data ask of it.
  void model() {
    const auto& m = r_.model;
    section_problems("model", m.problems(m.arch, /*complete=*/false));
    if (m.arch == Arch::Gpt && m.vocab_size > 0 && r_.tokenizer.path.empty() && m.vocab_size < r_.tokenizer.vocab_size)
      fail({"model.vocab_size", "tokenizer.vocab_size"},
           "vocab_size (" + s(m.vocab_size) + ") is smaller than tokenizer.vocab_size (" + s(r_.tokenizer.vocab_size) +
               "); use 0 to take the tokenizer's size");
    // The architecture of the kind that trains the task (src/models/kinds.cpp).
    Arch needed = m.arch;
    for (const auto& kind : models::model_kinds())
      if (kind.trains(enum_name(r_.train.task))) needed = kind.arch;
    if (m.arch != needed)
      fail({"train.task", "model.arch"}, "task " + std::string(enum_name(r_.train.task)) + " needs model.arch: " +
                                             std::string(enum_name(needed)) + " (got " +
                                             std::string(enum_name(m.arch)) + ")");
    if (r_.data.seq_len > m.max_seq_len)
      fail({"data.seq_len", "model.max_seq_len"},
           "seq_len (" + s(r_.data.seq_len) + ") exceeds model.max_seq_len (" + s(m.max_seq_len) + ")");
  }

  // The schedule against the training length, and the checkpoint to resume.
  void training() {
    if (r_.schedule.warmup_steps > r_.train.max_steps)
      fail({"schedule.warmup_steps", "train.max_steps"}, "warmup_steps (" + s(r_.schedule.warmup_steps) +
                                                             ") exceeds train.max_steps (" + s(r_.train.max_steps) +
                                                             ")");
    if (const auto& ac = r_.train.activation_checkpointing; !nn::checkpoint_interval(ac)) {
      std::string msg = "must be none, blocks or every_<n> (n >= 1), got '" + ac + "'";
      if (auto hint = detail::closest(ac, {"none", "blocks"}); !hint.empty()) msg += " (did you mean '" + hint + "'?)";
      fail({"train.activation_checkpointing"}, msg);
    }
    if (const auto& resume = r_.train.resume; resume != "none" && resume != "auto") {
      std::error_code ec;
      if (resume.empty() || !std::filesystem::is_directory(resume, ec)) {
        std::string msg = "must be none, auto or an existing checkpoint directory, got '" + resume + "'";
        if (auto hint = detail::closest(resume, {"none", "auto"}); !hint.empty())
          msg += " (did you mean '" + hint + "'?)";
        fail({"train.resume"}, msg);
      }
    }
  }

  void devices() {
    if (r_.train.precision == Precision::Fp16 && r_.run.device == Device::Cpu)
      fail({"train.precision", "run.device"}, "fp16 needs CUDA; use bf16 on the CPU");
    if (r_.train.cuda_graphs && r_.run.device == Device::Cpu)
      fail({"train.cuda_graphs", "run.device"}, "CUDA graphs need CUDA; set train.cuda_graphs: false on the CPU");
    if (r_.train.cuda_graphs && r_.train.activation_checkpointing != "none")
      fail({"train.cuda_graphs", "train.activation_checkpointing"},
           "a block checkpointed by train.activation_checkpointing replays its random-number state in the backward, "
           "which a CUDA graph cannot capture; turn one of them off");
    if (r_.train.cuda_graphs && r_.train.task != Task::CausalLm)
      fail({"train.cuda_graphs", "train.task"},
           "CUDA graphs capture causal_lm's micro-step only (the masked_lm and classification losses select their "
           "scored rows on the host); set train.cuda_graphs: false");
    if (r_.train.loss_on != LossOn::Assistant && r_.train.task != Task::Sft)
      fail({"train.loss_on", "train.task"}, "train.loss_on chooses the targets of sft examples; train.task is " +
                                                std::string(enum_name(r_.train.task)));
    if (r_.train.task == Task::Dpo)
      for (const auto& [key, value] : {std::pair{"model.dropout", r_.model.dropout},
                                       std::pair{"model.attn_dropout", r_.model.attn_dropout},
                                       std::pair{"adapters.dropout", r_.adapters.dropout}})
        if (value > 0)
          fail({key}, fmt::format("dpo trains without dropout (the reference is scored without it, and trl's "
                                  "disable_dropout does the same): set {}: 0 (it is {})",
                                  key, value));
    if (r_.train.task == Task::Dpo && r_.distributed.sharded())
      fail({"train.task", "distributed.strategy"},
           "dpo scores its reference with a whole copy of the starting model on each rank: use strategy ddp");
    if (r_.data.packing && r_.train.task != Task::Sft)
      fail({"data.packing", "train.task"}, "data.packing packs sft examples; train.task is " +
                                               std::string(enum_name(r_.train.task)) +
                                               " (causal_lm reads windows of the token stream, already full)");
    adapters();
    if (r_.distributed.backend == Backend::Nccl && r_.run.device == Device::Cpu)
      fail({"distributed.backend", "run.device"}, "nccl needs CUDA devices; use mpi with run.device: cpu");
    if (r_.distributed.strategy == dist::Strategy::Fsdp && r_.train.cuda_graphs)
      fail({"distributed.strategy", "train.cuda_graphs"},
           "fsdp gathers and frees parameters around each block, outside any graph; set train.cuda_graphs: false");
    if (const auto& d = r_.distributed; d.param_dtype != dist::ParamDtype::Fp32) {
      const auto want = d.param_dtype == dist::ParamDtype::Bf16 ? Precision::Bf16 : Precision::Fp16;
      if (d.resolved_strategy() != dist::Strategy::Fsdp)
        fail({"distributed.param_dtype", "distributed.strategy"},
             "only fsdp gathers parameters; param_dtype " + std::string(enum_name(d.param_dtype)) +
                 " needs strategy fsdp (or param_dtype: fp32)");
      else if (r_.train.precision != want)
        fail({"distributed.param_dtype", "train.precision"},
             "blocks gathered in " + std::string(enum_name(d.param_dtype)) + " compute in it: set train.precision: " +
                 std::string(enum_name(want)) + ", or param_dtype: fp32");
    }
    if (const auto& d = r_.distributed; d.shard_optimizer && d.strategy != dist::Strategy::Ddp &&
                                        d.strategy != dist::Strategy::Zero1)
      fail({"distributed.shard_optimizer", "distributed.strategy"},
           "shard_optimizer: true means strategy zero1, and strategy says " + std::string(enum_name(d.strategy)) +
               "; remove shard_optimizer (strategy alone chooses)");
  }

  void adapters() {
    const auto& a = r_.adapters;
    if (!a.on()) return;
    const std::string kind(enum_name(a.kind));
    if (r_.train.init_from.empty())
      fail({"adapters.kind", "train.init_from"}, kind + " adapters train on a frozen model: set train.init_from to "
                                                 "it (a Hugging Face directory, a lathe checkpoint or model file)");
    if (r_.model.arch != models::Arch::Gpt)
      fail({"adapters.kind", "model.arch"}, kind + " adapters train GPT models here (causal_lm, sft, dpo)");
    if (r_.distributed.sharded())
      fail({"adapters.kind", "distributed.strategy"},
           "the adapters are all that trains, and they are small: run them with strategy ddp (nothing to shard)");
    if (a.kind == adapters::AdapterKind::Qlora) {
      if (nn::quant_scheme(a.base_method).quantizes_activations)
        fail({"adapters.base_method"}, std::string(enum_name(a.base_method)) +
                                           " quantizes the activations too; QLoRA's base is weight-only: "
                                           "int4_weight_only or int8_weight_only");
      if (r_.run.device == Device::Cuda)
        fail({"adapters.kind", "run.device"}, "qlora's quantized base runs on lathe's CPU kernels; use lora on CUDA");
      compress::QuantizeOptions q;
      q.method = a.base_method;
      q.group_size = a.base_group_size;
      for (const auto& p : q.problems())
        if (std::find(p.keys.begin(), p.keys.end(), "group_size") != p.keys.end())
          fail({"adapters.base_group_size"}, p.message);
    }
  }

  // Pruning, quantization and export.
  void sections() {
    section_problems("prune", r_.prune.problems());
    section_problems("quantize", r_.quantize.problems());
    section_problems("prune", r_.prune.gate.problems());
    section_problems("quantize", r_.quantize.gate.problems());
    section_problems("export", r_.export_.gate.problems());
    if (r_.export_.gate.enabled() && !r_.export_.writes(ExportFormat::Hf))
      fail({"export.gate.metric", "export.format"},
           "export.gate measures the exported Hugging Face directory read back: set export.format to hf or both");
    if (r_.eval.every > 0 && r_.eval.tasks.empty())
      fail({"eval.every"}, "runs eval.tasks during training, and eval.tasks is empty");
    if (r_.eval.every > 0 && r_.distributed.strategy == dist::Strategy::Fsdp)
      fail({"eval.every", "distributed.strategy"},
           "eval.tasks run on rank 0's model, and fsdp shards it; evaluate the checkpoints with lathe eval instead");
    for (const auto* g : {&r_.prune.gate, &r_.quantize.gate, &r_.export_.gate})
      if (g->enabled() && !g->task.empty() && r_.eval.tasks.empty())
        fail({"eval.tasks"}, "a gate on task '" + g->task + "' needs the task's file in eval.tasks");
    if (r_.export_.format.empty()) fail({"export.format"}, "names no format (onnx, hf, gguf or both)");
    if (r_.export_.writes(ExportFormat::Gguf) && r_.export_.gguf_type.empty())
      fail({"export.gguf_type"}, "names no type (auto, f32, f16, bf16, q8_0, q4_0 or q4_1)");
    if (r_.export_.writes(ExportFormat::Hf)) try {
        r_.export_.max_shard_bytes();
      } catch (const std::invalid_argument& e) {
        fail({"export.max_shard_size"}, e.what());
      }
    if (r_.export_.writes(ExportFormat::Onnx)) {
      export_::OnnxOptions onnx;
      onnx.opset = r_.export_.opset;
      section_problems("export", onnx.problems());
    }
    if (r_.quantize.source == ModelSource::Quantized)
      fail({"quantize.source"}, "a quantized model cannot be quantized again; use checkpoint, pruned or auto");
  }

  // What the stages of the pipeline need.
  void stage_needs() {
    if (has_stage(Stage::Data) && r_.data.train_files.empty())
      fail({"data.train_files"}, "missing required key: the data stage needs the training corpus (data.train_files)");
    if (has_stage(Stage::Tokenizer) && intact({"data.train_files", "tokenizer.path"}) && r_.tokenizer.path.empty() &&
        r_.tokenizer.train_files.empty() && r_.data.train_files.empty())
      fail({"tokenizer.train_files"},
           "missing required key: the tokenizer stage needs tokenizer.train_files (or data.train_files), or an "
           "existing tokenizer in tokenizer.path");
    const auto& specials = r_.tokenizer.special_tokens;
    if (has_stage(Stage::Tokenizer) && r_.tokenizer.path.empty() && r_.tokenizer.type == TokenizerType::WordPiece &&
        std::find(specials.begin(), specials.end(), "[UNK]") == specials.end())
      fail({"tokenizer.special_tokens", "tokenizer.type"},
           "a WordPiece tokenizer needs [UNK] among its special tokens, e.g. [\"[PAD]\", \"[UNK]\", \"[CLS]\", "
           "\"[SEP]\", \"[MASK]\"]");
    if (has_stage(Stage::Generate) && r_.generate.prompts.empty())
      fail({"generate.prompts"}, "the generate stage needs at least one prompt (\"\" starts from nothing)");
    if (has_stage(Stage::Generate) && r_.model.arch != Arch::Gpt)
      fail({"pipeline", "model.arch"}, "the generate stage needs a gpt model");
  }

  const Recipe& r_;
  Locator loc_;
  std::vector<Diagnostic>& diags_;
  std::vector<std::string> bad_;
};

/// Problems sorted by file (in order of first appearance), then position.
void sort_diagnostics(std::vector<Diagnostic>& diags) {
  std::map<std::string, std::size_t> rank;
  for (const auto& d : diags) rank.emplace(d.mark.file, rank.size());
  std::stable_sort(diags.begin(), diags.end(), [&](const Diagnostic& a, const Diagnostic& b) {
    return std::tuple(rank[a.mark.file], a.mark.line, a.mark.col) < std::tuple(rank[b.mark.file], b.mark.line, b.mark.col);
  });
}

/// Adds `key: value` to the map `section`, marked at `at`, unless the map sets `key` itself.
void put_unset(Node& section, std::string_view key, std::string value, const Mark& at) {
  if (section.find(key)) return;
  Node n;
  n.kind = Node::Kind::Scalar;
  n.scalar = std::move(value);
  n.mark = at;
  section.entries.push_back({std::string(key), at, std::move(n)});
}

/// model.preset: adds the preset's values for every model key the recipe does not set, marked
/// at the preset's value so that a problem they cause points there.
void apply_preset(Node& root, std::vector<Diagnostic>& diags) {
  Node* model = root.find("model");
  Node* preset = model && model->kind == Node::Kind::Map ? model->find("preset") : nullptr;
  // Absent or empty (no preset), or not a string (the binder reports the type).
  if (!preset || preset->kind != Node::Kind::Scalar || preset->scalar.empty()) return;
  const auto* p = models::find_preset(preset->scalar);
  if (!p) {
    std::vector<std::string_view> names;
    for (const auto& q : models::kModelPresets) names.push_back(q.name);
    std::string msg = "unknown preset '" + preset->scalar + "'";
    if (auto hint = detail::closest(preset->scalar, names); !hint.empty()) msg += " (did you mean '" + hint + "'?)";
    diags.push_back({preset->mark, "model.preset", msg + "; presets: " + join_names(names)});
    return;
  }
  const Mark at = preset->mark;
  auto put = [&](std::string_view key, std::string value) { put_unset(*model, key, std::move(value), at); };
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  put("arch", std::string(enum_name(p->arch)));
  put("n_layer", std::to_string(p->n_layer));
  put("n_head", std::to_string(p->n_head));
  put("d_model", std::to_string(p->d_model));
  put("max_seq_len", std::to_string(p->max_seq_len));
  put("vocab_size", std::to_string(p->vocab_size));
  put("activation", std::string(enum_name(p->activation)));
  put("norm_eps", num(p->norm_eps));
}

/// The recipe keys of a model of `arch`.
struct ModelKeys {
  models::Arch arch;
  std::vector<std::string_view> keys;
  template <class T>
  void field(std::string_view key, T&, std::string_view, Range, Traits traits) {
    if (traits.recipe_key && models::applies_to(traits, arch)) keys.push_back(key);
  }
};

/// The model a Hugging Face train.init_from holds.
struct InitFrom {
  std::string dir;
  models::Arch arch;
  models::ModelOptions options;
};

/// train.init_from a Hugging Face directory: its config.json gives every model key the recipe
/// (or its preset) does not set, model.arch included, marked at init_from's value. A key the
/// recipe or its preset sets to another value than the checkpoint's is refused by name below
/// (check_init_from), and again when the model is adopted (train::adopt).
std::optional<InitFrom> apply_init_from(Node& root, std::vector<Diagnostic>& diags) {
  Node* train = root.find("train");
  Node* from = train && train->kind == Node::Kind::Map ? train->find("init_from") : nullptr;
  if (!from || from->kind != Node::Kind::Scalar || from->scalar.empty()) return std::nullopt;
  const Mark at = from->mark;  // root's entries may grow below
  std::string dir = from->scalar;
  // An adapter directory (a LoRA run's checkpoint, a PEFT adapter) starts from its base.
  try {
    for (int hops = 0; hops < 8 && adapters::is_adapter_dir(dir); ++hops) {
      std::filesystem::path base = adapters::read_peft_config(dir).base_model;
      if (base.is_relative() && !std::filesystem::exists(base)) base = std::filesystem::path(dir) / base;
      dir = base.string();
    }
  } catch (const Error& e) {
    diags.push_back({at, "train.init_from", e.what()});
    return std::nullopt;
  }
  if (!models::is_hf_model_dir(dir)) return std::nullopt;
  models::ModelOptions options;
  models::Arch arch = models::Arch::Gpt;
  try {
    arch = models::read_hf_model_type(dir) == "bert" ? models::Arch::Bert : models::Arch::Gpt;
    options = arch == models::Arch::Bert ? models::read_hf_bert_config(dir) : models::read_hf_gpt_config(dir);
  } catch (const Error& e) {
    diags.push_back({at, "train.init_from", e.what()});
    return std::nullopt;
  }
  Node* model = root.find("model");
  if (!model) {
    root.entries.push_back({"model", at, Node{}});
    model = &root.entries.back().value;
    model->kind = Node::Kind::Map;
    model->mark = at;
  }
  if (model->kind != Node::Kind::Map) return std::nullopt;  // the binder reports the type
  auto put = [&](std::string_view key, std::string value) { put_unset(*model, key, std::move(value), at); };
  put("arch", std::string(enum_name(arch)));
  ModelKeys keys{arch, {}};
  visit(keys, options);
  // vocab_size stays the recipe's: left at 0, the tokenizer's size, or the checkpoint's where
  // that is larger (a padded embedding stays padded).
  for (const auto key : keys.keys)
    if (key != "vocab_size") put(key, models::option_value(options, key));
  return InitFrom{dir, arch, options};
}

/// A model key the recipe (or its preset) sets to another value than the train.init_from
/// checkpoint has, reported where the recipe is read (lathe recipe check too), at the key.
void check_init_from(const Recipe& recipe, const InitFrom& from, const Node& root, std::vector<Diagnostic>& diags) {
  if (recipe.model.arch != from.arch) return;  // the arch itself was the checkpoint's or is reported
  const Node* model = root.find("model");
  const Node* preset = model ? model->find("preset") : nullptr;
  std::vector<std::string> reported;  // keys already refused for another reason
  for (const auto& d : diags) reported.push_back(d.key);
  for (const auto& diff :
       models::architecture_differences(from.arch, from.options, recipe.model.options(from.options.vocab_size))) {
    const auto colon = diff.find(':');
    const auto key = diff.substr(0, colon);  // "model.n_layer"
    if (std::find(reported.begin(), reported.end(), key) != reported.end()) continue;
    const auto leaf = key.substr(key.find('.') + 1);
    // A key the recipe does not write came from its preset.
    const bool from_preset = preset && preset->kind == Node::Kind::Scalar && model->key_mark(leaf).line == preset->mark.line &&
                             model->key_mark(leaf).col == preset->mark.col;
    const auto fix = from_preset ? fmt::format("model.preset {} sets it; leave the preset out", preset->scalar)
                                 : std::string("set the key to the checkpoint's value or leave it out");
    diags.push_back({model ? model->key_mark(leaf) : Mark{}, key,
                     fmt::format("train.init_from {} has another model: {}; {}", from.dir, diff.substr(colon + 2), fix)});
  }
}

Recipe bind(Node root, const std::vector<std::string>& overrides, std::vector<Diagnostic> diags,
            std::vector<std::filesystem::path> sources) {
  for (const auto& o : overrides) detail::apply_override(root, o, diags);
  apply_preset(root, diags);
  const auto init_from = apply_init_from(root, diags);
  // Unreadable files and syntax errors stop here: binding a partial tree would only add noise.
  // A duplicate key, a missing base or a second document leave a whole tree: it is still bound,
  // so every other problem of the file is reported with them.
  const bool fatal = std::any_of(diags.begin(), diags.end(), [](const Diagnostic& d) { return d.fatal; });
  if (!fatal) {
    Recipe recipe;
    Binder binder(root, diags);
    visit(binder, recipe);
    binder.report_unknown();
    ConsistencyCheck(recipe, root, diags).run();
    if (init_from) check_init_from(recipe, *init_from, root, diags);
    recipe.sources = std::move(sources);
    if (diags.empty()) return recipe;
  }
  sort_diagnostics(diags);
  throw RecipeError(std::move(diags));
}

}  // namespace

Recipe load_recipe(const std::filesystem::path& path, const std::vector<std::string>& overrides) {
  std::vector<Diagnostic> diags;
  std::vector<std::filesystem::path> read;
  Node root = detail::load_tree(path, diags, read);
  return bind(std::move(root), overrides, std::move(diags), std::move(read));
}

Recipe parse_recipe(std::string_view yaml, const std::string& name, const std::vector<std::string>& overrides,
                    const std::filesystem::path& base_dir) {
  std::vector<Diagnostic> diags;
  std::vector<std::filesystem::path> read;
  Node root = detail::load_tree_from_text(yaml, name, base_dir, diags, read);
  return bind(std::move(root), overrides, std::move(diags), std::move(read));
}

bool ExportConfig::writes(ExportFormat f) const {
  for (const auto g : format)
    if (g == f || (g == ExportFormat::Both && (f == ExportFormat::Onnx || f == ExportFormat::Hf))) return true;
  return false;
}

int64_t ExportConfig::max_shard_bytes() const {
  static const std::vector<std::pair<std::string, int64_t>> units{
      {"KiB", int64_t{1} << 10}, {"MiB", int64_t{1} << 20}, {"GiB", int64_t{1} << 30},
      {"KB", 1000},              {"MB", 1000 * 1000},       {"GB", 1000 * 1000 * 1000}, {"", 1}};
  const auto& text = max_shard_size;
  for (const auto& [unit, scale] : units) {
    if (!text.ends_with(unit)) continue;
    const auto digits = text.substr(0, text.size() - unit.size());
    const bool number = !digits.empty() && digits.size() <= 9 &&
                        std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); });
    if (!number) break;
    return std::stoll(digits) * scale;  // at most 10^9 GiB: no overflow
  }
  throw std::invalid_argument("'" + text + "' is not a size (bytes, or a whole number of KB, MB, GB, KiB, MiB or "
                              "GiB, as \"500MB\"; 0: one file)");
}

GateConfig::Limit GateConfig::limit() const {
  const bool increase = !max_increase.empty();
  std::string text = increase ? max_increase : max_drop;
  const char* key = increase ? "max_increase" : "max_drop";
  Limit out;
  out.increase = increase;
  double scale = 1;
  if (text.ends_with("%")) {
    out.relative = true;
    scale = 0.01;
    text.pop_back();
  } else if (text.ends_with("pt")) {
    scale = 0.01;
    text.resize(text.size() - 2);
  }
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !(v >= 0) || !std::isfinite(v))
    throw std::invalid_argument(std::string(key) + ": '" + (increase ? max_increase : max_drop) +
                                "' is not a limit (a number >= 0 in the metric's units, \"2%\" of the source's figure, "
                                "or \"1pt\" for 0.01)");
  out.amount = v * scale;
  return out;
}

std::vector<models::OptionProblem> GateConfig::problems() const {
  std::vector<models::OptionProblem> out;
  if (!enabled()) {
    for (const auto& [key, value] : {std::pair<const char*, const std::string&>{"task", task},
                                     {"filter", filter},
                                     {"max_increase", max_increase},
                                     {"max_drop", max_drop}})
      if (!value.empty()) out.push_back({{std::string("gate.") + key}, "has no effect without gate.metric"});
    return out;
  }
  if (max_increase.empty() == max_drop.empty()) {
    out.push_back({{"gate.max_increase", "gate.max_drop"}, "a gate needs one limit: max_increase or max_drop"});
    return out;
  }
  try {
    limit();
  } catch (const std::invalid_argument& e) {
    out.push_back({{std::string("gate.") + (max_increase.empty() ? "max_drop" : "max_increase")}, e.what()});
  }
  if (task.empty() && !metric.starts_with("val_"))
    out.push_back({{"gate.metric"}, "'" + metric + "': a validation metric is named val_<metric> (val_loss, "
                                    "val_perplexity, val_accuracy); a task metric needs gate.task"});
  if (!task.empty() && metric.starts_with("val_"))
    out.push_back({{"gate.metric"}, "'" + metric + "' is a validation metric; leave gate.task empty or name a metric "
                                    "of the task (acc, acc_norm, perplexity, ...)"});
  if (task.empty() && !filter.empty()) out.push_back({{"gate.filter"}, "a filter belongs to a task metric (gate.task)"});
  // A loss or perplexity worsens by rising, the rest by falling: the other limit would pass anything.
  const bool lower_better = metric.find("loss") != std::string::npos ||
                            metric.find("perplexity") != std::string::npos || metric.ends_with("bits_per_byte");
  if (lower_better && !max_drop.empty())
    out.push_back({{"gate.max_drop"}, "'" + metric + "' is better lower: bound its rise with max_increase"});
  if (!lower_better && !max_increase.empty())
    out.push_back({{"gate.max_increase"}, "'" + metric + "' is better higher: bound its fall with max_drop"});
  return out;
}

}  // namespace lathe::recipe
