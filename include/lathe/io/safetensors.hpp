// safetensors files: the checkpoint and interchange format (Hugging Face's).
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON ({"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, ..., "__metadata__": {string: string}}), then the tensor bytes,
// offsets relative to the end of the header.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lathe/core/tensor_values.hpp"

namespace lathe::io {

/// Largest header a reader accepts (the reference implementation's limit, 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct Safetensors {
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // in file order (by offset)
  std::map<std::string, std::string> metadata;

  /// The tensor called `name`; throws lathe::Error naming it when absent.
  const at::Tensor& at(const std::string& name) const;
};

/// Writes CPU copies of `tensors` (contiguous, any supported dtype: F64 F32 F16 BF16 I64 I32 I16
/// I8 U8 BOOL) atomically. Names must be unique.
void save_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// The same for tensors that come one at a time (their header is written first, from the
/// specs): no more than one tensor of the file is needed in memory at once. A failed write, or
/// a tensor that breaks the specs (std::logic_error), still lets the stream run to its end (its
/// source may be a collective of every rank), then throws; `path` is left as it was.
void save_safetensors(const std::filesystem::path& path, const TensorStream& stream,
                      const std::map<std::string, std::string>& metadata = {});

/// How load_safetensors reads the tensor data.
enum class Read {
  Copy,  // into memory the tensors own
  /// The tensors are views of the file mapped copy-on-write (MAP_PRIVATE): nothing is copied, a
  /// page is read when first used, and a write changes this process's copy only. The mapping
  /// lives while any of the tensors does. The file must not be rewritten in place meanwhile
  /// (lathe replaces its files by rename, which leaves a mapping intact). A tensor whose data is
  /// not at a multiple of 64 bytes in the file is copied instead (kernels assume LibTorch's
  /// allocation alignment): lathe's files start their data there; other writers align to 8.
  Map,
};

/// A safetensors file read a tensor at a time: the header is read and checked when it is opened
/// (everything load_safetensors checks), each tensor's data when it is asked for.
class SafetensorsReader {
 public:
  struct Info {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  /// Read::Map: get() gives views of the file mapped copy-on-write where the data is aligned.
  explicit SafetensorsReader(const std::filesystem::path& path, Read read = Read::Copy);
  const std::filesystem::path& path() const;
  /// The tensors, in file order.
  const std::vector<Info>& tensors() const;
  const std::map<std::string, std::string>& metadata() const;
  /// Tensor `name`: a view of the mapped file, or read into new memory.
  at::Tensor get(const std::string& name) const;
  /// Reads tensor `name`'s data into `out`, a contiguous CPU tensor of its dtype and size
  /// (std::logic_error otherwise): no copy of it is held anywhere else.
  void read_into(const std::string& name, const at::Tensor& out) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// Reads a file into CPU tensors. Throws lathe::Error naming the file (and tensor) for a
/// truncated file, a bad header, an unknown dtype, or offsets that disagree with shapes.
Safetensors load_safetensors(const std::filesystem::path& path, Read read = Read::Copy);

}  // namespace lathe::io
