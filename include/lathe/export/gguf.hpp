// GGUF, llama.cpp's file format (version 3), and the ggml tensor types lathe writes.
//
// A file is: "GGUF" (magic), the version (uint32), the tensor count and metadata count (uint64),
// the metadata as key (string) + type (uint32) + value, the tensor infos as name + n_dims
// (uint32) + dims (uint64, innermost first: a (rows, cols) row-major tensor is {cols, rows}) +
// ggml type (uint32) + offset (uint64, from the start of the data, a multiple of the alignment),
// then the data, aligned to general.alignment (32). Strings are a uint64 length and the bytes;
// everything is little-endian.
//
// The ggml types are one table of traits (ggml_types()), as ggml keeps them: block size, bytes
// per block, the file type a model of that type declares, and the reference quantization of a
// row (ggml-quants.c's quantize_row_*_ref, bit for bit) and its inverse.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/core/enum_table.hpp"

namespace lathe::export_ {

/// ggml_type's values for the types lathe writes.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // "Q8_0", as llama.cpp prints it
  int64_t block_size;     // elements per block (1 for the float types)
  int64_t block_bytes;    // bytes per block
  uint32_t file_type;     // general.file_type of a model "mostly" of this type (llama_ftype)
  /// Bytes of `row` (float32, contiguous, a multiple of block_size elements) in this type.
  void (*quantize)(const float* row, int64_t n, uint8_t* out);
  /// The float values of `n` elements stored as `data`.
  void (*dequantize)(const uint8_t* data, int64_t n, float* out);
  /// Bytes of `n` elements already on the type's grid: integer `codes` (Q8_0: [-128, 127],
  /// value code * d; Q4_0: [0, 15], value (code - 8) * d; Q4_1: [0, 15], value code * d + m)
  /// and each block's `d` and `m` (m read by Q4_1 only). nullptr for the float types.
  void (*encode)(const int32_t* codes, const float* d, const float* m, int64_t n, uint8_t* out);
};

/// Every type's row, in GgmlType's spelling order.
std::span<const GgmlTypeTraits> ggml_types();
const GgmlTypeTraits& ggml_type(GgmlType type);

/// A (rows, n) float tensor as `type`'s bytes, row after row; n must be a multiple of the block
/// size (std::invalid_argument otherwise).
std::vector<uint8_t> ggml_quantize(GgmlType type, const at::Tensor& rows);
/// `type`'s bytes for integer `codes` (rows, n) on the type's grid with per-block `d` and `m`
/// (rows, n / block_size; `m` undefined unless the type is Q4_1), as GgmlTypeTraits::encode
/// reads them. Throws std::invalid_argument for a float type, shapes that do not fit or a code
/// out of range.
std::vector<uint8_t> ggml_encode(GgmlType type, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m);
/// The float32 tensor of `shape` (row-major) that `type`'s `data` stands for.
at::Tensor ggml_dequantize(GgmlType type, std::span<const uint8_t> data, at::IntArrayRef shape);

/// A metadata value: the scalar types llama.cpp reads, and arrays of strings, int32 and float32.
using GgufValue = std::variant<uint32_t, int32_t, uint64_t, float, bool, std::string, std::vector<std::string>,
                               std::vector<int32_t>, std::vector<float>>;

struct GgufTensor {
  std::string name;            // "blk.0.attn_q.weight"
  std::vector<int64_t> shape;  // as torch has it, outermost first (rows, cols)
  GgmlType type = GgmlType::F32;
  std::vector<uint8_t> data;   // the type's bytes
};

/// A GGUF file in memory, its metadata in the order added.
class GgufFile {
 public:
  /// Adds or replaces a key.
  void set(const std::string& key, GgufValue value);
  const GgufValue* find(const std::string& key) const;
  /// Adds a tensor of `type` from float `values` (row-major; quantized along the last dimension).
  void add_tensor(const std::string& name, const at::Tensor& values, GgmlType type);
  /// Adds a tensor of `shape` whose `type` bytes are already made (ggml_encode).
  void add_tensor(const std::string& name, std::vector<int64_t> shape, GgmlType type, std::vector<uint8_t> data);
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }

  /// Writes the file atomically (a temporary beside it, renamed). Throws lathe::Error naming it.
  void write(const std::filesystem::path& path) const;
  /// Reads a GGUF file written by any tool (version 2 or 3; the value types above, other array
  /// types skipped); throws lathe::Error naming the file and what is wrong with it.
  static GgufFile read(const std::filesystem::path& path);

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensor> tensors_;
};

}  // namespace lathe::export_

LATHE_ENUM_TABLE(lathe::export_::GgmlType, {lathe::export_::GgmlType::F32, "f32"},
                 {lathe::export_::GgmlType::F16, "f16"}, {lathe::export_::GgmlType::BF16, "bf16"},
                 {lathe::export_::GgmlType::Q8_0, "q8_0"}, {lathe::export_::GgmlType::Q4_0, "q4_0"},
                 {lathe::export_::GgmlType::Q4_1, "q4_1"});
