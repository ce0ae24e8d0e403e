// GGUF export against llama.cpp's own tools (tests/reference/gguf_reference.py): the ggml types
// byte for byte as the gguf package's reference quantizers write them, every tensor as
// convert_hf_to_gguf.py makes it of the Hugging Face export, and llama.cpp (llama-cpp-python)
// running the files: logits, greedy tokens and tokenization against lathe's.

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/export/gguf.hpp"
#include "lathe/export/gguf_model.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/generate.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "run_fixture.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using lathe::export_::GgmlType;
using lathe::models::AnyModel;
using lathe::test::TempDir;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json run_reference_json(const std::vector<std::string>& args) {
  auto argv = args;
  argv.insert(argv.begin(), (lathe::test::source_dir() / "tests/reference/gguf_reference.py").string());
  const auto r = lathe::test::run_python("import runpy, sys; sys.argv = sys.argv[1:]; "
                                         "runpy.run_path(sys.argv[0], run_name='__main__')",
                                         argv);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto out = lathe::test::lines(r.out);
  REQUIRE(!out.empty());
  return json::parse(out.back());
}

/// The tokenizer a Corpus recipe trains (vocabulary 400, the given pre-tokenizer).
struct Trained {
  lathe::test::Corpus corpus;
  TempDir run;
  fs::path tokenizer_json;
  explicit Trained(const std::string& pre) {
    auto yaml = corpus.recipe(run.path(), "max_steps: 4");
    const std::string plain = "vocab_size: 400}";
    yaml.replace(yaml.find(plain), plain.size(), "vocab_size: 400, pre_tokenizer: " + pre + "}");
    auto r = lathe::test::recipe_from(yaml);
    lathe::pipeline::run_tokenizer_stage(r, false);
    tokenizer_json = lathe::recipe::tokenizer_path(r);
  }
};

/// Lines of the bundled KJV text the corpus (its first 4000 lines) never saw.
std::vector<std::string> hidden_lines(int count) {
  std::ifstream in(lathe::test::source_dir() / "data/kjv/kjv.txt");
  std::vector<std::string> out;
  std::string line;
  for (int i = 0; std::getline(in, line) && static_cast<int>(out.size()) < count; ++i)
    if (i >= 20000 && i % 7 == 0 && !line.empty()) out.push_back(line);
  return out;
}

void perturb(const AnyModel& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.module()->parameters()) p.add_(at::randn_like(p) * 0.1);
  m.module()->eval();
}

/// What lathe computes for the check: its greedy tokens after `prompt` and its logits over
/// prompt + all but the last of them.
struct LatheRun {
  std::vector<int64_t> prompt, greedy;
  at::Tensor logits;
};

LatheRun lathe_run(const AnyModel& m, const std::vector<int64_t>& prompt, int64_t n) {
  auto gpt = m.as<lathe::models::Gpt>();
  lathe::models::SamplingOptions s;
  s.temperature = 0.0;
  s.top_k = 0;
  s.max_new_tokens = n;
  LatheRun out{prompt, lathe::models::generate(gpt, prompt, s).tokens, {}};
  REQUIRE(static_cast<int64_t>(out.greedy.size()) == n);
  std::vector<int64_t> ids = prompt;
  ids.insert(ids.end(), out.greedy.begin(), out.greedy.end() - 1);
  torch::NoGradGuard no_grad;
  out.logits = gpt->forward(at::tensor(ids, at::kLong).unsqueeze(0)).squeeze(0).to(at::kFloat).contiguous();
  return out;
}

json check_case(const fs::path& dir, const fs::path& gguf, const fs::path& hf, const LatheRun& run, double tol,
                bool greedy_must_match, const json& expect = json::object(),
                const std::vector<std::string>& lines = {}, const lathe::tokenizer::Tokenizer* tok = nullptr,
                const json& types = json::object(), bool codes_carried = false) {
  lathe::io::save_safetensors(dir / "lathe_logits.safetensors", {{"logits", run.logits}});
  json c{{"gguf", gguf.string()},       {"hf_dir", hf.string()},      {"expect", expect},
         {"prompt", run.prompt},         {"greedy", run.greedy},        {"logits", (dir / "lathe_logits.safetensors").string()},
         {"logits_tol", tol},            {"greedy_must_match", greedy_must_match}, {"types", types},
         {"codes_carried", codes_carried}};
  if (tok) {
    c["lines"] = lines;
    json tokens = json::array();
    for (const auto& line : lines) tokens.push_back(tok->encode(line));
    c["line_tokens"] = tokens;
  }
  std::ofstream(dir / "case.json") << c.dump();
  return run_reference_json({"check", (dir / "case.json").string()});
}

