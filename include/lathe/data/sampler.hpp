// Windows of seq_len + 1 tokens for causal-LM training, drawn from shards.
//
// Batches are global: step s has one global batch of world_size * batch_size rows, and rank r
// reads rows [r * batch_size, (r + 1) * batch_size) of it. So W ranks of B rows see, together and
// bit for bit, what one process of W * B rows sees, and a run resumes on another world size with
// the same data order.
//
// random:     every global row draws its window start uniformly over the whole token stream,
//             from a counter-based generator keyed by (seed, step, row): deterministic, and
//             resumed exactly by restoring the step.
// sequential: the stream is cut into non-overlapping windows (stride seq_len, so each target
//             token is predicted once per epoch); each epoch shuffles them with (seed, epoch), and
//             the global batches take them in that order (a batch may straddle two epochs).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "lathe/data/shard.hpp"

namespace lathe::data {

/// Several shards read as one stream of tokens.
class TokenStream {
 public:
  explicit TokenStream(std::vector<Shard> shards);
  uint64_t size() const { return total_; }
  /// Copies tokens [from, from + n) into out; may cross shard boundaries.
  void read(uint64_t from, uint64_t n, int32_t* out) const;
  const std::vector<Shard>& shards() const { return shards_; }

 private:
  std::vector<Shard> shards_;
  std::vector<uint64_t> starts_;  // first global index of each shard
  uint64_t total_ = 0;
};

enum class SamplerMode { Random, Sequential };

struct WindowSamplerOptions {
  int64_t seq_len = 256;    // tokens per input row; rows hold seq_len + 1 (inputs and shifted targets)
  int64_t batch_size = 8;   // rows per batch
  uint64_t seed = 1337;
  int rank = 0;             // this process's rank ...
  int world_size = 1;       // ... among this many
  SamplerMode mode = SamplerMode::Random;
};

/// Where a sampler is; saving and restoring it resumes with the very next batch.
struct SamplerState {
  uint64_t step = 0;   // batches drawn so far
  uint64_t epoch = 0;  // sequential: the epoch of the last window drawn (derived from step)
};

class WindowSampler {
 public:
  WindowSampler(const TokenStream& stream, WindowSamplerOptions options);

  /// Fills `rows` with batch_size * (seq_len + 1) tokens, row-major.
  void next(std::vector<int32_t>& rows);
  /// Start offsets of the next batch's windows (what next() would read), advancing the state.
  std::vector<uint64_t> next_starts();
  /// Start offsets of the windows of batch `step`: a pure function of the options and the step,
  /// safe to call from several threads (the prefetching loader builds steps ahead).
  std::vector<uint64_t> starts_for(uint64_t step) const;
  /// The rows (batch_size * (seq_len + 1) tokens) of batch `step`.
  void rows_for(uint64_t step, std::vector<int32_t>& rows) const;

  SamplerState state() const { return state_; }
  void restore(const SamplerState& s);
  /// Windows per epoch, all ranks together (sequential mode).
  uint64_t windows() const;

 private:
  /// Sequential: the window indices of `epoch` in their shuffled order (cached for the latest epochs).
  std::shared_ptr<const std::vector<uint64_t>> order(uint64_t epoch) const;

  const TokenStream& stream_;
  WindowSamplerOptions o_;
  SamplerState state_;
  mutable std::mutex mu_;
  mutable std::map<uint64_t, std::shared_ptr<const std::vector<uint64_t>>> orders_;
};

/// splitmix64: the counter-based mixing used by the samplers (a documented, portable generator).
uint64_t splitmix64(uint64_t x);

}  // namespace lathe::data
