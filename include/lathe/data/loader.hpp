// A prefetching loader: background threads build the batches of the coming steps while the
// current one trains. Batches come out in step order whatever the thread count, so a run is
// reproducible and resumable by step.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace lathe::data {

template <class Batch>
class PrefetchLoader {
 public:
  /// `make(step)` builds the batch of a step (it must be safe to call from several threads for
  /// different steps). Steps start at `first_step`; at most `prefetch` batches wait ahead.
  /// With 0 workers nothing runs in the background: next() builds each batch when asked.
  PrefetchLoader(std::function<Batch(uint64_t)> make, int workers, int prefetch, uint64_t first_step = 0)
      : make_(std::move(make)), prefetch_(std::max(1, prefetch)), next_out_(first_step), next_claim_(first_step) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }

  /// Background threads building batches.
  int workers() const { return static_cast<int>(threads_.size()); }
  ~PrefetchLoader() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  /// The batch of the next step; rethrows an error raised while building it.
  Batch next() {
    if (threads_.empty()) return make_(next_out_++);
    std::unique_lock lock(mu_);
    // An error surfaces at the step that raised it; earlier steps still come out normally.
    cv_.wait(lock, [&] { return ready_.count(next_out_) || (error_ && error_step_ <= next_out_); });
    if (!ready_.count(next_out_)) std::rethrow_exception(error_);
    Batch b = std::move(ready_.at(next_out_));
    ready_.erase(next_out_++);
    cv_.notify_all();
    return b;
  }

 private:
  void work() {
    for (;;) {
      uint64_t step;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || next_claim_ < next_out_ + static_cast<uint64_t>(prefetch_); });
        if (stop_) return;
        step = next_claim_++;
      }
      try {
        Batch b = make_(step);
        std::lock_guard lock(mu_);
        ready_.emplace(step, std::move(b));
      } catch (...) {
        std::lock_guard lock(mu_);
        if (!error_ || step < error_step_) {
          error_ = std::current_exception();
          error_step_ = step;
        }
      }
      cv_.notify_all();
    }
  }

  std::function<Batch(uint64_t)> make_;
  int prefetch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Batch> ready_;
  uint64_t next_out_, next_claim_;
  bool stop_ = false;
  std::exception_ptr error_;
  uint64_t error_step_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace lathe::data
