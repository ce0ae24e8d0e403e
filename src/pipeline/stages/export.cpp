// The export stage: ONNX graphs and / or a Hugging Face directory.

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include <unistd.h>

#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/build_info.hpp"
#include "lathe/core/error.hpp"
#include "lathe/eval/scorer.hpp"
#include "lathe/export/compressed_tensors.hpp"
#include "lathe/export/genai.hpp"
#include "lathe/export/gguf_model.hpp"
#include "lathe/export/graph.hpp"
#include "lathe/export/onnx.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/task.hpp"
#include "lathe/pipeline/provenance.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "lathe/train/evaluate.hpp"
#include "../gate.hpp"
#include "../stage_support.hpp"

namespace lathe::pipeline {
namespace fs = std::filesystem;
using recipe::ExportFormat;
using recipe::Stage;

namespace {

bool writes_onnx(const recipe::Recipe& r) { return r.export_.writes(ExportFormat::Onnx); }
bool writes_hf(const recipe::Recipe& r) { return r.export_.writes(ExportFormat::Hf); }
bool writes_gguf(const recipe::Recipe& r) { return r.export_.writes(ExportFormat::Gguf); }

/// Each GGUF file export.gguf_type asks for (nullopt: auto), in order, once each.
std::vector<std::optional<export_::GgmlType>> gguf_types(const recipe::Recipe& r) {
  std::vector<std::optional<export_::GgmlType>> types;
  for (const auto t : r.export_.gguf_type) {
    std::optional<export_::GgmlType> type;
    if (t != recipe::GgufType::Auto) type = *parse_enum<export_::GgmlType>(enum_name(t));
    if (std::find(types.begin(), types.end(), type) == types.end()) types.push_back(type);
  }
  return types;
}

std::string gguf_name(const std::optional<export_::GgmlType>& type) {
  return type ? export_::gguf_file_name(*type) : "model.gguf";
}

/// The file the stage's freshness is judged by: the first file every export of the recipe's
/// formats writes that is missing (a partly deleted export is made again), else its first
/// format's main file.
fs::path freshness_file(const recipe::Recipe& r, const fs::path& out, const fs::path& tokenizer_out) {
  std::vector<fs::path> files;
  if (writes_onnx(r)) files.push_back(out / "model.onnx");
  if (writes_hf(r)) files.push_back(out / "config.json");
  if (writes_gguf(r))
    for (const auto& type : gguf_types(r)) files.push_back(out / gguf_name(type));
  if (writes_hf(r) && !fs::exists(out / "model.safetensors")) files.push_back(out / "model.safetensors.index.json");
  files.push_back(tokenizer_out);
  for (const auto& f : files)
    if (!fs::exists(f)) return f;
  return files.front();
}

/// Names the export writes whatever the model's size: each is checked before the first file
/// is written, so a foreign file with one of them leaves the directory as it was.
void check_names_free(const recipe::Recipe& r, const models::AnyModel& model, bool pools, const fs::path& out,
                      const fs::path& tokenizer_out) {
  std::vector<std::string> names;
  const bool gpt = model.arch() == models::Arch::Gpt;
  if (writes_onnx(r)) names.push_back("model.onnx");
  if (writes_onnx(r) && gpt) names.insert(names.end(), {"genai_config.json", "tokenizer_config.json"});
  if (writes_hf(r)) names.insert(names.end(), {"config.json", "model.safetensors", "model.safetensors.index.json"});
  if (writes_hf(r) && pools)
    names.insert(names.end(), {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"});
  for (const auto& name : names) io::check_claimable(out / name);
  io::check_claimable(tokenizer_out);
}

/// The Hugging Face directory the exported model came from: the source itself, else
/// train.init_from; empty when neither is one.
fs::path hf_origin(const recipe::Recipe& r, const fs::path& src) {
  if (models::is_hf_model_dir(src)) return src;
  if (!r.train.init_from.empty() && models::is_hf_model_dir(r.train.init_from)) return r.train.init_from;
  return {};
}

/// What goes beside the weights of a Hugging Face directory when the model's tokenizer is the
/// one the origin directory holds.
constexpr std::array kCarried{"generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
                              "chat_template.jinja"};

/// Writes the Hugging Face directory into a staging directory, then moves each file into `out`
/// once every name is known to be lathe's to write: a foreign file stops the export before any
/// file is replaced. Returns the names written.
std::vector<std::string> write_hf(const models::AnyModel& model, const fs::path& out,
                                  const models::HfWriteOptions& options,
                                  const std::function<void(const fs::path& staging)>& rewrite) {
  const auto staging = out / ".lathe-hf-staging";
  io::claim(staging);  // a directory of that name that lathe did not make stops it
  fs::remove_all(staging);
  try {
    const auto files = models::save_hf(model, staging, options);
    rewrite(staging);
    // Either weights layout shadows the other where both are: a foreign one of them stops it too.
    for (const auto* f : {"model.safetensors", "model.safetensors.index.json"}) io::check_claimable(out / f);
    for (const auto& f : files) io::check_claimable(out / f);
    for (const auto& f : files) {
      io::claim(out / f);
      fs::rename(staging / f, out / f);
    }
    io::remove_owned(staging);
    return files;
  } catch (...) {
    io::remove_owned(staging);
    throw;
  }
}

/// export.hf_dtype: the storage dtype of float weights.
at::ScalarType float_storage(const recipe::Recipe& r, const fs::path& src) {
  const auto origin = hf_origin(r, src);
  const auto dtype = r.export_.hf_dtype;
  return dtype == recipe::HfDtype::Auto       ? (origin.empty() ? at::kFloat : models::hf_storage_dtype(origin))
         : dtype == recipe::HfDtype::BFloat16 ? at::kBFloat16
         : dtype == recipe::HfDtype::Float16  ? at::kHalf
                                              : at::kFloat;
}

/// A BERT encoder's sentence embedding: export.pooling, or with auto the sentence-transformers
/// modules of the Hugging Face directory the model came from.
struct Pooled {
  export_::Pooling pooling = export_::Pooling::None;
  bool normalize = false;
};

Pooled pooling_of(const recipe::Recipe& r, const fs::path& src) {
  const auto p = r.export_.pooling;
  if (p != recipe::Pooling::Auto)
    return {*parse_enum<export_::Pooling>(enum_name(p)), p != recipe::Pooling::None && r.export_.normalize};
  const auto origin = hf_origin(r, src);
  if (origin.empty() || !fs::exists(origin / "1_Pooling" / "config.json")) return {};
  const auto file = origin / "1_Pooling" / "config.json";
  const auto config = io::read_json(file);
  Pooled out;
  if (config.value("pooling_mode_mean_tokens", false)) out.pooling = export_::Pooling::Mean;
  else if (config.value("pooling_mode_cls_token", false)) out.pooling = export_::Pooling::Cls;
  else
    throw Error(file.string() + ": a pooling mode lathe does not export (it exports mean and cls); set "
                                "export.pooling");
  if (fs::exists(origin / "modules.json"))
    for (const auto& m : io::read_json(origin / "modules.json"))
      if (m.value("type", "") == "sentence_transformers.models.Normalize") out.normalize = true;
  return out;
}

/// sentence-transformers' files for an encoder exported with a pooling (SentenceTransformer(dir)
/// then embeds as the ONNX graph's sentence_embedding does).
std::vector<std::string> sentence_transformers_files(const Pooled& pooled, const models::AnyModel& model,
                                                     const fs::path& origin, const fs::path& out) {
  if (pooled.pooling == export_::Pooling::None || model.kind() != models::ModelKind::BertEncoder) return {};
  nlohmann::ordered_json modules = nlohmann::ordered_json::array();
  modules.push_back({{"idx", 0}, {"name", "0"}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}});
  modules.push_back({{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}});
  if (pooled.normalize)
    modules.push_back(
        {{"idx", 2}, {"name", "2"}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}});
  const nlohmann::ordered_json pooling{{"word_embedding_dimension", model.options().d_model},
                                       {"pooling_mode_cls_token", pooled.pooling == export_::Pooling::Cls},
                                       {"pooling_mode_mean_tokens", pooled.pooling == export_::Pooling::Mean},
                                       {"pooling_mode_max_tokens", false},
                                       {"pooling_mode_mean_sqrt_len_tokens", false}};
  // The origin's truncation length where it has one (all-MiniLM-L6-v2: 256 of its 512 positions).
  nlohmann::ordered_json bert{{"max_seq_length", model.options().max_seq_len}, {"do_lower_case", false}};
  if (!origin.empty() && fs::exists(origin / "sentence_bert_config.json")) {
    const auto theirs = io::read_json(origin / "sentence_bert_config.json");
    bert["max_seq_length"] = theirs.value("max_seq_length", model.options().max_seq_len);
    bert["do_lower_case"] = theirs.value("do_lower_case", false);
  }
  const std::vector<std::pair<std::string, std::string>> files{{"modules.json", modules.dump(2)},
                                                               {"1_Pooling/config.json", pooling.dump(2)},
                                                               {"sentence_bert_config.json", bert.dump(2)}};
  for (const auto& [name, text] : files) io::check_claimable(out / name);
  std::vector<std::string> names;
  for (const auto& [name, text] : files) {
    io::claim(out / name);
    io::write_file_atomic(out / name, text);
    names.push_back(name);
  }
  return names;
}

export_::OnnxOptions onnx_options(const recipe::Recipe& r) {
  export_::OnnxOptions o;
  o.opset = r.export_.opset;
  o.dynamic_axes = r.export_.dynamic_axes;
  o.attention = *parse_enum<export_::OnnxAttention>(enum_name(r.export_.onnx_attention));
  return o;
}

/// The Hugging Face directory: the model's files, and the origin's settings beside them.
void export_hf(const recipe::Recipe& r, const fs::path& src, const fs::path& tokenizer, const models::AnyModel& model,
               const fs::path& out, std::vector<std::string>& parts, std::vector<std::string>& notes) {
  // Quantized layers go out in the compressed-tensors layout where the family allows it, else as
  // the float values their codes stand for.
  const bool quantized = !models::quantized_layers(model).empty();
  const auto problem = quantized ? export_::compressed_tensors_problem(model) : std::string();
  const auto layers = quantized && problem.empty() ? export_::quantized_weights(model)
                                                   : std::map<std::string, nn::QuantizedWeight>{};
  if (quantized && !problem.empty())
    notes.push_back("quantized weights written as the float values their codes stand for (" + problem + ")");
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) lin->dequantize();
  const auto origin = hf_origin(r, src);
  models::HfWriteOptions options;
  options.max_shard_bytes = r.export_.max_shard_bytes();
  options.dtype = float_storage(r, src);
  if (!origin.empty()) options.family = models::read_hf_model_type(origin);
  // The compressed-tensors names follow the family save_hf writes (a Phi-3's fused qkv_proj).
  if (!options.family.empty() && model.arch() == models::Arch::Gpt)
    model.as<models::Gpt>()->hf_family = options.family;
  // The origin's generation and tokenizer settings (chat template, special tokens) hold for
  // the origin's tokenizer only.
  const auto where = [](const fs::path& p) { return fs::weakly_canonical(fs::absolute(p)); };
  std::vector<std::string> carried;
  for (const auto* name : kCarried)
    if (!origin.empty() && fs::exists(origin / name)) carried.push_back(name);
  if (!carried.empty() && where(tokenizer).parent_path() != where(origin)) {
    notes.push_back(fmt::format("{}'s {} not carried: the recipe's tokenizer {} is not the one beside them",
                                origin.string(), fmt::join(carried, ", "), tokenizer.string()));
    carried.clear();
  }
  for (const auto& name : carried) io::check_claimable(out / name);  // before any file is replaced
  const auto rewrite = [&](const fs::path& staging) {
    for (const auto& n : export_::write_compressed_tensors(model, layers, staging)) notes.push_back(n);
  };
  for (const auto& f : write_hf(model, out, options, rewrite)) parts.push_back(f);
  for (const auto& name : carried) {
    io::claim(out / name);
    fs::copy_file(origin / name, out / name, fs::copy_options::overwrite_existing);
    parts.push_back(name);
  }
}

/// The tokenizer.json a GGUF file's vocabulary is read from: the recipe's, or the tokenizer
/// saved as one (a tiktoken file, vocab.json + merges.txt) into a file removed with this object.
class TokenizerJson {
 public:
  TokenizerJson(const recipe::Recipe& r, const fs::path& tokenizer) {
    if (tokenizer.extension() == ".json" && tokenizer.filename() != "vocab.json") {
      path_ = tokenizer;
      return;
    }
    path_ = temporary_ = fs::temp_directory_path() / fmt::format("lathe-gguf-tokenizer-{}.json", ::getpid());
    tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r))->save(path_);
  }
  ~TokenizerJson() {
    std::error_code ec;
    if (!temporary_.empty()) fs::remove(temporary_, ec);
  }
  TokenizerJson(const TokenizerJson&) = delete;
  TokenizerJson& operator=(const TokenizerJson&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_, temporary_;
};

