// The decoding product of one row, lathe's small-rows kernels against ATen's own, side by side in
// one run: the rate each streams the weights (GB/s) and the ratio. The weights are several
// copies of the layer, together beyond the caches, used in turn as a decoder's layers are.
//
//   build/lathe_bench_gemv [--threads 1,2] [--rows 1] [--reps 20] [--mb 768]
//                          [--types float32,bfloat16,bfloat16-widened,int8,int4] [--group 128]
//
// Per weight type (peer in brackets): float32 x (at::linear); bfloat16 x (at::linear), with the
// avx512_bf16 dot product and with the widening kernel; int8 weight-only, bfloat16 x
// (at::_weight_int8pack_mm); int4 weight-only in groups of 128 (quantize.group_size's
// default; lathe's kernel takes 64 and more), bfloat16 x
// (at::_weight_int4pack_mm_for_cpu). Each line also gives the largest difference between the
// two results, relative to the largest value: the same product on both sides.
// Shapes: a ~1B Llama's q/o projection (2048 x 2048), its MLP (5632 x 2048, 2048 x 5632) and
// GPT-2's vocabulary head (50304 x 768). Prints which kernels ran, then one line per case.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "lathe/nn/gemv.hpp"

namespace {

int64_t a_group = 128;  // --group: the int4 group size

struct Args {
  std::vector<int> threads{1, 2};
  int64_t rows = 1;
  int reps = 20;
  int64_t mb = 768;
  std::vector<std::string> types{"float32", "bfloat16", "bfloat16 (widened)", "int8", "int4"};
};

std::vector<int> int_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

std::vector<std::string> names(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    out.push_back(item == "bfloat16-widened" ? "bfloat16 (widened)" : item);
  return out;
}

constexpr const char* kUsage =
    "usage: lathe_bench_gemv [--threads 1,2] [--rows 1] [--reps 20] [--mb 768]\n"
    "                        [--types float32,bfloat16,bfloat16-widened,int8,int4] [--group 128]\n"
    "One-row decoding products, lathe's against ATen's: GB/s of weights read and the ratio.\n";

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "-h" || key == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(key + " needs a value");
    const std::string value = argv[i + 1];
    if (key == "--threads") a.threads = int_list(value);
    else if (key == "--rows") a.rows = std::stoll(value);
    else if (key == "--reps") a.reps = std::stoi(value);
    else if (key == "--mb") a.mb = std::stoll(value);
    else if (key == "--types") a.types = names(value);
    else if (key == "--group") a_group = std::stoll(value);
    else throw std::invalid_argument("unknown argument " + key);
  }
  const std::vector<std::string> known{"float32", "bfloat16", "bfloat16 (widened)", "int8", "int4"};
  for (const auto& t : a.types)
    if (std::find(known.begin(), known.end(), t) == known.end())
      throw std::invalid_argument("--types: unknown type '" + t +
                                  "' (float32, bfloat16, bfloat16-widened, int8, int4)");
  if (a.rows < 1 || a.rows > lathe::nn::kSmallRowsMax || a.reps < 1 || a.mb < 1 || a_group < 1)
    throw std::invalid_argument("--rows takes 1 to 8; --reps, --mb and --group positive numbers");
  return a;
}

