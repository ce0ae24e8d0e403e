#include "lathe/data/sampler.hpp"

#include <algorithm>

#include "lathe/core/error.hpp"

namespace lathe::data {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

TokenStream::TokenStream(std::vector<Shard> shards) : shards_(std::move(shards)) {
  for (const auto& s : shards_) {
    starts_.push_back(total_);
    total_ += s.size();
  }
}

void TokenStream::read(uint64_t from, uint64_t n, int32_t* out) const {
  if (from + n > total_) throw Error("token range past the end of the data");
  auto it = std::upper_bound(starts_.begin(), starts_.end(), from);
  std::size_t k = static_cast<std::size_t>(it - starts_.begin()) - 1;
  while (n > 0) {
    const uint64_t local = from - starts_[k];
    const uint64_t take = std::min(n, shards_[k].size() - local);
    shards_[k].read(local, take, out);
    out += take;
    from += take;
    n -= take;
    ++k;
  }
}

WindowSampler::WindowSampler(const TokenStream& stream, WindowSamplerOptions options) : stream_(stream), o_(options) {
  if (o_.seq_len < 1 || o_.batch_size < 1) throw Error("sampler: seq_len and batch_size must be positive");
  if (o_.world_size < 1 || o_.rank < 0 || o_.rank >= o_.world_size)
    throw Error("sampler: rank " + std::to_string(o_.rank) + " is outside a world of " + std::to_string(o_.world_size));
  if (stream_.size() < static_cast<uint64_t>(o_.seq_len) + 1)
    throw Error("the data holds " + std::to_string(stream_.size()) + " tokens, fewer than one window of seq_len + 1 = " +
                std::to_string(o_.seq_len + 1));
  const uint64_t global = static_cast<uint64_t>(o_.batch_size) * static_cast<uint64_t>(o_.world_size);
  if (o_.mode == SamplerMode::Sequential && windows() < global)
    throw Error("the data holds " + std::to_string(windows()) + " windows, fewer than one global batch of " +
                std::to_string(global) + (o_.world_size > 1 ? " (" + std::to_string(o_.world_size) + " ranks x " +
                                                                   std::to_string(o_.batch_size) + ")"
                                                             : std::string()));
}

uint64_t WindowSampler::windows() const { return (stream_.size() - 1) / static_cast<uint64_t>(o_.seq_len); }

std::shared_ptr<const std::vector<uint64_t>> WindowSampler::order(uint64_t epoch) const {
  {
    std::lock_guard lock(mu_);
    if (auto it = orders_.find(epoch); it != orders_.end()) return it->second;
  }
  auto all = std::make_shared<std::vector<uint64_t>>(windows());
  for (uint64_t i = 0; i < all->size(); ++i) (*all)[i] = i;
  // Fisher-Yates with splitmix64, so the order is the same on every platform and library.
  uint64_t counter = splitmix64(o_.seed ^ splitmix64(epoch + 0x5eed));
  for (uint64_t i = all->size(); i > 1; --i) {
    counter = splitmix64(counter);
    std::swap((*all)[i - 1], (*all)[counter % i]);
  }
  std::lock_guard lock(mu_);
  if (orders_.size() >= 2) orders_.erase(orders_.begin());
  orders_.emplace(epoch, all);
  return all;
}

std::vector<uint64_t> WindowSampler::starts_for(uint64_t step) const {
  std::vector<uint64_t> starts(static_cast<std::size_t>(o_.batch_size));
  const uint64_t L = static_cast<uint64_t>(o_.seq_len);
  const uint64_t B = static_cast<uint64_t>(o_.batch_size);
  const uint64_t first = static_cast<uint64_t>(o_.rank) * B;  // this rank's first row of the global batch
  if (o_.mode == SamplerMode::Random) {
    const uint64_t span = stream_.size() - L;  // valid starts: [0, size - (L + 1)]
    const uint64_t key = splitmix64(o_.seed ^ splitmix64(splitmix64(step)));
    for (std::size_t b = 0; b < starts.size(); ++b) starts[b] = splitmix64(key ^ (first + b)) % span;
    return starts;
  }
  const uint64_t n = windows(), global = B * static_cast<uint64_t>(o_.world_size);
  for (std::size_t b = 0; b < starts.size(); ++b) {
    const uint64_t p = step * global + first + b;
    starts[b] = (*order(p / n))[p % n] * L;
  }
  return starts;
}

std::vector<uint64_t> WindowSampler::next_starts() {
  auto starts = starts_for(state_.step++);
  if (o_.mode == SamplerMode::Sequential) {
    const uint64_t B = static_cast<uint64_t>(o_.batch_size);
    const uint64_t last = (state_.step - 1) * B * static_cast<uint64_t>(o_.world_size) +
                          static_cast<uint64_t>(o_.rank) * B + B - 1;  // this rank's last global position
    state_.epoch = last / windows();
  }
  return starts;
}

void WindowSampler::rows_for(uint64_t step, std::vector<int32_t>& rows) const {
  const auto starts = starts_for(step);
  const uint64_t width = static_cast<uint64_t>(o_.seq_len) + 1;
  rows.resize(starts.size() * width);
  for (std::size_t b = 0; b < starts.size(); ++b) stream_.read(starts[b], width, rows.data() + b * width);
}

void WindowSampler::next(std::vector<int32_t>& rows) {
  rows_for(state_.step, rows);
  next_starts();
}

void WindowSampler::restore(const SamplerState& s) { state_ = s; }

}  // namespace lathe::data
