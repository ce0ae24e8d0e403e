// Quantization: the grids against PyTorch's quantizer, the int8 kernel's accumulators against an
// integer matrix product (also as a CPU without VNNI computes it), the int4 kernel against its dequantized weight, GPTQ against a
// reference written from the paper, error budgets on real activations, the model file, and the
// quantize stage.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/nn/gemv.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/linear.hpp"
#include "lathe/pipeline/run.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/task.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/run_dir.hpp"
#include "run_fixture.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using lathe::compress::QuantAlgorithm;
using lathe::compress::QuantizeOptions;
using lathe::models::AnyModel;
using lathe::models::ModelKind;
using lathe::nn::QuantActivations;
using lathe::nn::QuantGrid;
using lathe::nn::QuantScheme;
using lathe::test::TempDir;
using nlohmann::json;

namespace {

double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() / b.to(at::kDouble).norm().item<double>();
}

/// Samples of one distribution with correlated features (as activations have), so that GPTQ
/// has something to use; `seed` draws the samples, the correlation is always the same.
at::Tensor correlated(int64_t n, int64_t in, int64_t seed) {
  const auto mix = at::randn({in, in}, at::detail::createCPUGenerator(1234), at::kDouble) /
                   std::sqrt(static_cast<double>(in));
  const auto z = at::randn({n, in}, at::detail::createCPUGenerator(static_cast<uint64_t>(seed)), at::kDouble);
  return z.matmul(mix + at::eye(in, at::kDouble)).to(at::kFloat);
}

/// A GPT trained for a few steps on the test corpus, with its tokenizer and task data.
struct TrainedRun {
  lathe::test::Corpus corpus;
  TempDir dir;
  lathe::recipe::Recipe r;
  std::unique_ptr<lathe::tokenizer::Tokenizer> tok;
  std::unique_ptr<lathe::train::TaskData> data;
  explicit TrainedRun(int64_t steps) {
    r = lathe::test::prepared(corpus.recipe(dir.path() / "run", fmt::format("max_steps: {}, batch_size: 8", steps)));
    lathe::pipeline::run_train_stage(r, false);
    tok = lathe::tokenizer::load_tokenizer(lathe::recipe::tokenizer_path(r));
    data = lathe::train::make_task_data(r, *tok);
  }
};

}  // namespace

TEST_CASE("quantize: int8 codes are PyTorch's qint8 and the int8 kernel accumulates them exactly",
          "[quantize]") {
  torch::manual_seed(1);
  const auto w = at::randn({40, 64});
  const auto q = lathe::nn::quantize_rtn(w, {QuantScheme::Int8Dynamic, 0}, QuantActivations::Float32);
  // PyTorch's own per-channel quantizer on the same scales.
  const auto ref = at::quantize_per_channel(w, q.scales().to(at::kDouble), at::zeros({40}, at::kLong), 0, at::kQInt8);
  CHECK(at::equal(q.codes(), ref.int_repr()));
  CHECK(q.scales().allclose(w.abs().amax(1) / 127));

  for (int64_t m : {1, 7, 33}) {
    const auto x = at::randn({m, 64}) * 3;
    const auto y = q.linear(x, at::Tensor());
    // The activation codes by PyTorch's per-token (per-row) quantizer on 7 bits (its
    // reduce_range: [-63, 63]), then an int64 product.
    const auto x_scale = x.abs().amax(1) / 63;
    const auto xq = at::quantize_per_channel(x, x_scale.to(at::kDouble), at::zeros({m}, at::kLong), 0, at::kQInt8)
                        .int_repr();
    const auto want = xq.to(at::kLong).matmul(q.codes().to(at::kLong).t());
    // y = acc * token scale * channel scale in float32: the accumulators come back exactly
    // (they stay far below 2^22 here).
    const auto acc = (y.to(at::kDouble) / x_scale.to(at::kDouble).unsqueeze(1) / q.scales().to(at::kDouble))
                         .round()
                         .to(at::kLong);
    CHECK(at::equal(acc, want));
  }

  // The worst case for x86 CPUs without VNNI: fbgemm's u8 x s8 kernel there adds each pair of
  // products (activation code + zero point) * weight code into int16 with saturation
  // (vpmaddubsw). Emulated on the codes and zero point lathe feeds it, it must still be exact.
  const auto w_max = at::full({4, 64}, 1.0).index_put_({at::indexing::Slice(2)}, -1.0);
  const auto q_max = lathe::nn::quantize_rtn(w_max, {QuantScheme::Int8Dynamic, 0}, QuantActivations::Float32);
  const auto x_max = at::full({2, 64}, 5.0).index_put_({1}, -5.0);
  const auto y_max = q_max.linear(x_max, at::Tensor());
  const auto codes = (x_max / (x_max.abs().amax(1, true) / 63)).round().to(at::kLong);  // 7-bit reference codes
  const auto exact = codes.matmul(q_max.codes().to(at::kLong).t());
  const auto acc_max = (y_max.to(at::kDouble) / (x_max.abs().amax(1, true).to(at::kDouble) / 63) /
                        q_max.scales().to(at::kDouble)).round().to(at::kLong);
  REQUIRE(at::equal(acc_max, exact));  // so lathe used these codes
  const int64_t zero_point = 64;
  const auto u8 = codes + zero_point;
  CHECK(u8.min().item<int64_t>() >= 0);
  CHECK(u8.max().item<int64_t>() <= 255);
  const auto products = u8.unsqueeze(1) * q_max.codes().to(at::kLong).unsqueeze(0);  // (m, out, in)
  const auto pairs = products.view({2, 4, 32, 2}).sum(-1).clamp(-32768, 32767);      // int16 with saturation
  const auto saturating = pairs.sum(-1) - zero_point * q_max.codes().to(at::kLong).sum(1).unsqueeze(0);
  CHECK(at::equal(saturating, exact));
}