/// What the GGUF files are written with: the tokenizer's ids and template, the float type of
/// export.hf_dtype, and the tokenizer.json (kept while this object lives).
struct GgufPlan {
  export_::GgufOptions options;
  std::unique_ptr<TokenizerJson> vocab;
};

/// The plan, checked against the model (family, rope, tokenizer) without converting a tensor
/// or writing into `out`: made before the export directory is.
GgufPlan plan_gguf(const recipe::Recipe& r, const fs::path& src, const fs::path& tokenizer,
                   const models::AnyModel& model, const fs::path& out) {
  if (model.arch() != models::Arch::Gpt)
    throw Error(fmt::format("export.format: gguf writes GPT models (llama.cpp's decoders); {} is a {}", src.string(),
                            model.kind_name()));
  for (const auto& type : gguf_types(r)) io::check_claimable(out / gguf_name(type));  // before any file is replaced
  const auto tok = tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r));
  GgufPlan plan;
  auto& options = plan.options;
  options.name = r.run.name;
  options.eos_id = tok->eos_id();
  options.bos_token = eval::configured_bos_token(tokenizer).value_or("");
  options.chat_template = train::chat_template_source(r);
  const auto storage = float_storage(r, src);
  options.float_type = storage == at::kBFloat16 ? export_::GgmlType::BF16
                       : storage == at::kHalf   ? export_::GgmlType::F16
                                                : export_::GgmlType::F32;
  plan.vocab = std::make_unique<TokenizerJson>(r, tokenizer);
  options.tokenizer_json = plan.vocab->path();
  export_::check_gguf(model, options);
  return plan;
}

