// A map from short byte strings (1..15 bytes: most tokens) to ids, open-addressed with the key
// stored in the slot, so a lookup costs one cache line: the hot lookup of a piece in a large
// vocabulary (ignore_merges, 100k+ tokens) without the node hops of std::unordered_map.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace lathe::tokenizer::detail {

class ShortKeyMap {
 public:
  static constexpr std::size_t kMaxKey = 15;

  explicit ShortKeyMap(std::size_t expected = 0) {
    slots_.resize(std::bit_ceil(std::max<std::size_t>(16, expected * 2)));
    mask_ = slots_.size() - 1;
  }

  /// Keys longer than kMaxKey (or empty) are not stored; the first id given for a key stays.
  void insert(std::string_view key, int32_t id) {
    if (key.empty() || key.size() > kMaxKey) return;
    for (std::size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == 0) {
        std::memcpy(s.key, key.data(), key.size());
        s.len = static_cast<uint8_t>(key.size());
        s.id = id;
        return;
      }
      if (s.len == key.size() && std::memcmp(s.key, key.data(), key.size()) == 0) return;
    }
  }

  /// The id of `key` (1..kMaxKey bytes), or -1.
  int32_t find(std::string_view key) const {
    for (std::size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == 0) return -1;
      if (s.len == key.size() && std::memcmp(s.key, key.data(), key.size()) == 0) return s.id;
    }
  }

 private:
  struct Slot {
    char key[kMaxKey];
    uint8_t len = 0;  // 0: empty
    int32_t id = -1;
  };
  static uint64_t hash(std::string_view k) {
    uint64_t a = 0, b = 0;
    std::memcpy(&a, k.data(), std::min<std::size_t>(8, k.size()));
    if (k.size() > 8) std::memcpy(&b, k.data() + 8, k.size() - 8);
    uint64_t h = (a ^ (k.size() << 59)) * 0x9E3779B97F4A7C15ull;
    h ^= (b + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 32);
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

}  // namespace lathe::tokenizer::detail
