// The example order of each epoch: a seeded shuffle, the same for a given seed and epoch
// whatever thread or rank asks (resume and prefetching rely on it).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <vector>

#include "lathe/data/sampler.hpp"

namespace lathe::train {

class EpochOrder {
 public:
  EpochOrder(uint64_t items, uint64_t seed) : items_(items), seed_(seed) {}
  /// The order of `epoch`: a permutation of 0 .. items - 1. The latest epochs are cached; the
  /// reference stays valid on this thread until its next call.
  const std::vector<uint64_t>& operator()(uint64_t epoch) const {
    thread_local std::shared_ptr<const std::vector<uint64_t>> held;
    std::lock_guard lock(*mu_);
    if (auto it = orders_.find(epoch); it != orders_.end()) {
      held = it->second;
      return *held;
    }
    auto v = std::make_shared<std::vector<uint64_t>>(items_);
    std::iota(v->begin(), v->end(), 0);
    std::mt19937_64 rng(data::splitmix64(seed_ + epoch));
    std::shuffle(v->begin(), v->end(), rng);
    if (orders_.size() > 4) orders_.erase(orders_.begin());
    orders_[epoch] = v;
    held = v;
    return *held;
  }

 private:
  uint64_t items_, seed_;
  std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();  // movable: set after construction
  mutable std::map<uint64_t, std::shared_ptr<const std::vector<uint64_t>>> orders_;
};

}  // namespace lathe::train
