// Tokens per second delivered by lathe's GPT window loader from memory-mapped shards.
//
//   build/lathe_bench_loader SHARD_DIR_OR_FILES... [--seq-len 1024] [--batch 16] [--steps 2000]
//
// Prints one line: "lathe_loader tokens_per_s=<N> batches=<B> seq_len=<T> batch=<B>" for
// scripts/bench/data_bench.py, which runs the numpy memmap loader beside it.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lathe/data/collate.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/io/inputs.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> inputs;
  int64_t seq_len = 1024, batch = 16, steps = 2000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seq-len" && i + 1 < argc) seq_len = std::stoll(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::stoll(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::stoll(argv[++i]);
    else inputs.push_back(a);
  }
  std::vector<lathe::data::Shard> shards;
  for (const auto& p : lathe::io::expand_inputs(inputs))
    if (p.extension() == ".bin") shards.emplace_back(p);
  lathe::data::TokenStream stream(std::move(shards));
  lathe::data::WindowSamplerOptions o;
  o.seq_len = seq_len;
  o.batch_size = batch;
  lathe::data::WindowSampler sampler(stream, o);
  std::vector<int32_t> rows;
  int64_t checksum = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    sampler.next(rows);
    auto b = lathe::data::make_lm_batch(rows, batch, seq_len);  // (B, T) int64 tensors, as training gets them
    checksum += b.input.data_ptr<int64_t>()[0];
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("lathe_loader tokens_per_s=%.0f batches=%lld seq_len=%lld batch=%lld checksum=%lld\n",
              static_cast<double>(steps * batch * seq_len) / sec, static_cast<long long>(steps),
              static_cast<long long>(seq_len), static_cast<long long>(batch), static_cast<long long>(checksum));
}