lathe::export_::GgufOptions gguf_options(const fs::path& tokenizer_json, std::optional<GgmlType> type) {
  lathe::export_::GgufOptions o;
  o.type = type;
  o.tokenizer_json = tokenizer_json;
  o.name = "test";
  o.eos_id = lathe::tokenizer::load_tokenizer(tokenizer_json)->eos_id();
  return o;
}

}  // namespace

TEST_CASE("gguf: F16, BF16, Q8_0, Q4_0 and Q4_1 blocks are byte for byte the gguf package's reference", "[gguf]") {
  TempDir dir;
  torch::manual_seed(3);
  // Rows of 256: random blocks of several scales, and blocks that test the rules' edges: all
  // zeros, one constant, a negative extreme, values on rounding boundaries, subnormal halves.
  auto rows = at::randn({6, 256}) * at::tensor({1.0, 0.01, 100.0, 1e-5, 3.0, 0.5}).unsqueeze(1);
  rows = rows.to(at::kFloat).contiguous();
  rows.index_put_({0, at::indexing::Slice(0, 32)}, 0.0);
  rows.index_put_({1, at::indexing::Slice(0, 32)}, 0.25);
  rows.index_put_({2, 40}, -1000.0);
  rows.index_put_({4, at::indexing::Slice(64, 96)}, at::arange(32, at::kFloat) * 0.5 - 8.0);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto type : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    const std::string name(lathe::enum_name(type));
    const auto bytes = lathe::export_::ggml_quantize(type, rows);
    tensors.emplace_back("rows_" + name, rows);
    tensors.emplace_back("bytes_" + name,
                         at::from_blob(const_cast<uint8_t*>(bytes.data()), {static_cast<int64_t>(bytes.size())},
                                       at::kByte).clone());
    tensors.emplace_back("back_" + name, lathe::export_::ggml_dequantize(type, bytes, rows.sizes()));
  }
  lathe::io::save_safetensors(dir.path() / "quants.safetensors", tensors);
  const auto report = run_reference_json({"quants", (dir.path() / "quants.safetensors").string()});
  CHECK(report["bytes_checked"].size() == 5);
  // A row the blocks do not tile is refused by name.
  CHECK_THROWS_WITH(lathe::export_::ggml_quantize(GgmlType::Q8_0, at::zeros({2, 40})),
                    Catch::Contains("Q8_0 stores rows in blocks of 32"));
}

