// The export stage: ONNX graphs and / or a Hugging Face directory.

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

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

namespace lathe::pipeline {
namespace fs = std::filesystem;
using recipe::ExportFormat;
using recipe::Stage;

namespace {

bool writes_onnx(const recipe::Recipe& r) { return r.export_.format != ExportFormat::Hf; }
bool writes_hf(const recipe::Recipe& r) { return r.export_.format != ExportFormat::Onnx; }

export_::OnnxOptions onnx_options(const recipe::Recipe& r) {
  export_::OnnxOptions o;
  o.opset = r.export_.opset;
  o.dynamic_axes = r.export_.dynamic_axes;
  return o;
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
  const MadeFrom made_from = stage_record(r, Stage::Export, src);
  const auto fresh = freshness(force, marker, read_stage_record(r.run.out_dir, "export"), made_from);
  if (fresh.up_to_date) return {true, fmt::format("{} holds {}", out.string(), src.string())};
  // A tiktoken file holds no added tokens and vocab.json needs merges.txt beside it: the
  // tokenizer as the model used it goes out as tokenizer.json. Other forms are copied as read.
  const bool as_json = tokenizer.extension() == ".tiktoken" || tokenizer.filename() == "vocab.json";
  const auto tokenizer_out = out / (as_json ? fs::path("tokenizer.json") : tokenizer.filename());
  check_not_input(r, {out, marker, tokenizer_out});
  if (r.export_.path.empty()) io::claim(out);
  fs::create_directories(out);

  auto model = models::load_model(src, train::model_kind(r.train.task));
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
  if (writes_hf(r)) {
    for (const auto& f : {out / "config.json", out / "model.safetensors"}) io::claim(f);
    // transformers has no reader for lathe's integer layout: the weights go out as the float
    // values the codes stand for.
    if (!models::quantized_layers(model).empty())
      notes.push_back("quantized weights written to model.safetensors as the float32 values their codes stand for "
                      "(transformers reads no lathe integer layout)");
    for (const auto& [path, lin] : nn::linear_layers(*model.module())) lin->dequantize();
    models::save_hf(model, out);
    parts.insert(parts.end(), {"config.json", "model.safetensors"});
  }
  // Files an earlier export of another format or model kind left here would pass for this
  // model's: they go (only those lathe wrote).
  for (const auto* name : {"model.onnx", "model.onnx.data", "decoder_with_past_model.onnx",
                           "decoder_with_past_model.onnx.data", "config.json", "model.safetensors"})
    if (std::find(parts.begin(), parts.end(), name) == parts.end() && io::remove_owned(out / name))
      notes.push_back(fmt::format("removed {} of an earlier export", name));
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
  write_stage_record(r.run.out_dir, "export", made_from);
  return {false, fmt::format("{}{} -> {} ({}){}", fresh.why(), src.string(), out.string(), fmt::join(parts, ", "),
                             notes.empty() ? "" : "; " + fmt::format("{}", fmt::join(notes, "; ")))};
}

}  // namespace lathe::pipeline
