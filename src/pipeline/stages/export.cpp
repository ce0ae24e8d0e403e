// The export stage: ONNX graphs and / or a Hugging Face directory.

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/build_info.hpp"
#include "lathe/core/error.hpp"
#include "lathe/export/graph.hpp"
#include "lathe/export/onnx.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/train/run_dir.hpp"
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

bool writes_onnx(const recipe::Recipe& r) { return r.export_.format != ExportFormat::Hf; }
bool writes_hf(const recipe::Recipe& r) { return r.export_.format != ExportFormat::Onnx; }

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
                                  const models::HfWriteOptions& options) {
  const auto staging = out / ".lathe-hf-staging";
  fs::remove_all(staging);
  try {
    const auto files = models::save_hf(model, staging, options);
    // Either weights layout shadows the other where both are: a foreign one of them stops it too.
    for (const auto* f : {"model.safetensors", "model.safetensors.index.json"}) io::check_claimable(out / f);
    for (const auto& f : files) io::check_claimable(out / f);
    for (const auto& f : files) {
      io::claim(out / f);
      fs::rename(staging / f, out / f);
    }
    fs::remove_all(staging);
    return files;
  } catch (...) {
    fs::remove_all(staging);
    throw;
  }
}

export_::OnnxOptions onnx_options(const recipe::Recipe& r) {
  export_::OnnxOptions o;
  o.opset = r.export_.opset;
  o.dynamic_axes = r.export_.dynamic_axes;
  return o;
}

/// The Hugging Face directory: the model's files, and the origin's settings beside them.
void export_hf(const recipe::Recipe& r, const fs::path& src, const fs::path& tokenizer, const models::AnyModel& model,
               const fs::path& out, std::vector<std::string>& parts, std::vector<std::string>& notes) {
  // transformers has no reader for lathe's integer layout: the weights go out as the float
  // values the codes stand for.
  if (!models::quantized_layers(model).empty())
    notes.push_back("quantized weights written as the float values their codes stand for (transformers reads no "
                    "lathe integer layout)");
  for (const auto& [path, lin] : nn::linear_layers(*model.module())) lin->dequantize();
  const auto origin = hf_origin(r, src);
  models::HfWriteOptions options;
  options.max_shard_bytes = r.export_.max_shard_bytes();
  const auto dtype = r.export_.hf_dtype;
  options.dtype = dtype == recipe::HfDtype::Auto     ? (origin.empty() ? at::kFloat : models::hf_storage_dtype(origin))
                  : dtype == recipe::HfDtype::BFloat16 ? at::kBFloat16
                  : dtype == recipe::HfDtype::Float16  ? at::kHalf
                                                       : at::kFloat;
  if (!origin.empty()) options.family = models::read_hf_model_type(origin);
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
  for (const auto& f : write_hf(model, out, options)) parts.push_back(f);
  for (const auto& name : carried) {
    io::claim(out / name);
    fs::copy_file(origin / name, out / name, fs::copy_options::overwrite_existing);
    parts.push_back(name);
  }
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
  const auto marker = out / (writes_onnx(r) ? "model.onnx" : "config.json");
  MadeFrom made_from = stage_record(r, Stage::Export, src);
  add_gate_inputs(made_from, r, r.export_.gate, true);
  const auto fresh = freshness(force, marker, read_stage_record(r.run.out_dir, "export"), made_from);
  if (fresh.up_to_date && !gate_unsettled(out, r.export_.gate)) {
    refuse_failed_output(out, "the export in " + out.string());
    return {true, fmt::format("{} holds {}", out.string(), src.string())};
  }
  // A tiktoken file holds no added tokens and vocab.json needs merges.txt beside it: the
  // tokenizer as the model used it goes out as tokenizer.json. Other forms are copied as read.
  const bool as_json = tokenizer.extension() == ".tiktoken" || tokenizer.filename() == "vocab.json";
  const auto tokenizer_out = out / (as_json ? fs::path("tokenizer.json") : tokenizer.filename());
  check_not_input(r, {out, marker, tokenizer_out});
  if (r.export_.path.empty()) io::claim(out);
  fs::create_directories(out);
  open_gate(out, r, r.export_.gate, "export");

  auto model = adapters::load_model(src, train::model_kind(r.train.task));
  std::vector<std::string> parts, notes;
  // Every graph is built and checked before the first file is written: an unsupported part
  // leaves the directory as it was.
  if (writes_onnx(r)) {
    auto options = onnx_options(r);
    options.metadata = {
        {"lathe.version", build::kVersion},
        {"lathe.recipe_hash", fmt::format("{:016x}", recipe::recipe_hash(r))},
        {"lathe.tokenizer_fingerprint",
         fmt::format("{:016x}", tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r))->fingerprint())},
        {"lathe.source", src.string()}};
    const auto onnx = export_::export_onnx(model, options);
    notes = onnx.notes;
    for (const auto& f : export_::write_onnx(onnx, out))
      parts.push_back(f.filename().string());
  }
  if (writes_hf(r)) export_hf(r, src, tokenizer, model, out, parts, notes);
  // Files an earlier export of another format or model kind left here would pass for this
  // model's: they go (only those lathe wrote).
  std::vector<std::string> earlier{"model.onnx",        "model.onnx.data",
                                   "decoder_with_past_model.onnx", "decoder_with_past_model.onnx.data",
                                   "config.json",       "model.safetensors",
                                   "model.safetensors.index.json"};
  earlier.insert(earlier.end(), kCarried.begin(), kCarried.end());
  for (const auto& entry : io::owned_entries(out))
    if (const auto name = entry.filename().string(); name.starts_with("model-") && name.ends_with(".safetensors"))
      earlier.push_back(name);
  int shards = 0;
  for (const auto& name : earlier)
    if (std::find(parts.begin(), parts.end(), name) == parts.end() && io::remove_owned(out / name)) {
      if (name.starts_with("model-")) ++shards;
      else notes.push_back(fmt::format("removed {} of an earlier export", name));
    }
  if (shards > 0) notes.push_back(fmt::format("removed {} safetensors shard(s) of an earlier export", shards));
  io::claim(tokenizer_out);
  if (as_json) {
    tokenizer::load_tokenizer(tokenizer, train::tokenizer_load_options(r))->save(tokenizer_out);
  } else {
    std::ifstream in(tokenizer, std::ios::binary);
    if (!in) throw Error("cannot read the tokenizer " + tokenizer.string());
    std::ostringstream text;
    text << in.rdbuf();
    io::write_file_atomic(tokenizer_out, text.str());
  }
  parts.push_back(tokenizer_out.filename().string());
  const auto gate = measure_export_gate(r, src, model, out);
  if (gate) record_gate(out, *gate);
  write_stage_record(r.run.out_dir, "export", made_from);
  if (gate) enforce_gate(*gate);
  if (gate) notes.push_back("gate passed: " + gate->text());
  return {false, fmt::format("{}{} -> {} ({}){}", fresh.why(), src.string(), out.string(), fmt::join(parts, ", "),
                             notes.empty() ? "" : "; " + fmt::format("{}", fmt::join(notes, "; ")))};
}

}  // namespace lathe::pipeline