/// The GGUF files of export.gguf_type, each built and then written (the quantized layers are
/// read as they are).
void export_gguf(const recipe::Recipe& r, GgufPlan& plan, const models::AnyModel& model, const fs::path& out,
                 std::vector<std::string>& parts, std::vector<std::string>& notes, std::vector<std::string>& runs) {
  for (const auto& type : gguf_types(r)) {
    plan.options.type = type;
    const auto name = gguf_name(type);
    const auto gguf = export_::export_gguf(model, plan.options);
    io::claim(out / name);
    gguf.file.write(out / name);
    parts.push_back(name);
    for (const auto& note : gguf.notes) notes.push_back(name + ": " + note);
    runs.push_back(fmt::format("llama.cpp ({} {}): llama-cli -m {} -p \"...\"", gguf.arch,
                               export_::ggml_type(gguf.type).name, (out / name).string()));
  }
}

/// transformers' Auto class for the model's kind.
const char* auto_class(models::ModelKind kind) {
  switch (kind) {
    case models::ModelKind::Gpt: return "AutoModelForCausalLM";
    case models::ModelKind::BertMaskedLm: return "AutoModelForMaskedLM";
    case models::ModelKind::BertClassifier: return "AutoModelForSequenceClassification";
    case models::ModelKind::BertEncoder: return "AutoModel";
  }
  return "AutoModel";
}

