// SIGTERM / SIGINT as a flag for the training loop.

#include "lathe/train/stop_signal.hpp"

#include <atomic>
#include <csignal>

namespace lathe::train {

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int sig) { g_signal.store(sig); }
}  // namespace

struct SignalScope::Saved {
  struct sigaction term {}, interrupt {};
};

SignalScope::SignalScope(bool active) : active_(active) {
  if (!active_) return;
  g_signal.store(0);
  saved_ = std::make_unique<Saved>();
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &saved_->term);
  sigaction(SIGINT, &sa, &saved_->interrupt);
}

SignalScope::~SignalScope() {
  if (!active_) return;
  sigaction(SIGTERM, &saved_->term, nullptr);
  sigaction(SIGINT, &saved_->interrupt, nullptr);
}

int SignalScope::signal() const { return active_ ? g_signal.load() : 0; }

}  // namespace lathe::train
