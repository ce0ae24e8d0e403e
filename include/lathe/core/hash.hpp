// FNV-1a, 64 bit: the one fingerprint hash (tokenizers, recipes, shard indexes).
#pragma once

#include <cstdint>
#include <string_view>

namespace lathe {

class Fnv1a {
 public:
  void add(std::string_view bytes) {
    for (unsigned char c : bytes) h_ = (h_ ^ c) * 0x100000001b3ull;
  }
  void add_u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) h_ = (h_ ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace lathe