TEST_CASE("quantize: each scheme's product is its dequantized weight's, within the kernel's precision", "[quantize]") {
  torch::manual_seed(2);
  const auto w = at::randn({96, 128}) * 0.05;
  const auto bias = at::randn({96});
  const auto x = at::randn({3, 5, 128});
  struct Case {
    QuantScheme scheme;
    QuantActivations act;
    double budget;  // relative error of the product against x W_q^T with W_q dequantized
  };
  for (const auto& c : {Case{QuantScheme::Int8WeightOnly, QuantActivations::Float32, 1e-6},
                        Case{QuantScheme::Int8WeightOnly, QuantActivations::BFloat16, 1e-2},
                        Case{QuantScheme::Int4WeightOnly, QuantActivations::Float32, 1e-6},
                        Case{QuantScheme::Int4WeightOnly, QuantActivations::BFloat16, 1e-2},
                        Case{QuantScheme::Int8Dynamic, QuantActivations::Float32, 2e-2}}) {
    INFO(lathe::enum_name(c.scheme) << " " << lathe::enum_name(c.act));
    const auto q = lathe::nn::quantize_rtn(w, {c.scheme, 32}, c.act);
    const auto y = q.linear(x, bias);
    CHECK(y.sizes() == at::IntArrayRef{3, 5, 96});
    CHECK(y.scalar_type() == at::kFloat);
    CHECK(rel(y, at::linear(x, q.dequantize(), bias)) < c.budget);
    // A bf16 input comes back bf16.
    CHECK(q.linear(x.to(at::kBFloat16), bias).scalar_type() == at::kBFloat16);
    // The stored form rebuilds the same weight.
    const auto back = lathe::nn::QuantizedWeight::from_stored(q.grid(), c.act, q.stored(), 128);
    CHECK(at::equal(back.codes(), q.codes()));
    CHECK(at::equal(back.linear(x, bias), y));
    // A few rows without gradients (decoding) take lathe's small-rows products, int4 from
    // groups of 64 on: the same values, within the same precision.
    const auto q128 = lathe::nn::quantize_rtn(w, {c.scheme, 128}, c.act);
    torch::NoGradGuard no_grad;
    for (int64_t rows : {1, 3, 8}) {
      INFO(rows << " rows, group 128");
      const auto xr = at::randn({rows, 1, 128});
      CHECK(rel(q128.linear(xr, bias), at::linear(xr, q128.dequantize(), bias)) < c.budget);
    }
    // Decoding (lathe's int4 product) and prompts (ATen's) compute with the same weights: the
    // same bfloat16 scales and zeros.
    if (const auto* rows = static_cast<const lathe::nn::SmallRowsInt4*>(q128.kernel_forms().packed.get());
        rows && c.scheme == QuantScheme::Int4WeightOnly) {
      const auto aten = q128.kernel_forms().scales.to(at::kFloat);  // (groups, out, 2): scale, zero
      const auto scale = aten.select(-1, 0).t(), zero = aten.select(-1, 1).t();
      CHECK(at::equal(rows->scales, scale));
      CHECK(at::allclose(rows->offsets, zero - scale * 136.0, 0, 1e-7));
    }
    // A row decoded alone gives what it gives among a prompt's 16 rows (ATen's kernels there),
    // up to float sums in another order and one rounding of the result.
    const auto prompt = at::randn({16, 128});
    const auto among = q128.linear(prompt, bias).narrow(0, 5, 1);
    const auto alone = q128.linear(prompt.narrow(0, 5, 1), bias);
    CHECK(rel(alone, among) < (c.act == QuantActivations::BFloat16 ? 1.0 / 128 : 1e-6));
  }
  // int4: two codes a byte, group scales and zeros; int8: a byte a weight and a scale a row.
  const auto i4 = lathe::nn::quantize_rtn(w, {QuantScheme::Int4WeightOnly, 32}, QuantActivations::BFloat16);
  CHECK(i4.bytes() == 96 * 64 + 2 * 96 * 4 * 4);
  CHECK(i4.codes().max().item<int>() <= 15);
  const auto i8 = lathe::nn::quantize_rtn(w, {QuantScheme::Int8WeightOnly, 0}, QuantActivations::Float32);
  CHECK(i8.bytes() == 96 * 128 + 96 * 4);
  CHECK_THROWS_WITH(lathe::nn::quantize_rtn(at::randn({8, 48}), {QuantScheme::Int4WeightOnly, 32},
                                            QuantActivations::BFloat16),
                    Catch::Contains("groups of 32 inputs do not tile the 48 inputs"));
}