TEST_CASE("gguf: GPT-2-, Llama- and Qwen2-style models run in llama.cpp with lathe's logits, greedy tokens and "
          "tokenization",
          "[gguf][slow]") {
  struct Shape {
    const char* family;
    const char* pre;
    const char* arch;
  };
  for (const Shape shape : {Shape{"gpt", "gpt2", "gpt2"}, Shape{"llama", "cl100k", "llama"},
                            Shape{"qwen2", "cl100k", "qwen2"}}) {
    INFO(shape.family);
    Trained trained(shape.pre);
    const auto tok = lathe::tokenizer::load_tokenizer(trained.tokenizer_json);
    // Odd sizes: 3 heads, width 96, an MLP of 160, 403 rows for a 400-token vocabulary (padded).
    auto o = lathe::test::tiny(std::string(shape.family) == "gpt" ? "gpt" : "llama");
    o.n_layer = 3;
    o.max_seq_len = 64;
    o.vocab_size = 403;
    if (std::string(shape.family) == "gpt") {
      o.n_head = 3;
      o.d_model = 96;
      o.d_ff = 160;
    } else {
      o.n_head = 4;
      o.n_kv_head = 2;
      o.d_model = 64;
      o.d_ff = 96;
      o.rope_theta = 5000.0;
      o.qkv_bias = std::string(shape.family) == "qwen2";
    }
    torch::manual_seed(21);
    auto m = lathe::models::make_model(lathe::models::ModelKind::Gpt, o);
    perturb(m);
    TempDir dir;
    lathe::models::save_hf(m, dir.path() / "hf");
    const auto prompt_ids = tok->encode("And God said, Let there be light");
    const LatheRun run = lathe_run(m, {prompt_ids.begin(), prompt_ids.end()}, 24);
    for (const auto type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0}) {
      INFO(lathe::enum_name(type));
      const auto gguf = lathe::export_::export_gguf(m, gguf_options(trained.tokenizer_json, type));
      CHECK(gguf.arch == shape.arch);
      const auto path = dir.path() / lathe::export_::gguf_file_name(type);
      gguf.file.write(path);
      const std::string a = shape.arch;
      json expect{{"general.architecture", a},
                  {a + ".block_count", 3},
                  {a + ".context_length", 64},
                  {a + ".embedding_length", o.d_model},
                  {a + ".feed_forward_length", o.d_ff},
                  {a + ".attention.head_count", o.n_head},
                  {"general.file_type", lathe::export_::ggml_type(type).file_type},
                  {"tokenizer.ggml.model", "gpt2"},
                  {"tokenizer.ggml.pre", std::string(shape.pre) == "gpt2" ? "gpt-2" : "llama-bpe"},
                  {"tokenizer.ggml.eos_token_id", tok->eos_id()}};
      if (a != "gpt2") expect[a + ".attention.head_count_kv"] = 2;
      // Logits against lathe's float model: float32 is the same arithmetic in another order,
      // except that llama.cpp's GELU reads a table of F16 inputs and outputs (GPT-2); F16 / BF16
      // round the weights (and llama.cpp the activations of F16 products); Q8_0 / Q4_0 quantize
      // the weights, and llama.cpp the activations of their products to Q8_0.
      const double tol = type == GgmlType::F32    ? (a == "gpt2" ? 5e-3 : 1e-4)
                         : type == GgmlType::F16  ? 0.02
                         : type == GgmlType::BF16 ? 0.1
                         : type == GgmlType::Q8_0 ? 0.25
                                                  : 2.0;
      const bool f32 = type == GgmlType::F32;
      json types{{"blk.0.attn_norm.weight", "F32"}};
      if (a == "gpt2") types["position_embd.weight"] = "F32";  // as convert_hf_to_gguf.py keeps it
      types[a == "gpt2" ? "blk.1.attn_qkv.weight" : "blk.1.attn_q.weight"] = std::string(lathe::export_::ggml_type(type).name);
      const auto report = check_case(dir.path(), path, dir.path() / "hf", run, tol, f32, expect,
                                     f32 ? hidden_lines(200) : std::vector<std::string>{}, f32 ? tok.get() : nullptr,
                                     types);
      INFO(report.dump());
      CHECK(report["arch"] == shape.arch);
      if (f32) CHECK(report["lines_tokenized"] == 200);
      WARN(fmt::format("{} {}: {}", shape.family, lathe::enum_name(type), report.dump()));
    }
  }
}

TEST_CASE("gguf: lathe's int8 and int4 models go to Q8_0 and Q4_1 and run in llama.cpp as lathe runs them",
          "[gguf][slow]") {
  using lathe::nn::QuantScheme;
  Trained trained("cl100k");
  const auto tok = lathe::tokenizer::load_tokenizer(trained.tokenizer_json);
  const auto prompt_ids = tok->encode("And God said, Let there be light");
  const std::vector<int64_t> prompt(prompt_ids.begin(), prompt_ids.end());
  struct Case {
    QuantScheme scheme;
    const char* type;
    double tol;
  };
  // Both types hold the layers' own codes (an int8 row's scale, an int4 group's scale and
  // minimum rounded to F16); llama.cpp quantizes the activations of its products to 8 bits,
  // which lathe's weight-only schemes do not.
  for (const Case c : {Case{QuantScheme::Int8WeightOnly, "Q8_0", 0.15}, Case{QuantScheme::Int8Dynamic, "Q8_0", 0.3},
                       Case{QuantScheme::Int4WeightOnly, "Q4_1", 0.15}}) {
    INFO(lathe::enum_name(c.scheme));
    auto o = lathe::test::tiny("llama");
    o.n_layer = 3;
    o.max_seq_len = 64;
    o.vocab_size = 400;
    o.d_model = 64;
    o.d_ff = 96;
    torch::manual_seed(22);
    auto m = lathe::models::make_model(lathe::models::ModelKind::Gpt, o);
    perturb(m);
    lathe::compress::QuantizeOptions q;
    q.method = c.scheme;
    q.group_size = 32;
    lathe::compress::quantize_model(m, q);
    const LatheRun run = lathe_run(m, prompt, 24);
    const auto gguf = lathe::export_::export_gguf(m, gguf_options(trained.tokenizer_json, std::nullopt));
    CHECK(lathe::export_::ggml_type(gguf.type).name == c.type);
    REQUIRE(!gguf.notes.empty());
    CHECK_THAT(gguf.notes.back(), Catch::Contains(std::string(c.type) + " tensors differ"));
    CHECK_THAT(fmt::format("{}", fmt::join(gguf.notes, "\n")), Catch::Contains("21 quantized matrices carry lathe's own codes"));
    TempDir dir;
    gguf.file.write(dir.path() / "model.gguf");
    // The Hugging Face directory holds the values the codes stand for: what the file's tensors
    // are compared with, and quantized from by the gguf package.
    for (const auto& [path, lin] : lathe::nn::linear_layers(*m.module())) lin->dequantize();
    lathe::models::save_hf(m, dir.path() / "hf");
    json types;
    types["blk.0.attn_q.weight"] = c.type;
    types["blk.2.ffn_down.weight"] = c.type;
    types["token_embd.weight"] = "F32";  // not a quantized layer: float, as lathe holds it
    types["output.weight"] = "F32";
    const auto report = check_case(dir.path(), dir.path() / "model.gguf", dir.path() / "hf", run, c.tol, false,
                                   {{"general.file_type", lathe::export_::ggml_type(gguf.type).file_type},
                                    {"general.quantization_version", 2}},
                                   {}, nullptr, types, true);
    WARN(fmt::format("{}: {}", lathe::enum_name(c.scheme), report.dump()));
  }
}