/// How to run what was written, one line per format.
void add_onnx_hf_runs(const recipe::Recipe& r, const fs::path& out, const models::AnyModel& model,
                      const Pooled& pooled, std::vector<std::string>& runs) {
  if (writes_hf(r)) {
    runs.push_back(fmt::format(
        "transformers: python -c \"from transformers import {0}, AutoTokenizer; m = {0}.from_pretrained('{1}'); "
        "t = AutoTokenizer.from_pretrained('{1}')\"",
        auto_class(model.kind()), out.string()));
    if (model.kind() == models::ModelKind::BertEncoder && pooled.pooling != export_::Pooling::None)
      runs.push_back(fmt::format("sentence-transformers: python -c \"from sentence_transformers import "
                                 "SentenceTransformer; print(SentenceTransformer('{}').encode(['...']))\"",
                                 out.string()));
  }
  if (writes_onnx(r))
    runs.push_back(fmt::format("ONNX Runtime: python -c \"import onnxruntime as ort; "
                               "s = ort.InferenceSession('{}')\"",
                               (out / "model.onnx").string()));
}

/// Files an earlier export of another format or model kind left here would pass for this
/// model's: they go (only those lathe wrote), each said in `notes`.
void remove_earlier(const fs::path& out, const std::vector<std::string>& parts, std::vector<std::string>& notes) {
  std::vector<std::string> earlier{"model.onnx",        "model.onnx.data",
                                   "decoder_with_past_model.onnx", "decoder_with_past_model.onnx.data",
                                   "config.json",       "model.safetensors",
                                   "model.safetensors.index.json", "genai_config.json"};
  earlier.insert(earlier.end(), kCarried.begin(), kCarried.end());
  earlier.insert(earlier.end(), {"model.gguf", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json"});
  for (const auto& entry : io::owned_entries(out))
    if (const auto name = entry.filename().string();
        name.starts_with("model-") && (name.ends_with(".safetensors") || name.ends_with(".gguf")))
      earlier.push_back(name);
  int shards = 0;
  for (const auto& name : earlier)
    if (std::find(parts.begin(), parts.end(), name) == parts.end() && io::remove_owned(out / name)) {
      if (name.ends_with(".safetensors") && name.starts_with("model-")) ++shards;
      else notes.push_back(fmt::format("removed {} of an earlier export", name));
    }
  if (shards > 0) notes.push_back(fmt::format("removed {} safetensors shard(s) of an earlier export", shards));
}

/// The tokenizer beside the model: as tokenizer.json (`as_json`), else the file as read.
void write_tokenizer(const recipe::Recipe& r, const fs::path& tokenizer, const fs::path& tokenizer_out, bool as_json) {
  io::claim(tokenizer_out);
  if (as_json) {
    tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r))->save(tokenizer_out);
    return;
  }
  std::ifstream in(tokenizer, std::ios::binary);
  if (!in) throw Error("cannot read the tokenizer " + tokenizer.string());
  std::ostringstream text;
  text << in.rdbuf();
  io::write_file_atomic(tokenizer_out, text.str());
}

