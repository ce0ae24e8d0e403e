// Forward latency of a lathe model in float32, bfloat16 and each quantization scheme, for
// scripts/bench/quantize.sh (which times PyTorch's own int8 paths on the same weights in the
// same run). Prints one JSON line per variant.
//
//   lathe_bench_quantize --model PATH --part encoder|lm --batch 8 --seq 128 --reps 10
//                        [--group 128] [--variants fp32,bf16,int8_dynamic,int8_weight_only,int4_weight_only]
//                        [--head]
//
// PATH: a lathe model file or a Hugging Face directory. part encoder: BERT's encoder alone
// (hidden states); lm: a GPT's logits. Quantized variants are round-to-nearest of every block
// matrix; the output head stays float (the quantize stage's default) unless --head. Each variant is timed
// with the same random token ids: the median of `reps` forwards after two warm-up forwards.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "lathe/compress/quantize.hpp"
#include "lathe/core/enum_table.hpp"
#include "lathe/core/host_memory.hpp"
#include "lathe/models/store.hpp"

namespace {

at::Tensor forward(lathe::models::AnyModel& m, const std::string& part, const at::Tensor& ids) {
  if (part == "encoder") {
    if (m.kind() == lathe::models::ModelKind::BertClassifier)
      return m.as<lathe::models::BertForSequenceClassification>()->bert->forward(ids);
    return m.as<lathe::models::BertForMaskedLM>()->bert->forward(ids);
  }
  return m.as<lathe::models::Gpt>()->forward(ids);
}

}  // namespace

int main(int argc, char** argv) {
  lathe::core::keep_freed_host_memory();  // as the lathe binary does
  std::string model_path, part = "lm", variants = "fp32,bf16,int8_dynamic,int8_weight_only,int4_weight_only";
  int64_t batch = 8, seq = 128, reps = 10, group = 128;
  std::vector<std::string> skip{"output_head"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(argv[++i]); };
    if (a == "--model") model_path = next();
    else if (a == "--part") part = next();
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--seq") seq = std::stoll(next());
    else if (a == "--reps") reps = std::stoll(next());
    else if (a == "--group") group = std::stoll(next());
    else if (a == "--variants") variants = next();
    else if (a == "--head") skip.clear();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  torch::NoGradGuard no_grad;
  std::stringstream list(variants);
  std::string variant;
  while (std::getline(list, variant, ',')) {
    auto model = lathe::models::load_model(model_path);
    model.module()->eval();
    const auto ids = at::randint(0, model.vocab_size(), {batch, seq}, at::TensorOptions().dtype(at::kLong).device(at::kCPU));
    int64_t linear_bytes = 0;
    for (const auto& [path, lin] : lathe::compress::quantizable(model, skip))
      linear_bytes += lin->weight.numel() * 4;
    if (const auto head = model.tied_head(); skip.empty() && head)
      linear_bytes += head->tensor.numel() * 4;  // the tied head, quantized as a copy
    if (variant == "bf16") {
      model.module()->to(at::kBFloat16);
      linear_bytes /= 2;
    } else if (variant != "fp32") {
      lathe::compress::QuantizeOptions o;
      const auto scheme = lathe::parse_enum<lathe::nn::QuantScheme>(variant);
      if (!scheme) {
        std::fprintf(stderr, "unknown variant %s\n", variant.c_str());
        return 2;
      }
      o.method = *scheme;
      o.group_size = group;
      o.skip_modules = skip;
      linear_bytes = 0;
      for (const auto& l : lathe::compress::quantize_model(model, o)) linear_bytes += l.quantized_bytes;
    }
    std::vector<double> ms;
    for (int64_t r = 0; r < reps + 2; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      (void)forward(model, part, ids).sum().item<double>();
      if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("{\"variant\": \"%s\", \"ms\": %.3f, \"linear_bytes\": %lld}\n", variant.c_str(), ms[ms.size() / 2],
                static_cast<long long>(linear_bytes));
    std::fflush(stdout);
  }
  return 0;
}