TEST_CASE("gguf: the export stage writes a file per gguf_type that llama.cpp runs as lathe generate does, skips an "
          "unchanged export, removes the files of an earlier one and never replaces a foreign file",
          "[gguf][stage]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 30, batch_size: 8",
                                               "export: {format: [gguf, hf], gguf_type: [auto, q8_0]}"));
  lathe::pipeline::run_train_stage(r, false);
  const auto first = lathe::pipeline::run_export_stage(r, false);
  CHECK_FALSE(first.skipped);
  const auto out = dir.path() / "run" / "export";
  for (const auto* f : {"model.gguf", "model-Q8_0.gguf", "config.json", "model.safetensors", "tokenizer.json"})
    CHECK(fs::exists(out / f));
  CHECK_FALSE(fs::exists(out / ".lathe-gguf-tokenizer.json"));
  CHECK_THAT(first.summary, Catch::Contains("run with llama.cpp (gpt2 F32): llama-cli -m " + (out / "model.gguf").string()));
  CHECK_THAT(first.summary, Catch::Contains("run with llama.cpp (gpt2 Q8_0): llama-cli -m "));
  CHECK_THAT(first.summary, Catch::Contains("run with transformers: python -c"));
  CHECK_THAT(first.summary, Catch::Contains("model-Q8_0.gguf: Q8_0 tensors differ from the weights they stand for"));

  // The trained model in llama.cpp: lathe generate's greedy tokens, lathe's tokenization.
  const auto tok = lathe::tokenizer::load_tokenizer(out / "tokenizer.json");
  const auto model = lathe::models::load_model(out);
  const auto ids = tok->encode("And God said");
  const LatheRun run = lathe_run(model, {ids.begin(), ids.end()}, 24);
  const auto report = check_case(dir.path(), out / "model.gguf", out, run, 5e-3, true,
                                 {{"general.name", r.run.name}, {"tokenizer.ggml.bos_token_id", tok->eos_id()},
                                  {"tokenizer.ggml.add_bos_token", false}},
                                 hidden_lines(200), tok.get());
  CHECK(report["greedy_equal"] == true);
  CHECK(lathe::pipeline::run_export_stage(r, false).skipped);

  r.export_.gguf_type = {lathe::recipe::GgufType::Q4_0};
  const auto second = lathe::pipeline::run_export_stage(r, false);
  CHECK_FALSE(second.skipped);
  CHECK(fs::exists(out / "model-Q4_0.gguf"));
  CHECK_FALSE(fs::exists(out / "model.gguf"));
  CHECK_FALSE(fs::exists(out / "model-Q8_0.gguf"));
  CHECK_THAT(second.summary, Catch::Contains("removed model-Q8_0.gguf of an earlier export"));
  // A file of the export deleted since is made again, not skipped.
  fs::remove(out / "model.safetensors");
  CHECK_FALSE(lathe::pipeline::run_export_stage(r, false).skipped);
  CHECK(fs::exists(out / "model.safetensors"));
  CHECK(lathe::pipeline::run_export_stage(r, false).skipped);

  // A directory of the user's holding a tokenizer.json: refused before any file is written.
  const auto mine = dir.path() / "mine";
  fs::create_directories(mine);
  std::ofstream(mine / "tokenizer.json") << "the user's";
  auto elsewhere = r;
  elsewhere.export_.path = mine.string();
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_export_stage(elsewhere, false); }),
             Catch::Contains((mine / "tokenizer.json").string()));
  CHECK(lathe::test::read_file(mine / "tokenizer.json") == "the user's");
  CHECK_FALSE(fs::exists(mine / "model-Q4_0.gguf"));
  CHECK_FALSE(fs::exists(mine / "config.json"));

  // A file lathe did not write is never replaced; the export stops before writing anything.
  std::ofstream(out / "model-F16.gguf") << "someone else's";
  r.export_.gguf_type = {lathe::recipe::GgufType::F16};
  r.export_.format = {lathe::recipe::ExportFormat::Onnx, lathe::recipe::ExportFormat::Gguf};
  CHECK_THAT(lathe::test::error_of([&] { lathe::pipeline::run_export_stage(r, false); }),
             Catch::Contains("model-F16.gguf"));
  CHECK(lathe::test::read_file(out / "model-F16.gguf") == "someone else's");
  CHECK_FALSE(fs::exists(out / "model.onnx"));  // refused before the ONNX graphs were written
  CHECK(fs::exists(out / "model-Q4_0.gguf"));
}

