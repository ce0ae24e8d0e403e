// Token shards: the files `lathe data prepare` writes and training reads, memory-mapped.
//
// Layout (little-endian), a 64-byte header then the tokens:
//   offset  size  field
//        0     8  magic "LATHETOK"
//        8     4  format version (1)
//       12     4  bytes per token: 2 (uint16, when the vocabulary has <= 65536 ids) or 4 (uint32)
//       16     8  token count
//       24     4  vocabulary size of the tokenizer that wrote the shard
//       28     4  reserved (0)
//       32     8  tokenizer fingerprint (Tokenizer::fingerprint())
//       40    24  reserved (0)
//       64     -  tokens
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace lathe::data {

inline constexpr char kShardMagic[8] = {'L', 'A', 'T', 'H', 'E', 'T', 'O', 'K'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint64_t count = 0;
  uint32_t vocab_size = 0;
  uint64_t fingerprint = 0;
};

/// Writes one shard: tokens are appended, finish() writes the header and moves the file into
/// place atomically (a crash leaves no partial shard under the final name).
class ShardWriter {
 public:
  ShardWriter(std::filesystem::path path, uint32_t vocab_size, uint64_t fingerprint);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(std::span<const int32_t> tokens);
  uint64_t count() const { return count_; }
  void finish();

 private:
  std::filesystem::path path_, tmp_;
  std::FILE* file_ = nullptr;
  ShardHeader header_;
  uint64_t count_ = 0;
  std::vector<unsigned char> buffer_;
};

/// A memory-mapped shard. Opening checks the magic, version, token width and size, and throws
/// lathe::Error naming the file for each problem.
class Shard {
 public:
  explicit Shard(const std::filesystem::path& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&&) = delete;
  Shard(const Shard&) = delete;

  const ShardHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return path_; }
  uint64_t size() const { return header_.count; }
  /// Token at index i (no bounds check).
  int32_t operator[](uint64_t i) const {
    return header_.token_bytes == 2 ? static_cast<int32_t>(reinterpret_cast<const uint16_t*>(tokens_)[i])
                                    : static_cast<int32_t>(reinterpret_cast<const uint32_t*>(tokens_)[i]);
  }
  /// Copies tokens [from, from + n) into out.
  void read(uint64_t from, uint64_t n, int32_t* out) const;
  /// Throws lathe::Error naming the file when the shard was written by another tokenizer.
  void expect_tokenizer(uint64_t fingerprint, uint32_t vocab_size) const;

 private:
  std::filesystem::path path_;
  ShardHeader header_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

}  // namespace lathe::data
