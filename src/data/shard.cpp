#include "lathe/data/shard.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"

namespace lathe::data {
namespace fs = std::filesystem;
static_assert(std::endian::native == std::endian::little, "shards are little-endian; add byte swapping here");

namespace {

template <class T>
void put(unsigned char* at, T v) {
  std::memcpy(at, &v, sizeof v);
}
template <class T>
T get(const unsigned char* at) {
  T v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

ShardWriter::ShardWriter(fs::path path, uint32_t vocab_size, uint64_t fingerprint) : path_(std::move(path)) {
  header_.vocab_size = vocab_size;
  header_.fingerprint = fingerprint;
  header_.token_bytes = vocab_size <= 65536 ? 2 : 4;
  std::error_code ec;
  fs::create_directories(path_.parent_path().empty() ? fs::path(".") : path_.parent_path(), ec);
  tmp_ = path_;
  tmp_ += ".partial";
  file_ = std::fopen(tmp_.c_str(), "wb");
  if (!file_) throw Error("cannot create shard '" + tmp_.string() + "': " + std::strerror(errno));
  unsigned char zeros[kShardHeaderBytes] = {};
  std::fwrite(zeros, 1, sizeof zeros, file_);  // the header is written by finish()
}

ShardWriter::~ShardWriter() {
  if (file_) {  // not finished: leave nothing behind under either name
    std::fclose(file_);
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void ShardWriter::append(std::span<const int32_t> tokens) {
  buffer_.resize(tokens.size() * header_.token_bytes);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || static_cast<uint32_t>(t) >= header_.vocab_size)
      throw Error("shard '" + path_.string() + "': token id " + std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(header_.vocab_size));
    if (header_.token_bytes == 2)
      put(buffer_.data() + 2 * i, static_cast<uint16_t>(t));
    else
      put(buffer_.data() + 4 * i, static_cast<uint32_t>(t));
  }
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size())
    throw Error("cannot write shard '" + tmp_.string() + "': " + std::strerror(errno));
  count_ += tokens.size();
}

void ShardWriter::finish() {
  header_.count = count_;
  unsigned char h[kShardHeaderBytes] = {};
  std::memcpy(h, kShardMagic, 8);
  put(h + 8, header_.version);
  put(h + 12, header_.token_bytes);
  put(h + 16, header_.count);
  put(h + 24, header_.vocab_size);
  put(h + 32, header_.fingerprint);
  const bool ok = std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(h, 1, sizeof h, file_) == sizeof h &&
                  std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int saved = errno;
  std::fclose(file_);
  file_ = nullptr;
  if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::error_code ec;
    fs::remove(tmp_, ec);
    throw Error("cannot finish shard '" + path_.string() + "': " + std::strerror(ok ? errno : saved));
  }
  io::fsync_path(path_.parent_path().empty() ? fs::path(".") : path_.parent_path());
}

Shard::Shard(const fs::path& path) : path_(path) {
  const std::string name = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open shard '" + name + "': " + std::strerror(errno));
  struct stat st{};
  ::fstat(fd, &st);
  const auto bytes = static_cast<std::size_t>(st.st_size);
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error("shard '" + name + "' is truncated: " + std::to_string(bytes) + " bytes, shorter than its header");
  }
  map_ = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error("cannot map shard '" + name + "': " + std::strerror(errno));
  }
  map_bytes_ = bytes;
  const auto* h = static_cast<const unsigned char*>(map_);
  auto fail = [&](const std::string& why) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw Error("shard '" + name + "': " + why);
  };
  if (std::memcmp(h, kShardMagic, 8) != 0) fail("not a lathe token shard (bad magic)");
  header_.version = get<uint32_t>(h + 8);
  if (header_.version != kShardVersion)
    fail("format version " + std::to_string(header_.version) + ", this lathe reads version " +
         std::to_string(kShardVersion) + "; prepare the data again");
  header_.token_bytes = get<uint32_t>(h + 12);
  if (header_.token_bytes != 2 && header_.token_bytes != 4)
    fail("bad token width " + std::to_string(header_.token_bytes) + " (2 or 4 bytes)");
  header_.count = get<uint64_t>(h + 16);
  header_.vocab_size = get<uint32_t>(h + 24);
  header_.fingerprint = get<uint64_t>(h + 32);
  const uint64_t want = kShardHeaderBytes + header_.count * header_.token_bytes;
  if (want != bytes)
    fail("is " + std::string(bytes < want ? "truncated" : "longer than its header says") + ": header says " +
         std::to_string(header_.count) + " tokens (" + std::to_string(want) + " bytes), the file has " +
         std::to_string(bytes) + " bytes");
  tokens_ = h + kShardHeaderBytes;
  ::madvise(map_, map_bytes_, MADV_WILLNEED);
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(o.map_), map_bytes_(o.map_bytes_), tokens_(o.tokens_) {
  o.map_ = nullptr;
}

void Shard::read(uint64_t from, uint64_t n, int32_t* out) const {
  if (header_.token_bytes == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(tokens_) + from;
    for (uint64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    std::memcpy(out, reinterpret_cast<const uint32_t*>(tokens_) + from, n * sizeof(int32_t));
  }
}

void Shard::expect_tokenizer(uint64_t fingerprint, uint32_t vocab_size) const {
  if (header_.fingerprint != fingerprint || header_.vocab_size != vocab_size)
    throw Error("shard '" + path_.string() + "' was written by another tokenizer (fingerprint " +
                hex(header_.fingerprint) + ", vocabulary " + std::to_string(header_.vocab_size) +
                "; this run's tokenizer: " + hex(fingerprint) + ", " + std::to_string(vocab_size) +
                "); run the data stage again with --force");
}

}  // namespace lathe::data
