// Python's random.Random (CPython's Mersenne Twister, its seeding by an integer, random(),
// sample() and choices()), draw for draw: lm-evaluation-harness picks few-shot examples with
// random.Random(seed).sample and bootstraps its standard errors with random.Random(i).choices,
// so reproducing its figures needs the same stream.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace lathe::eval {

class PyRandom {
 public:
  /// random.Random(seed) for a non-negative integer seed (init_by_array over its 32-bit words).
  explicit PyRandom(uint64_t seed);

  /// random.getrandbits(k) for 0 < k <= 32.
  uint32_t getrandbits(int k);
  /// random.random(): 53 random bits in [0, 1).
  double random();
  /// random._randbelow(n): uniform in [0, n), n >= 1.
  uint64_t randbelow(uint64_t n);
  /// random.sample(range(n), k): k distinct indices in draw order (k <= n), by the same
  /// set-or-pool choice CPython makes.
  std::vector<std::size_t> sample(std::size_t n, std::size_t k);
  /// random.choices(range(n), k=k): k indices drawn with replacement.
  std::vector<std::size_t> choices(std::size_t n, std::size_t k);

 private:
  uint32_t next();
  std::array<uint32_t, 624> mt_{};
  int index_ = 625;
};

}  // namespace lathe::eval