TEST_CASE("quantize: every scheme has its row: spelling, grid, packing and kernel agree with its traits",
          "[quantize]") {
  const auto rows = lathe::nn::quant_schemes();
  const auto& spelled = lathe::EnumTable<QuantScheme>::values;
  REQUIRE(rows.size() == spelled.size());
  torch::manual_seed(3);
  const int64_t out = 48, in = 128;
  const auto w = at::randn({out, in}) * 0.05;
  const auto bias = at::randn({out});
  const auto x = at::randn({2, 9, in});  // 18 rows: past lathe's few-rows product, on the scheme's kernel
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    INFO(row.name);
    CHECK(row.scheme == spelled[i].first);
    CHECK(row.name == spelled[i].second);
    CHECK(&lathe::nn::quant_scheme(row.scheme) == &row);
    const bool grouped = row.group_rule == lathe::nn::QuantGroupRule::PerGroup;
    const QuantGrid grid{row.scheme, grouped ? row.group_sizes.front() : 0};
    const int64_t g = grid.group(in);
    CHECK(g == (grouped ? row.group_sizes.front() : in));

    // The grid: codes in the range of `bits`, each weight within half a step of its value.
    const auto q = lathe::nn::quantize_rtn(w, grid, row.default_activations);
    CHECK(q.codes().scalar_type() == row.code_dtype);
    const int64_t levels = int64_t{1} << row.bits;
    const auto lo = row.symmetric ? -(levels / 2 - 1) : 0, hi = row.symmetric ? levels / 2 - 1 : levels - 1;
    CHECK(q.codes().to(at::kLong).min().item<int64_t>() >= lo);
    CHECK(q.codes().to(at::kLong).max().item<int64_t>() <= hi);
    CHECK(q.zeros().defined() == !row.symmetric);
    const auto step = q.scales().reshape({out, in / g, 1}).expand({out, in / g, g}).reshape({out, in});
    CHECK(((q.dequantize() - w).abs() - step / 2).max().item<double>() <= 1e-6);

    // Packing: every code of the range survives, in bits / 8 of a byte each.
    const auto codes = at::randint(lo, hi + 1, {out, in}).to(row.code_dtype);
    const auto packed = row.pack(codes);
    CHECK(packed.scalar_type() == row.storage_dtype);
    CHECK(packed.sizes() == at::IntArrayRef{out, in * row.bits / 8});
    CHECK(at::equal(row.unpack(packed, in), codes));
    const auto back = lathe::nn::QuantizedWeight::from_stored(grid, row.default_activations, q.stored(), in);
    CHECK(at::equal(back.codes(), q.codes()));
    CHECK(q.bytes() == out * in * row.bits / 8 + (row.symmetric ? 1 : 2) * out * (in / g) * 4);

    // The kernel against PyTorch's float product with the dequantized weight, in each compute
    // dtype the scheme takes: float32 exact to rounding, bfloat16 activations within bfloat16's
    // precision, quantized activations within their 7-bit codes' error.
    for (const auto act : {QuantActivations::Float32, QuantActivations::BFloat16}) {
      if (row.quantizes_activations && act != row.default_activations) continue;
      INFO(lathe::enum_name(act));
      const auto qa = lathe::nn::quantize_rtn(w, grid, act);
      const double budget = row.quantizes_activations ? 2e-2 : act == QuantActivations::BFloat16 ? 1e-2 : 1e-6;
      const auto y = qa.linear(x, bias);
      CHECK(y.sizes() == at::IntArrayRef{2, 9, out});
      CHECK(rel(y, at::linear(x, qa.dequantize(), bias)) < budget);
    }
  }
}

