// Learning-rate schedules (formulas in the header).

#include "lathe/train/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace lathe::train {

double learning_rate(const recipe::ScheduleConfig& s, double lr, int64_t step, int64_t max_steps) {
  using recipe::Schedule;
  if (step < s.warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const double floor = lr * s.min_lr_ratio;
  const double span = static_cast<double>(std::max<int64_t>(1, max_steps - s.warmup_steps));
  const double p = std::clamp(static_cast<double>(step - s.warmup_steps) / span, 0.0, 1.0);
  switch (s.name) {
    case Schedule::Constant: return lr;
    case Schedule::Cosine: return floor + (lr - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    case Schedule::Linear: return lr - (lr - floor) * p;
    case Schedule::Wsd: {
      const double decay_steps = std::max(1.0, s.decay_fraction * static_cast<double>(max_steps));
      const double decay_start = static_cast<double>(max_steps) - decay_steps;
      if (static_cast<double>(step) < decay_start) return lr;
      const double q = std::clamp((static_cast<double>(step) - decay_start) / decay_steps, 0.0, 1.0);
      return lr - (lr - floor) * q;
    }
  }
  return lr;
}

}  // namespace lathe::train