/// tokenizer_config.json for ONNX Runtime GenAI's tokenizer (and transformers'): the origin's
/// when the recipe's tokenizer is the one beside it, else the class, special tokens and chat
/// template of the recipe's.
std::string tokenizer_config(const recipe::Recipe& r, const fs::path& src, const fs::path& tokenizer,
                             const tokenizer::Tokenizer& tok, const models::AnyModel& model) {
  const auto origin = hf_origin(r, src);
  const auto where = [](const fs::path& p) { return fs::weakly_canonical(fs::absolute(p)); };
  if (!origin.empty() && fs::exists(origin / "tokenizer_config.json") &&
      where(tokenizer).parent_path() == where(origin))
    return io::read_json(origin / "tokenizer_config.json").dump(2);
  const std::string eos = !tok.eos_token().empty()                     ? tok.eos_token()
                          : tok.token_to_id("<|endoftext|>") == tok.eos_id() ? std::string("<|endoftext|>")
                                                                              : std::string("[SEP]");
  const auto bos = eval::configured_bos_token(tokenizer).value_or(eos);
  nlohmann::ordered_json c{{"tokenizer_class", "GPT2Tokenizer"}, {"bos_token", bos},       {"eos_token", eos},
                           {"unk_token", eos},                   {"add_bos_token", false}, {"add_prefix_space", false},
                           {"model_max_length", model.options().max_seq_len}};
  if (const auto chat = train::chat_template_source(r); !chat.empty()) c["chat_template"] = chat;
  return c.dump(2);
}