TEST_CASE("quantize: GPTQ equals the paper's algorithm and beats round-to-nearest", "[quantize][reference]") {
  const int64_t out = 24, in = 64;
  auto gen = at::detail::createCPUGenerator(7);
  const auto w = at::randn({out, in}, gen) * 0.1;
  auto x = correlated(256, in, 8);
  auto held_out = correlated(256, in, 9);
  for (auto* t : {&x, &held_out}) t->select(1, 5).zero_();  // an input that never fires
  for (const auto& [bits, group] : std::vector<std::pair<int, int64_t>>{{8, 0}, {4, 32}}) {
    INFO("bits " << bits << " group " << group);
    const QuantGrid grid{bits == 4 ? QuantScheme::Int4WeightOnly : QuantScheme::Int8WeightOnly, group};
    const double damp = 0.01;
    TempDir dir;
    lathe::io::save_safetensors(dir.path() / "in.safetensors",
                                {{"w", w}, {"x", x},
                                 {"config", at::tensor(std::vector<double>{double(bits), double(group), damp})}});
    lathe::test::run_reference("gptq.py", {(dir.path() / "in.safetensors").string(), (dir.path() / "ref.safetensors").string()});
    const auto ref = lathe::io::load_safetensors(dir.path() / "ref.safetensors").tensors;
    const auto get = [&](const std::string& k) {
      for (const auto& [name, t] : ref)
        if (name == k) return t;
      FAIL("no " << k);
      return at::Tensor();
    };
    const auto H = 2.0 * x.to(at::kDouble).t().matmul(x.to(at::kDouble)) / 256.0;
    // Lazy blocks of 16 columns: the updates of a block reach the columns after it at its end.
    const auto q = lathe::compress::gptq(w, H, grid, QuantActivations::Float32, damp, /*block_size=*/16);
    const auto codes = q.codes().to(at::kDouble);
    CHECK(at::equal(codes, get("codes")));
    CHECK(q.dequantize().to(at::kDouble).allclose(get("q"), 1e-6, 1e-6));
    if (bits == 8) CHECK(q.dequantize().select(1, 5).abs().max().item<double>() == 0.0);

    const auto rtn = lathe::nn::quantize_rtn(w, grid, QuantActivations::Float32);
    CHECK(at::equal(rtn.codes().to(at::kDouble), get("rtn_codes")));
    for (const auto& inputs : {x, held_out}) {
      const auto y = inputs.matmul(w.t());
      const double e_gptq = rel(inputs.matmul(q.dequantize().t()), y);
      const double e_rtn = rel(inputs.matmul(rtn.dequantize().t()), y);
      INFO("output error gptq " << e_gptq << " rtn " << e_rtn);
      CHECK(e_gptq < e_rtn);
    }
  }
}