TEST_CASE("gguf: GgufFile reads what the gguf package writes (another alignment, every value type lathe keeps) "
          "and what it writes itself; a truncated file is refused by name",
          "[gguf]") {
  TempDir dir;
  const auto theirs = dir.path() / "theirs.gguf";
  const auto made = lathe::test::run_python(
      "import sys, numpy as np, gguf\n"
      "w = gguf.GGUFWriter(sys.argv[1], 'llama')\n"
      "w.add_custom_alignment(64)\n"
      "w.add_uint32('a.u32', 7); w.add_int32('a.i32', -3); w.add_float32('a.f32', 0.5)\n"
      "w.add_bool('a.bool', True); w.add_string('a.str', 'héllo'); w.add_uint64('a.u64', 1 << 40)\n"
      "w.add_array('a.strs', ['x', 'yz']); w.add_array('a.ints', [1, -2, 3]); w.add_uint16('a.u16', 9)\n"
      "w.add_tensor('t.f32', np.arange(6, dtype=np.float32).reshape(2, 3))\n"
      "w.add_tensor('t.f16', np.arange(64, dtype=np.float16).reshape(2, 32))\n"
      "q = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)\n"
      "w.add_tensor('t.q8', q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)\n"
      "w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()\n",
      {theirs.string()});
  INFO(made.err);
  REQUIRE(made.code == 0);
  const auto f = lathe::export_::GgufFile::read(theirs);
  CHECK(std::get<std::string>(*f.find("general.architecture")) == "llama");
  CHECK(std::get<uint32_t>(*f.find("a.u32")) == 7);
  CHECK(std::get<int32_t>(*f.find("a.i32")) == -3);
  CHECK(std::get<float>(*f.find("a.f32")) == 0.5f);
  CHECK(std::get<bool>(*f.find("a.bool")));
  CHECK(std::get<std::string>(*f.find("a.str")) == "h\xc3\xa9llo");
  CHECK(std::get<uint64_t>(*f.find("a.u64")) == (uint64_t{1} << 40));
  CHECK(std::get<std::vector<std::string>>(*f.find("a.strs")) == std::vector<std::string>{"x", "yz"});
  CHECK(std::get<std::vector<int32_t>>(*f.find("a.ints")) == std::vector<int32_t>{1, -2, 3});
  CHECK(f.find("a.u16") == nullptr);  // a type lathe does not keep is skipped
  REQUIRE(f.tensors().size() == 3);
  const auto& t0 = f.tensors()[0];
  CHECK(t0.shape == std::vector<int64_t>{2, 3});
  CHECK(lathe::export_::ggml_dequantize(t0.type, t0.data, t0.shape).equal(at::arange(6, at::kFloat).reshape({2, 3})));
  const auto& t1 = f.tensors()[1];
  CHECK(t1.type == GgmlType::F16);
  CHECK(lathe::export_::ggml_dequantize(t1.type, t1.data, t1.shape).equal(at::arange(64, at::kFloat).reshape({2, 32})));
  const auto& t2 = f.tensors()[2];
  CHECK(t2.type == GgmlType::Q8_0);
  CHECK(t2.data == lathe::export_::ggml_quantize(GgmlType::Q8_0, at::linspace(-1, 1, 64, at::kFloat).reshape({2, 32})));

  // lathe's own file back, byte for byte the same tensors and values.
  const auto ours = dir.path() / "ours.gguf";
  f.write(ours);
  const auto back = lathe::export_::GgufFile::read(ours);
  CHECK(back.metadata().size() == f.metadata().size());
  for (const auto& [k, v] : f.metadata()) CHECK(*back.find(k) == v);
  for (std::size_t i = 0; i < f.tensors().size(); ++i) CHECK(back.tensors()[i].data == f.tensors()[i].data);

  // Cut short (into the last tensor's 68 bytes, past its padding to 96): refused naming the file.
  const auto bytes = lathe::test::read_file(ours);
  std::ofstream(dir.path() / "cut.gguf", std::ios::binary) << bytes.substr(0, bytes.size() - 60);
  CHECK_THAT(lathe::test::error_of([&] { lathe::export_::GgufFile::read(dir.path() / "cut.gguf"); }),
             Catch::Contains((dir.path() / "cut.gguf").string()));
}