/// The ONNX graphs; for a GPT also ONNX Runtime GenAI's genai_config.json and the
/// tokenizer_config.json its tokenizer reads.
void export_onnx_files(const recipe::Recipe& r, const fs::path& src, const fs::path& tokenizer,
                       const models::AnyModel& model, const Pooled& pooled, const fs::path& out,
                       std::vector<std::string>& parts, std::vector<std::string>& notes,
                       std::vector<std::string>& runs) {
  auto options = onnx_options(r);
  if (model.kind() == models::ModelKind::BertEncoder) {
    options.pooling = pooled.pooling;
    options.normalize = pooled.normalize;
  }
  const auto tok = tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r));
  options.metadata = {{"lathe.version", build::kVersion},
                      {"lathe.recipe_hash", fmt::format("{:016x}", recipe::recipe_hash(r))},
                      {"lathe.tokenizer_fingerprint", fmt::format("{:016x}", tok->fingerprint())},
                      {"lathe.source", src.string()}};
  const auto onnx = export_::export_onnx(model, options);
  std::vector<std::pair<std::string, std::string>> genai;
  if (model.arch() == models::Arch::Gpt) {
    export_::GenAiOptions g;
    g.eos_id = tok->eos_id();
    if (const auto bos = eval::configured_bos_token(tokenizer)) g.bos_id = tok->token_to_id(*bos);
    genai = {{"genai_config.json", export_::genai_config(model, g)},
             {"tokenizer_config.json", tokenizer_config(r, src, tokenizer, *tok, model)}};
  }
  for (const auto& [name, text] : genai) io::check_claimable(out / name);
  notes = onnx.notes;
  for (const auto& f : export_::write_onnx(onnx, out)) parts.push_back(f.filename().string());
  for (const auto& [name, text] : genai) {
    io::claim(out / name);
    io::write_file_atomic(out / name, text);
    parts.push_back(name);
  }
  if (!genai.empty())
    runs.push_back(fmt::format(
        "ONNX Runtime GenAI: python -c \"import onnxruntime_genai as og; m = og.Model('{0}'); t = og.Tokenizer(m); "
        "p = og.GeneratorParams(m); p.set_search_options(max_length=64); g = og.Generator(m, p); "
        "g.append_tokens(t.encode('...')); exec('while not g.is_done(): g.generate_next_token()'); "
        "print(t.decode(g.get_sequence(0)))\"",
        out.string()));
}

}  // namespace

namespace {

/// export.gate: the Hugging Face directory just written, read back, against the model export read.
std::optional<GateVerdict> measure_export_gate(const recipe::Recipe& r, const fs::path& src,
                                               const models::AnyModel& model, const fs::path& out) {
  if (!r.export_.gate.enabled()) return std::nullopt;
  const at::Device device(at::kCPU);
  const auto inputs = measured_task(r, model, src, "export");
  recipe::Recipe on_val = r;
  on_val.eval.split = recipe::Split::Val;
  const auto exported = load_task_model(r, out);
  model.module()->eval();
  exported.module()->eval();
  const auto before = train::evaluate_model(on_val, model, *inputs.data, device).metrics;
  const auto after = train::evaluate_model(on_val, exported, *inputs.data, device).metrics;
  return measure_gate(r, r.export_.gate, "export", before, after, model, exported, train::tokenizer_for_model(r, out));
}

}  // namespace

std::string export_problem(const recipe::Recipe& r) {
  if (!writes_onnx(r)) return {};
  for (const auto& p : onnx_options(r).problems()) return "export." + p.keys.front() + ": " + p.message;
  return {};
}