TEST_CASE("quantize: every quantized layer of a trained GPT stays within its budget on real activations",
          "[quantize][train]") {
  TrainedRun run(30);
  const auto& data = run.data;
  const auto ckpt = lathe::train::newest_checkpoint(run.r);
  // Budgets: ||y_q - y|| / ||y|| of each layer on the inputs it sees in the float model.
  const std::map<std::pair<QuantScheme, QuantAlgorithm>, double> budget{
      {{QuantScheme::Int8Dynamic, QuantAlgorithm::Rtn}, 0.03},
      {{QuantScheme::Int8WeightOnly, QuantAlgorithm::Rtn}, 0.02},
      {{QuantScheme::Int8WeightOnly, QuantAlgorithm::Gptq}, 0.02},
      {{QuantScheme::Int4WeightOnly, QuantAlgorithm::Rtn}, 0.25},
      {{QuantScheme::Int4WeightOnly, QuantAlgorithm::Gptq}, 0.25}};
  const auto batch = data->val_batch(0);
  for (const auto& [key, limit] : budget) {
    const auto [scheme, algorithm] = key;
    INFO(lathe::enum_name(scheme) << " " << lathe::enum_name(algorithm));
    auto fp = lathe::models::load_model(ckpt);
    auto model = lathe::models::load_model(ckpt);
    std::map<std::string, at::Tensor> inputs;
    for (const auto& [path, lin] : lathe::nn::linear_layers(*fp.module()))
      lin->input_observer = [&inputs, p = path](const at::Tensor& x) { inputs[p] = x.detach().clone(); };
    {
      torch::NoGradGuard no_grad;
      fp.as<lathe::models::Gpt>()->forward(batch.input_ids);
    }
    QuantizeOptions o;
    o.method = scheme;
    o.algorithm = algorithm;
    o.group_size = 32;
    o.calibration_batches = 2;
    lathe::compress::Calibration calibration{2, [&](int64_t i, bool) {
                                               torch::NoGradGuard no_grad;
                                               model.as<lathe::models::Gpt>()->forward(
                                                   data->train_batch(static_cast<uint64_t>(i)).input_ids);
                                             }};
    const auto layers = lathe::compress::quantize_model(model, o, &calibration);
    // The blocks' matrices are quantized; the tied output head is the embedding and stays float.
    CHECK(layers.size() == 2 * 4);
    const auto fp_layers = lathe::nn::linear_layers(*fp.module());
    for (const auto& [path, lin] : lathe::nn::linear_layers(*model.module())) {
      REQUIRE(lin->quantized());
      torch::NoGradGuard no_grad;
      const auto& x = inputs.at(path);
      const auto it = std::find_if(fp_layers.begin(), fp_layers.end(), [&](const auto& l) { return l.first == path; });
      const double e = rel(lin->forward(x), it->second->forward(x));
      INFO(path << " relative output error " << e);
      CHECK(e < limit);
    }
    for (const auto& l : layers) {
      CHECK(l.output_error.has_value() == (algorithm == QuantAlgorithm::Gptq));
      CHECK(l.quantized_bytes < l.float_bytes / 3);
    }
  }
}

TEST_CASE("quantize: quantize, save, load and evaluate gives what quantize and evaluate gives", "[quantize][train]") {
  TrainedRun run(4);
  auto& r = run.r;
  const auto& data = run.data;
  const auto& dir = run.dir;
  r.eval.batches = 2;
  for (auto scheme : {QuantScheme::Int8Dynamic, QuantScheme::Int8WeightOnly, QuantScheme::Int4WeightOnly}) {
    INFO(lathe::enum_name(scheme));
    auto model = lathe::models::load_model(lathe::train::newest_checkpoint(r));
    QuantizeOptions o;
    o.method = scheme;
    o.group_size = 32;
    lathe::compress::quantize_model(model, o);
    const auto in_memory = lathe::train::evaluate_model(r, model, *data, at::kCPU).metrics;
    const auto file = dir.path() / (std::string(lathe::enum_name(scheme)) + ".safetensors");
    lathe::models::save_model(model, file);
    const auto loaded = lathe::models::load_model(file);
    CHECK(lathe::models::quantized_layers(loaded).size() == 8);
    CHECK(lathe::train::evaluate_model(r, loaded, *data, at::kCPU).metrics == in_memory);
    // A quantized file missing a part names the file and the layer.
    auto st = lathe::io::load_safetensors(file);
    std::vector<std::pair<std::string, at::Tensor>> kept;
    for (const auto& [name, t] : st.tensors)
      if (name != "blocks.0.attn.qkv.scales") kept.emplace_back(name, t);
    const auto broken = dir.path() / "broken.safetensors";
    lathe::io::save_safetensors(broken, kept, st.metadata);
    CHECK_THROWS_WITH(lathe::models::load_model(broken),
                      Catch::Contains(broken.string() + ": quantized layer 'blocks.0.attn.qkv': missing tensor scales"));
    // A quantized model is not quantized again.
    auto again = lathe::models::load_model(file);
    CHECK_THROWS_WITH(lathe::compress::quantize_model(again, o), Catch::Contains("already quantized"));
  }
}

