// Learning-rate schedules: the rate of optimizer step s (0-based) of max_steps.
//
//   warmup (s < warmup_steps):  lr * (s + 1) / warmup_steps
//   then, with p = (s - warmup_steps) / (max_steps - warmup_steps) in [0, 1] and
//   floor = lr * min_lr_ratio:
//     constant: lr
//     cosine:   floor + (lr - floor) * (1 + cos(pi * p)) / 2
//     linear:   lr - (lr - floor) * p
//     wsd:      lr until the last decay_fraction of max_steps, then linear to floor over it
#pragma once

#include <cstdint>

#include "lathe/recipe/recipe.hpp"

namespace lathe::train {

double learning_rate(const recipe::ScheduleConfig& schedule, double lr, int64_t step, int64_t max_steps);

}  // namespace lathe::train