TEST_CASE("gguf: what llama.cpp cannot hold is refused by name before a file is written", "[gguf]") {
  TempDir dir;
  int files = 0;
  const auto options = [&](const std::string& tokenizer_json) {
    lathe::export_::GgufOptions o;
    o.tokenizer_json = dir.write(fmt::format("{}/tokenizer.json", files++), tokenizer_json);
    o.eos_id = 0;
    return o;
  };
  const std::string bpe_head = R"({"added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true}],
      "normalizer": null, "post_processor": null, "decoder": null,)";
  const std::string bpe_model = R"("model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1}, "merges": []}})";
  auto gpt = lathe::models::make_model(lathe::models::ModelKind::Gpt, lathe::test::tiny("gpt"));
  const auto gguf_error = [&](const lathe::models::AnyModel& m, const lathe::export_::GgufOptions& o) {
    return lathe::test::error_of([&] { lathe::export_::export_gguf(m, o); });
  };
  const auto good = options(bpe_head + R"("pre_tokenizer": {"type": "ByteLevel", "use_regex": true},)" + bpe_model);
  CHECK_NOTHROW(lathe::export_::export_gguf(gpt, good));
  CHECK_THAT(gguf_error(lathe::models::make_model(lathe::models::ModelKind::BertMaskedLm, lathe::test::tiny("bert")),
                        good),
             Catch::Contains("GGUF export writes GPT models"));
  auto gemma = lathe::test::tiny("llama");
  gemma.norm = lathe::nn::NormKind::RmsNormOffset;
  gemma.activation = lathe::nn::Activation::GeGluTanh;
  gemma.scale_embeddings = true;
  gemma.tie_embeddings = true;
  CHECK_THAT(gguf_error(lathe::models::make_model(lathe::models::ModelKind::Gpt, gemma), good),
             Catch::Contains("family gemma has no llama.cpp architecture"));
  CHECK_THAT(gguf_error(gpt, options(R"({"model": {"type": "WordPiece", "vocab": {"[SEP]": 0}}})")),
             Catch::Contains("this one's model is WordPiece"));
  CHECK_THAT(gguf_error(gpt, options(bpe_head + R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "use_regex": false}]},)" + bpe_model)),
             Catch::Contains("llama.cpp has no pre-tokenizer that splits text with the regex \\w+"));
  CHECK_THAT(gguf_error(gpt, options(bpe_head + R"("pre_tokenizer": {"type": "Whitespace"},)" + bpe_model)),
             Catch::Contains("pre_tokenizer is ByteLevel"));
  auto qwen2 = lathe::test::tiny("llama");
  qwen2.qkv_bias = true;
  qwen2.rope_scaling = lathe::nn::RopeScaling::Linear;
  qwen2.rope_factor = 2.0;
  CHECK_THAT(gguf_error(lathe::models::make_model(lathe::models::ModelKind::Gpt, qwen2), good),
             Catch::Contains("llama.cpp's qwen2 architecture has no rope scaling"));
  CHECK_THAT(gguf_error(gpt, options(bpe_head + R"("pre_tokenizer": {"type": "ByteLevel", "use_regex": true,
      "add_prefix_space": true},)" + bpe_model)),
             Catch::Contains("adds a space before the text"));
  auto bad_eos = good;
  bad_eos.eos_id = 5;
  CHECK_THAT(gguf_error(gpt, bad_eos), Catch::Contains("the end-of-text token id 5 is not one of its tokens"));
}