TEST_CASE("quantize: a tied output head is quantized as a copy, the embedding stays float", "[quantize][train]") {
  TrainedRun run(4);
  run.r.eval.batches = 2;
  auto model = lathe::models::load_model(lathe::train::newest_checkpoint(run.r));
  REQUIRE(model.as<lathe::models::Gpt>()->options.tie_embeddings);
  const auto table = model.as<lathe::models::Gpt>()->wte->weight.clone();
  const auto float_metrics = lathe::train::evaluate_model(run.r, model, *run.data, at::kCPU).metrics;
  QuantizeOptions o;
  o.skip_modules = {};
  const auto layers = lathe::compress::quantize_model(model, o);
  REQUIRE(layers.size() == 9);
  CHECK(layers.back().name == "lm_head");
  CHECK(at::equal(model.as<lathe::models::Gpt>()->wte->weight, table));
  const auto in_memory = lathe::train::evaluate_model(run.r, model, *run.data, at::kCPU).metrics;
  CHECK(in_memory.at("loss") != float_metrics.at("loss"));
  const auto file = run.dir.path() / "head.safetensors";
  lathe::models::save_model(model, file);
  const auto loaded = lathe::models::load_model(file);
  CHECK(loaded.as<lathe::models::Gpt>()->options.tie_embeddings);
  CHECK(lathe::models::quantized_layers(loaded).count("lm_head") == 1);
  CHECK(lathe::train::evaluate_model(run.r, loaded, *run.data, at::kCPU).metrics == in_memory);
}

TEST_CASE("quantize: the stage's GPTQ calibrates the output head on its inputs as the paper's algorithm does",
          "[quantize][train][reference]") {
  TrainedRun run(4);
  auto r = run.r;
  r.quantize.method = QuantScheme::Int8WeightOnly;
  r.quantize.algorithm = QuantAlgorithm::Gptq;
  r.quantize.calibration_batches = 2;
  r.quantize.skip_modules = {};
  const auto ckpt = lathe::train::newest_checkpoint(r);
  lathe::pipeline::run_quantize_stage(r, false);
  const auto quantized = lathe::models::load_model(fs::path(r.run.out_dir) / "quantized" / "model.safetensors");
  const auto layers = lathe::models::quantized_layers(quantized);
  REQUIRE(layers.count("lm_head") == 1);
  // The head is the last layer: its inputs are the final hidden states of the calibration
  // batches through the model with every block quantized.
  std::vector<at::Tensor> hidden;
  {
    torch::NoGradGuard no_grad;
    auto m = quantized;
    for (int64_t i = 0; i < 2; ++i) {
      const auto h = m.as<lathe::models::Gpt>()->hidden(run.data->train_batch(static_cast<uint64_t>(i)).input_ids);
      hidden.push_back(h.reshape({-1, h.size(-1)}));
    }
  }
  const auto w =
      lathe::models::load_model(ckpt).as<lathe::models::Gpt>()->wte->weight.detach().clone();  // the tied head
  TempDir dir;
  lathe::io::save_safetensors(dir.path() / "in.safetensors",
                              {{"w", w}, {"x", at::cat(hidden)}, {"config", at::tensor(std::vector<double>{8, 0, 0.01})}});
  lathe::test::run_reference("gptq.py", {(dir.path() / "in.safetensors").string(), (dir.path() / "ref.safetensors").string()});
  const auto ref = lathe::io::load_safetensors(dir.path() / "ref.safetensors").tensors;
  const auto head = layers.at("lm_head");
  for (const auto& [name, t] : ref) {
    if (name == "codes") CHECK(at::equal(head->codes().to(at::kDouble), t));
    if (name == "q") CHECK(head->dequantize().to(at::kDouble).allclose(t, 1e-6, 1e-6));
  }
}