StageResult run_export_stage(const recipe::Recipe& r, bool force) {
  RunLock lock(r);
  if (const auto problem = export_problem(r); !problem.empty()) throw Error(problem);
  const auto src = source_model(r, r.export_.source, Stage::Export, r.export_.checkpoint);
  const fs::path out = r.export_.path.empty() ? fs::path(r.run.out_dir) / "export" : fs::path(r.export_.path);
  const auto tokenizer = recipe::tokenizer_path(r);
  // A tiktoken file holds no added tokens and vocab.json needs merges.txt beside it: the
  // tokenizer as the model used it goes out as tokenizer.json. Other forms are copied as read.
  const bool as_json = tokenizer.extension() == ".tiktoken" || tokenizer.filename() == "vocab.json";
  const auto tokenizer_out = out / (as_json ? fs::path("tokenizer.json") : tokenizer.filename());
  const auto marker = freshness_file(r, out, tokenizer_out);
  MadeFrom made_from = stage_record(r, Stage::Export, src);
  add_gate_inputs(made_from, r, r.export_.gate, true);
  const auto fresh = freshness(force, marker, read_stage_record(r.run.out_dir, "export"), made_from);
  if (fresh.up_to_date && !gate_unsettled(out, r.export_.gate)) {
    refuse_failed_output(out, "the export in " + out.string());
    return {true, fmt::format("{} holds {}", out.string(), src.string())};
  }
  check_not_input(r, {out, marker, tokenizer_out});
  // A Hugging Face directory is read as the kind its architecture names (a BertModel as an
  // encoder); lathe's own files as the kind train.task trains.
  auto model = adapters::load_model(src, models::is_hf_model_dir(src) ? std::nullopt
                                                                      : std::optional(train::model_kind(r.train.task)));
  // Only an encoder pools; the sentence-transformers modules of another model's origin are its own.
  const auto pooled = model.kind() == models::ModelKind::BertEncoder ? pooling_of(r, src) : Pooled{};
  if (model.kind() != models::ModelKind::BertEncoder && r.export_.pooling != recipe::Pooling::Auto &&
      r.export_.pooling != recipe::Pooling::None)
    throw Error(fmt::format("export.pooling: {} pools a BERT encoder's hidden states; {} is a {}",
                            enum_name(r.export_.pooling), src.string(), model.kind_name()));
  check_names_free(r, model, pooled.pooling != export_::Pooling::None, out, tokenizer_out);
  // The GGUF files' checks (family, rope, tokenizer) run before the directory is made.
  auto gguf = writes_gguf(r) ? plan_gguf(r, src, tokenizer, model, out) : GgufPlan{};
  if (r.export_.path.empty()) io::claim(out);
  fs::create_directories(out);
  open_gate(out, r, r.export_.gate, "export");
  std::vector<std::string> parts, notes, runs;
  // Every graph is built and checked before the first file is written: an unsupported part
  // leaves the directory as it was.
  if (writes_onnx(r)) export_onnx_files(r, src, tokenizer, model, pooled, out, parts, notes, runs);
  // GGUF reads the quantized layers as they are; the Hugging Face directory dequantizes them.
  if (writes_gguf(r)) export_gguf(r, gguf, model, out, parts, notes, runs);
  if (writes_hf(r)) {
    export_hf(r, src, tokenizer, model, out, parts, notes);
    for (const auto& f : sentence_transformers_files(pooled, model, hf_origin(r, src), out)) parts.push_back(f);
  }
  add_onnx_hf_runs(r, out, model, pooled, runs);
  remove_earlier(out, parts, notes);
  write_tokenizer(r, tokenizer, tokenizer_out, as_json);
  parts.push_back(tokenizer_out.filename().string());
  const auto gate = measure_export_gate(r, src, model, out);
  if (gate) record_gate(out, *gate);
  write_stage_record(r.run.out_dir, "export", made_from);
  if (gate) enforce_gate(*gate);
  if (gate) notes.push_back("gate passed: " + gate->text());
  std::string how;
  for (const auto& line : runs) how += "\n  run with " + line;
  return {false, fmt::format("{}{} -> {} ({}){}{}", fresh.why(), src.string(), out.string(), fmt::join(parts, ", "),
                             notes.empty() ? "" : "; " + fmt::format("{}", fmt::join(notes, "; ")), how)};
}

}  // namespace lathe::pipeline
