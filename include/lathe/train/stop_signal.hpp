// SIGTERM / SIGINT during training: a flag the loop reads after each step (it then checkpoints
// and returns), instead of the process ending mid-write.
#pragma once

#include <memory>

namespace lathe::train {

/// Catches SIGTERM and SIGINT while it lives (when `active`); the old handlers come back after.
class SignalScope {
 public:
  explicit SignalScope(bool active);
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  /// The signal received since construction, or 0.
  int signal() const;

 private:
  struct Saved;
  bool active_;
  std::unique_ptr<Saved> saved_;  // the handlers to restore
};

}  // namespace lathe::train