TEST_CASE("quantize: the stage reports, eval, generate and export read its model, a change re-runs it",
          "[quantize][train]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  auto r = lathe::test::prepared(corpus.recipe(dir.path() / "run", "max_steps: 6, batch_size: 4",
                                                "quantize: {method: int4_weight_only, algorithm: gptq, group_size: 32, "
                                                "calibration_batches: 2}\neval: {batches: 2}\n"
                                                "generate: {prompts: [In the beginning], max_new_tokens: 4}\n"
                                                "export: {format: hf}\n"));
  r.pipeline = {lathe::recipe::Stage::Train, lathe::recipe::Stage::Quantize, lathe::recipe::Stage::Eval,
                lathe::recipe::Stage::Generate, lathe::recipe::Stage::Export};
  std::ostringstream log;
  lathe::pipeline::run_pipeline(r, {}, log);
  INFO(log.str());
  const fs::path out = r.run.out_dir;
  const auto report = json::parse(lathe::test::read_file(out / "quantize.json"));
  const auto model_file = (out / "quantized" / "model.safetensors").string();
  CHECK(report["model"] == model_file);
  CHECK(report["linear_weights"]["ratio"].get<double>() < 0.2);
  CHECK(report["after"]["weight_bytes"].get<int64_t>() < report["before"]["weight_bytes"].get<int64_t>());
  CHECK(report["after"]["latency_ms"]["batch_8"].get<double>() > 0);
  CHECK(report["layers"].size() == 8);
  for (const auto& [name, layer] : report["layers"].items()) CHECK(layer.contains("output_error"));
  CHECK_THAT(log.str(), Catch::Contains("int4_weight_only (gptq, groups of 32, bfloat16 activations)"));
  CHECK(report["kept_float"] == json::array({"lm_head (the token embedding, tied)"}));
  // eval reads the quantized model and finds what the stage reported.
  const auto eval = json::parse(lathe::test::read_file(out / "eval.json"));
  CHECK(eval["checkpoint"] == model_file);
  CHECK(eval["metrics"]["loss"].get<double>() == report["after"]["metrics"]["loss"].get<double>());
  CHECK(fs::exists(out / "export" / "config.json"));
  CHECK_THAT(log.str(), Catch::Contains("quantized weights written as the float values their codes stand for"));

  std::ostringstream again;
  lathe::pipeline::run_pipeline(r, {}, again);
  CHECK_THAT(again.str(), Catch::Contains("stage quantize: skipped"));
  r.quantize.method = QuantScheme::Int8Dynamic;
  std::ostringstream changed;
  lathe::pipeline::run_pipeline(r, {}, changed);
  CHECK_THAT(changed.str(), Catch::Contains("quantize.method: int4_weight_only -> int8_dynamic"));
  CHECK_THAT(changed.str(), Catch::Contains("stage eval: "));
  CHECK(json::parse(lathe::test::read_file(out / "quantize.json"))["scheme"] == "int8_dynamic (gptq)");

  // A Hugging Face directory (the export: float values again) is quantized like a checkpoint.
  auto from_hf = r;
  from_hf.run.out_dir = (dir.path() / "from_hf").string();
  from_hf.tokenizer.path = lathe::recipe::tokenizer_path(r).string();
  from_hf.data.shard_dir = lathe::recipe::shard_dir(r).string();
  from_hf.pipeline = {lathe::recipe::Stage::Quantize, lathe::recipe::Stage::Eval};
  from_hf.quantize.source = lathe::recipe::ModelSource::Checkpoint;
  from_hf.quantize.checkpoint = (out / "export").string();
  std::ostringstream hf_log;
  lathe::pipeline::run_pipeline(from_hf, {}, hf_log);
  INFO(hf_log.str());
  const auto hf_report = json::parse(lathe::test::read_file(fs::path(from_hf.run.out_dir) / "quantize.json"));
  CHECK(hf_report["source"] == (out / "export").string());
  CHECK(hf_report["layers"].size() == 8);
  CHECK(json::parse(lathe::test::read_file(fs::path(from_hf.run.out_dir) / "eval.json"))["checkpoint"] ==
        (fs::path(from_hf.run.out_dir) / "quantized" / "model.safetensors").string());

  // A quantized model cannot be quantized again, nor trained.
  auto twice = r;
  twice.quantize.source = lathe::recipe::ModelSource::Checkpoint;
  twice.quantize.checkpoint = model_file;
  CHECK_THROWS_WITH(lathe::pipeline::run_quantize_stage(twice, true),
                    Catch::Contains(model_file + " is already quantized"));
  auto train_on = r;
  train_on.train.init_from = model_file;
  train_on.run.out_dir = (dir.path() / "other").string();
  train_on.tokenizer.path = lathe::recipe::tokenizer_path(r).string();
  train_on.data.shard_dir = lathe::recipe::shard_dir(r).string();
  CHECK_THROWS_WITH(lathe::pipeline::run_train_stage(train_on, false), Catch::Contains("is a quantized model"));
}

