// lathe's side of scripts/bench/onnx.sh: exports a model to ONNX in float32 and int8, and times
// LibTorch's forward of the same model, so the script can put ONNX Runtime on lathe's graphs
// next to LibTorch and next to PyTorch's own export.
//
//   lathe_bench_onnx --model PATH --export DIR
//       writes DIR/lathe_fp32/ and DIR/lathe_int8/ (int8_dynamic, round-to-nearest, the output
//       head float as the quantize stage leaves it) with model.onnx (+ the GPT's decoder with past)
//   lathe_bench_onnx --model PATH --batch 8 --seq 128 --reps 10
//       prints one JSON line per variant (fp32, int8_dynamic): the median of `reps` forwards
//       after two warm-up forwards, on random token ids
//
// PATH: a lathe model file or a Hugging Face directory.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/core/host_memory.hpp"
#include "lathe/export/onnx.hpp"
#include "lathe/models/store.hpp"

namespace {

void quantize(lathe::models::AnyModel& m) {
  lathe::compress::QuantizeOptions o;
  o.method = lathe::nn::QuantScheme::Int8Dynamic;
  lathe::compress::quantize_model(m, o);
}

at::Tensor forward(lathe::models::AnyModel& m, const at::Tensor& ids) {
  const auto mask = at::ones_like(ids);
  switch (m.kind()) {
    case lathe::models::ModelKind::Gpt: return m.as<lathe::models::Gpt>()->forward(ids);
    case lathe::models::ModelKind::BertMaskedLm:
      return m.as<lathe::models::BertForMaskedLM>()->forward(ids, at::zeros_like(ids), mask);
    case lathe::models::ModelKind::BertClassifier:
      return m.as<lathe::models::BertForSequenceClassification>()->forward(ids, at::zeros_like(ids), mask);
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  lathe::core::keep_freed_host_memory();  // as the lathe binary does
  std::string model_path, export_dir;
  int64_t batch = 8, seq = 128, reps = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(argv[++i]); };
    if (a == "--model") model_path = next();
    else if (a == "--export") export_dir = next();
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--seq") seq = std::stoll(next());
    else if (a == "--reps") reps = std::stoll(next());
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  torch::NoGradGuard no_grad;
  if (!export_dir.empty()) {
    for (bool int8 : {false, true}) {
      auto m = lathe::models::load_model(model_path);
      if (int8) quantize(m);
      lathe::export_::OnnxOptions o;
      const auto e = lathe::export_::export_onnx(m, o);
      lathe::export_::write_onnx(e, export_dir + (int8 ? "/lathe_int8" : "/lathe_fp32"));
    }
    return 0;
  }
  for (bool int8 : {false, true}) {
    auto m = lathe::models::load_model(model_path);
    m.module()->eval();
    if (int8) quantize(m);
    const auto ids = at::randint(0, m.vocab_size(), {batch, seq}, at::kLong);
    std::vector<double> ms;
    for (int64_t r = 0; r < reps + 2; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      forward(m, ids);
      const auto t1 = std::chrono::steady_clock::now();
      if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("{\"side\": \"lathe_libtorch\", \"variant\": \"%s\", \"batch\": %ld, \"ms\": %.3f}\n",
                int8 ? "int8" : "fp32", static_cast<long>(batch), ms[ms.size() / 2]);
    std::fflush(stdout);
  }
  return 0;
}