/// Median seconds of one pass over all copies.
double time_pass(int reps, const std::function<void()>& pass) {
  pass();  // warm-up: pages touched, threads started
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

/// One weight type's layer, in copies: lathe's product and the peer's for copy c.
struct Case {
  double bytes_per_copy = 0;
  int64_t copies = 0;
  std::function<at::Tensor(int64_t)> lathe, peer;
};

Case make_case(const std::string& type, int64_t out, int64_t in, int64_t rows, int64_t mb) {
  Case k;
  const double elements = static_cast<double>(out) * in;
  k.bytes_per_copy = type == "float32" ? 4 * elements
                     : type == "int8"  ? elements + 4.0 * out
                     : type == "int4"  ? elements / 2 + 8.0 * out * in / a_group
                                       : 2 * elements;
  k.copies = std::max<int64_t>(2, static_cast<int64_t>(mb * 1048576.0 / k.bytes_per_copy + 0.5));
  const auto xf = at::randn({rows, in});
  const auto xb = xf.to(at::kBFloat16);
  std::vector<at::Tensor> w, codes, scales, scales_bf16, packed4, scales4;
  std::vector<lathe::nn::SmallRowsInt4> forms;
  for (int64_t c = 0; c < k.copies; ++c) {
    const auto f = at::randn({out, in}) * 0.02;
    if (type == "float32") {
      w.push_back(f);
    } else if (type.rfind("bfloat16", 0) == 0) {
      w.push_back(f.to(at::kBFloat16));
    } else if (type == "int8") {
      const auto s = f.abs().amax(1) / 127;
      codes.push_back((f / s.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar));
      scales.push_back(s.contiguous());
      scales_bf16.push_back(s.to(at::kBFloat16));
    } else {
      const auto q = at::randint(0, 16, {out, in}, at::kByte);
      const auto s = at::rand({out, in / a_group}) * 0.01 + 1e-3, z = at::randn({out, in / a_group}) * 0.01;
      forms.push_back(lathe::nn::small_rows_int4_pack(q, s, z, a_group));
      packed4.push_back(at::_convert_weight_to_int4pack_for_cpu(q.to(at::kInt), /*innerKTiles=*/2));
      scales4.push_back(at::stack({s, z}, -1).transpose(0, 1).contiguous().to(at::kBFloat16));
    }
  }
  if (type == "float32") {
    k.lathe = [=](int64_t c) { return lathe::nn::small_rows_linear(xf, w[c], {}); };
    k.peer = [=](int64_t c) { return at::linear(xf, w[c]); };
  } else if (type.rfind("bfloat16", 0) == 0) {
    k.lathe = [=](int64_t c) { return lathe::nn::small_rows_linear(xb, w[c], {}); };
    k.peer = [=](int64_t c) { return at::linear(xb, w[c]); };
  } else if (type == "int8") {
    k.lathe = [=](int64_t c) { return lathe::nn::small_rows_linear_int8(xb, codes[c], scales[c], {}); };
    k.peer = [=](int64_t c) { return at::_weight_int8pack_mm(xb, codes[c], scales_bf16[c]); };
  } else {
    k.lathe = [=](int64_t c) { return lathe::nn::small_rows_linear_int4(xb, forms[c], {}); };
    k.peer = [=](int64_t c) { return at::_weight_int4pack_mm_for_cpu(xb, packed4[c], a_group, scales4[c]); };
  }
  return k;
}

void run_case(const Args& a, const std::string& type, int64_t out, int64_t in) {
  const Case k = make_case(type, out, in, a.rows, a.mb);
  // bfloat16 (widened): the AVX-512F kernel a CPU without avx512_bf16 runs.
  const auto isa = type == "bfloat16 (widened)" ? lathe::nn::GemvIsa::Avx512F : lathe::nn::GemvIsa::Avx512Bf16;
  const lathe::nn::GemvIsaCap cap(isa);
  if (!k.lathe(0).defined()) {
    std::printf(
        "%-5ld x %-5ld %-19s lathe's product does not apply (this CPU, or int4 groups not 64 or a multiple of 128)\n",
        static_cast<long>(out), static_cast<long>(in), type.c_str());
    return;
  }
  // The same product on both sides: the largest difference relative to the peer's largest value.
  const auto ours = k.lathe(0).to(at::kFloat), theirs = k.peer(0).to(at::kFloat);
  const double diff = ((ours - theirs).abs().max() / theirs.abs().max()).item<double>();
  for (int threads : a.threads) {
    at::set_num_threads(threads);
    const double gb = k.bytes_per_copy * k.copies / 1e9;
    const double t_lathe = time_pass(a.reps, [&] {
      for (int64_t c = 0; c < k.copies; ++c) (void)k.lathe(c);
    });
    const double t_peer = time_pass(a.reps, [&] {
      for (int64_t c = 0; c < k.copies; ++c) (void)k.peer(c);
    });
    std::printf("%-5ld x %-5ld %-19s %d thread%s  lathe %6.1f GB/s  ATen %6.1f GB/s  lathe/ATen %5.2fx  (diff %.1e)\n",
                static_cast<long>(out), static_cast<long>(in), type.c_str(), threads, threads == 1 ? " " : "s",
                gb / t_lathe, gb / t_peer, t_peer / t_lathe, diff);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lathe_bench_gemv: %s\n%s", e.what(), kUsage);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a line per case, also into a pipe
  at::NoGradGuard no_grad;
  at::manual_seed(0);
  std::printf("decode kernels: %s; %ld row%s, %ld MB of weights a pass, median of %d passes\n",
              lathe::nn::gemv_kernels().c_str(), static_cast<long>(a.rows), a.rows == 1 ? "" : "s",
              static_cast<long>(a.mb), a.reps);
  const std::vector<std::pair<int64_t, int64_t>> shapes{{2048, 2048}, {5632, 2048}, {2048, 5632}, {50304, 768}};
  for (const auto& type : a.types)
    for (auto [out, in] : shapes) run_case(a, type, out, in);
  return 0;
}