TEST_CASE("quantize: bad settings are refused with the key to change", "[quantize][errors]") {
  lathe::test::Corpus corpus;
  TempDir dir;
  const auto base = corpus.recipe(dir.path() / "run", "max_steps: 2");
  auto refused = [&](const std::string& more, const std::string& message) {
    INFO(more);
    CHECK_THROWS_WITH(lathe::test::recipe_from(base + more), Catch::Contains(message));
  };
  refused("quantize: {method: int4_weight_only, group_size: 48}\n",
          "quantize.group_size: int4 groups of 48 inputs: ATen's int4 kernels take 32, 64, 128 or 256");
  refused("quantize: {method: int8_dynamic, activations: bfloat16}\n",
          "quantize.activations: int8_dynamic quantizes activations to int8 itself");
  refused("quantize: {source: quantized}\n", "quantize.source: a quantized model cannot be quantized again");
  refused("quantize: {algorithm: optimal}\n", "quantize.algorithm");

  // A layer whose inputs the groups do not tile is named, with the keys that fix it.
  lathe::models::ModelOptions o;
  o.n_layer = 1;
  o.n_head = 2;
  o.d_model = 48;
  o.max_seq_len = 8;
  o.vocab_size = 32;
  auto model = lathe::models::make_model(ModelKind::Gpt, o);
  QuantizeOptions q;
  q.method = QuantScheme::Int4WeightOnly;
  q.group_size = 32;
  CHECK_THROWS_WITH(lathe::compress::quantize_model(model, q),
                    Catch::Contains("blocks.0.attn.qkv: int4 groups of 32 inputs do not tile its 48 inputs; set "
                                    "quantize.group_size"));
  q.algorithm = QuantAlgorithm::Gptq;
  q.method = QuantScheme::Int8WeightOnly;
  CHECK_THROWS_WITH(lathe::compress::quantize_model(model, q), Catch::Contains("gptq needs calibration batches"));

  // A skip_modules path that selects nothing is a typo that would quantize what it meant to keep.
  q.algorithm = QuantAlgorithm::Rtn;
  for (const std::string typo : {"blokcs.0.*", "lm_haed"}) {
    q.skip_modules = {"output_head", typo};
    CHECK_THROWS_WITH(lathe::compress::quantize_model(model, q),
                      Catch::Contains("quantize.skip_modules: '" + typo + "' selects no parameter of the model"));
  }
  q.skip_modules = {"lm_head", "blocks.0.mlp.*"};  // the tied head and a path pattern that exist
  CHECK(lathe::compress::quantize_model(model, q).size() == 2);

  // A summary never calls a slower model faster.
  CHECK(lathe::pipeline::speed_change(1.0, 1.0 / 0.49) == "2.04x slower");
  CHECK(lathe::pipeline::speed_change(3.0, 2.0) == "1.50x faster");
}
