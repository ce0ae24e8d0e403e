// GGUF files and the ggml types (lathe/export/gguf.hpp).

#include "lathe/export/gguf.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"

namespace lathe::export_ {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;

uint16_t to_half(float x) { return c10::Half(x).x; }
float from_half(uint16_t bits) { return c10::Half(bits, c10::Half::from_bits()); }

// ------------------------------------------------------------------ float types

void quantize_f32(const float* x, int64_t n, uint8_t* out) { std::memcpy(out, x, n * sizeof(float)); }
void dequantize_f32(const uint8_t* d, int64_t n, float* out) { std::memcpy(out, d, n * sizeof(float)); }

void quantize_f16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = to_half(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}
void dequantize_f16(const uint8_t* d, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, d + 2 * i, 2);
    out[i] = from_half(h);
  }
}

// ggml_compute_fp32_to_bf16: NaN made quiet, otherwise rounded to nearest even.
void quantize_bf16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    const uint16_t h = (u & 0x7fffffff) > 0x7f800000 ? static_cast<uint16_t>((u >> 16) | 64)
                                                      : static_cast<uint16_t>((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    std::memcpy(out + 2 * i, &h, 2);
  }
}
void dequantize_bf16(const uint8_t* d, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, d + 2 * i, 2);
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    std::memcpy(&out[i], &u, 4);
  }
}

// ------------------------------------------------------------------ block types (32 elements)

constexpr int64_t kQk = 32;

// quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d).
void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQk; ++b, x += kQk, out += 2 + kQk) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kQk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = to_half(d);
    std::memcpy(out, &h, 2);
    for (int64_t j = 0; j < kQk; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
  }
}
void dequantize_q8_0(const uint8_t* data, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQk; ++b, data += 2 + kQk, out += kQk) {
    uint16_t h;
    std::memcpy(&h, data, 2);
    const float d = from_half(h);
    for (int64_t j = 0; j < kQk; ++j) out[j] = static_cast<float>(static_cast<int8_t>(data[2 + j])) * d;
  }
}

// Two 4-bit codes per byte: element j in the low nibble of byte j, element j + 16 in the high one.
void pack_nibbles(const uint8_t* q, uint8_t* out) {
  for (int64_t j = 0; j < kQk / 2; ++j) out[j] = static_cast<uint8_t>(q[j] | (q[j + kQk / 2] << 4));
}
void unpack_nibbles(const uint8_t* in, uint8_t* q) {
  for (int64_t j = 0; j < kQk / 2; ++j) {
    q[j] = in[j] & 0x0f;
    q[j + kQk / 2] = in[j] >> 4;
  }
}

// quantize_row_q4_0_ref: d = (the value of largest magnitude) / -8, q = min(15, (int8)(x / d + 8.5)).
void quantize_q4_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQk; ++b, x += kQk, out += 2 + kQk / 2) {
    float amax = 0.0f, max = 0.0f;
    for (int64_t j = 0; j < kQk; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = to_half(d);
    std::memcpy(out, &h, 2);
    uint8_t q[kQk];
    for (int64_t j = 0; j < kQk; ++j)
      q[j] = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(x[j] * id + 8.5f)));
    pack_nibbles(q, out + 2);
  }
}
void dequantize_q4_0(const uint8_t* data, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQk; ++b, data += 2 + kQk / 2, out += kQk) {
    uint16_t h;
    std::memcpy(&h, data, 2);
    const float d = from_half(h);
    uint8_t q[kQk];
    unpack_nibbles(data + 2, q);
    for (int64_t j = 0; j < kQk; ++j) out[j] = static_cast<float>(static_cast<int>(q[j]) - 8) * d;
  }
}

// quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = min(15, (int8)((x - min) / d + 0.5)).
void quantize_q4_1(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQk; ++b, x += kQk, out += 4 + kQk / 2) {
    float min = x[0], max = x[0];
    for (int64_t j = 1; j < kQk; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t hd = to_half(d), hm = to_half(min);
    std::memcpy(out, &hd, 2);
    std::memcpy(out + 2, &hm, 2);
    uint8_t q[kQk];
    for (int64_t j = 0; j < kQk; ++j)
      q[j] = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>((x[j] - min) * id + 0.5f)));
    pack_nibbles(q, out + 4);
  }
}
void dequantize_q4_1(const uint8_t* data, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQk; ++b, data += 4 + kQk / 2, out += kQk) {
    uint16_t hd, hm;
    std::memcpy(&hd, data, 2);
    std::memcpy(&hm, data + 2, 2);
    const float d = from_half(hd), m = from_half(hm);
    uint8_t q[kQk];
    unpack_nibbles(data + 4, q);
    for (int64_t j = 0; j < kQk; ++j) out[j] = static_cast<float>(q[j]) * d + m;
  }
}

// Codes already on a block type's grid, with each block's d (and m).
void encode_q8_0(const int32_t* q, const float* d, const float*, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQk; ++b, q += kQk, out += 2 + kQk) {
    const uint16_t h = to_half(d[b]);
    std::memcpy(out, &h, 2);
    for (int64_t j = 0; j < kQk; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q[j]));
  }
}
void encode_nibbles(const int32_t* q, const float* d, const float* m, int64_t n, uint8_t* out) {
  const int64_t head = m ? 4 : 2;
  for (int64_t b = 0; b < n / kQk; ++b, q += kQk, out += head + kQk / 2) {
    const uint16_t hd = to_half(d[b]);
    std::memcpy(out, &hd, 2);
    if (m) {
      const uint16_t hm = to_half(m[b]);
      std::memcpy(out + 2, &hm, 2);
    }
    uint8_t codes[kQk];
    for (int64_t j = 0; j < kQk; ++j) codes[j] = static_cast<uint8_t>(q[j]);
    pack_nibbles(codes, out + head);
  }
}
void encode_q4_0(const int32_t* q, const float* d, const float*, int64_t n, uint8_t* out) {
  encode_nibbles(q, d, nullptr, n, out);
}
void encode_q4_1(const int32_t* q, const float* d, const float* m, int64_t n, uint8_t* out) {
  encode_nibbles(q, d, m, n, out);
}

// llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q4_1 3, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
constexpr GgmlTypeTraits kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, 0, quantize_f32, dequantize_f32, nullptr},
    {GgmlType::F16, "F16", 1, 2, 1, quantize_f16, dequantize_f16, nullptr},
    {GgmlType::BF16, "BF16", 1, 2, 32, quantize_bf16, dequantize_bf16, nullptr},
    {GgmlType::Q8_0, "Q8_0", kQk, 2 + kQk, 7, quantize_q8_0, dequantize_q8_0, encode_q8_0},
    {GgmlType::Q4_0, "Q4_0", kQk, 2 + kQk / 2, 2, quantize_q4_0, dequantize_q4_0, encode_q4_0},
    {GgmlType::Q4_1, "Q4_1", kQk, 4 + kQk / 2, 3, quantize_q4_1, dequantize_q4_1, encode_q4_1},
};
static_assert(std::size(kTypes) == EnumTable<GgmlType>::values.size(),
              "every GgmlType needs its row in kTypes, in the order of its spelling table");
constexpr bool rows_in_order() {
  for (std::size_t i = 0; i < std::size(kTypes); ++i)
    if (kTypes[i].type != EnumTable<GgmlType>::values[i].first) return false;
  return true;
}
static_assert(rows_in_order(), "kTypes' rows follow GgmlType's spelling table");

}  // namespace

std::span<const GgmlTypeTraits> ggml_types() { return kTypes; }

const GgmlTypeTraits& ggml_type(GgmlType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t;
  throw std::invalid_argument("unknown ggml type " + std::to_string(static_cast<uint32_t>(type)));
}

std::vector<uint8_t> ggml_quantize(GgmlType type, const at::Tensor& rows) {
  const auto& t = ggml_type(type);
  const auto x = rows.to(at::kFloat).contiguous();
  const int64_t n = x.numel(), last = x.dim() == 0 ? 1 : x.size(-1);
  if (last % t.block_size != 0)
    throw std::invalid_argument(fmt::format("{} stores rows in blocks of {}; a row has {} values", t.name,
                                            t.block_size, last));
  std::vector<uint8_t> out(static_cast<std::size_t>(n / t.block_size * t.block_bytes));
  t.quantize(x.data_ptr<float>(), n, out.data());
  return out;
}

std::vector<uint8_t> ggml_encode(GgmlType type, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m) {
  const auto& t = ggml_type(type);
  if (!t.encode) throw std::invalid_argument(fmt::format("{} is a float type: it has no codes", t.name));
  const bool with_min = type == GgmlType::Q4_1;
  if (codes.dim() != 2 || codes.size(1) % t.block_size != 0 || d.dim() != 2 || d.size(0) != codes.size(0) ||
      d.size(1) != codes.size(1) / t.block_size || (with_min && !(m.defined() && m.sizes() == d.sizes())))
    throw std::invalid_argument(fmt::format("{} codes need (rows, a multiple of {}) codes and a d{} per block", t.name,
                                            t.block_size, with_min ? " and m" : ""));
  const auto q = codes.to(at::kInt).contiguous();
  const int lo = type == GgmlType::Q8_0 ? -128 : 0, hi = type == GgmlType::Q8_0 ? 127 : 15;
  if (q.numel() > 0 && (q.min().item<int>() < lo || q.max().item<int>() > hi))
    throw std::invalid_argument(fmt::format("{} codes lie in [{}, {}]", t.name, lo, hi));
  const auto dd = d.to(at::kFloat).contiguous();
  const auto mm = with_min ? m.to(at::kFloat).contiguous() : at::Tensor();
  std::vector<uint8_t> out(static_cast<std::size_t>(q.numel() / t.block_size * t.block_bytes));
  t.encode(q.data_ptr<int32_t>(), dd.data_ptr<float>(), with_min ? mm.data_ptr<float>() : nullptr, q.numel(),
           out.data());
  return out;
}

at::Tensor ggml_dequantize(GgmlType type, std::span<const uint8_t> data, at::IntArrayRef shape) {
  const auto& t = ggml_type(type);
  auto out = at::empty(shape, at::kFloat);
  const int64_t n = out.numel();
  if (n % t.block_size != 0 || static_cast<int64_t>(data.size()) != n / t.block_size * t.block_bytes)
    throw std::invalid_argument(fmt::format("{} bytes do not hold {} {} values", data.size(), n, t.name));
  t.dequantize(data.data(), n, out.data_ptr<float>());
  return out;
}

// ------------------------------------------------------------------ the file

namespace {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10,
  I64 = 11, F64 = 12
};

class Out {
 public:
  template <class T>
  void pod(T v) {
    const auto* p = reinterpret_cast<const char*>(&v);
    bytes.append(p, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes += s;
  }
  void value(const GgufValue& v) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, uint32_t>) tagged(ValueType::U32, x);
          else if constexpr (std::is_same_v<T, int32_t>) tagged(ValueType::I32, x);
          else if constexpr (std::is_same_v<T, uint64_t>) tagged(ValueType::U64, x);
          else if constexpr (std::is_same_v<T, float>) tagged(ValueType::F32, x);
          else if constexpr (std::is_same_v<T, bool>) tagged(ValueType::Bool, static_cast<uint8_t>(x));
          else if constexpr (std::is_same_v<T, std::string>) {
            pod(ValueType::String);
            str(x);
          } else {
            using E = typename T::value_type;
            pod(ValueType::Array);
            pod(std::is_same_v<E, std::string> ? ValueType::String
                : std::is_same_v<E, int32_t>   ? ValueType::I32
                                               : ValueType::F32);
            pod<uint64_t>(x.size());
            for (const auto& e : x) {
              if constexpr (std::is_same_v<E, std::string>) str(e);
              else pod(e);
            }
          }
        },
        v);
  }
  void pad() { bytes.append((kAlignment - bytes.size() % kAlignment) % kAlignment, '\0'); }
  std::string bytes;

 private:
  template <class T>
  void tagged(ValueType type, T v) {
    pod(type);
    pod(v);
  }
};

uint64_t padded(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

void GgufFile::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(key, std::move(value));
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata_)
    if (k == key) return &v;
  return nullptr;
}

void GgufFile::add_tensor(const std::string& name, const at::Tensor& values, GgmlType type) {
  for (const auto& t : tensors_)
    if (t.name == name) throw std::invalid_argument("GGUF tensor " + name + " added twice");
  tensors_.push_back({name, values.sizes().vec(), type, ggml_quantize(type, values)});
}

void GgufFile::add_tensor(const std::string& name, std::vector<int64_t> shape, GgmlType type,
                          std::vector<uint8_t> data) {
  for (const auto& t : tensors_)
    if (t.name == name) throw std::invalid_argument("GGUF tensor " + name + " added twice");
  const auto& t = ggml_type(type);
  int64_t n = 1;
  for (const auto s : shape) n *= s;
  if (shape.empty() || shape.back() % t.block_size != 0 ||
      static_cast<int64_t>(data.size()) != n / t.block_size * t.block_bytes)
    throw std::invalid_argument(fmt::format("GGUF tensor {}: {} bytes are not {} {} values", name, data.size(), n,
                                            t.name));
  tensors_.push_back({name, std::move(shape), type, std::move(data)});
}

void GgufFile::write(const std::filesystem::path& path) const {
  Out o;
  o.pod(kMagic);
  o.pod(kVersion);
  o.pod<uint64_t>(tensors_.size());
  o.pod<uint64_t>(metadata_.size() + (find("general.alignment") ? 0 : 1));
  if (!find("general.alignment")) {
    o.str("general.alignment");
    o.value(static_cast<uint32_t>(kAlignment));
  }
  for (const auto& [k, v] : metadata_) {
    o.str(k);
    o.value(v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    o.str(t.name);
    o.pod<uint32_t>(t.shape.size());
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) o.pod<uint64_t>(*it);
    o.pod(static_cast<uint32_t>(t.type));
    o.pod(offset);
    offset += padded(t.data.size());
  }
  o.pad();
  static const std::string zeros(kAlignment, '\0');
  std::vector<std::string_view> pieces{o.bytes};
  for (const auto& t : tensors_) {
    pieces.emplace_back(reinterpret_cast<const char*>(t.data.data()), t.data.size());
    pieces.emplace_back(zeros.data(), padded(t.data.size()) - t.data.size());
  }
  io::write_file_atomic(path, pieces);
}

namespace {

class In {
 public:
  In(std::string bytes, std::filesystem::path path) : bytes_(std::move(bytes)), path_(std::move(path)) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string str() {
    const auto n = pod<uint64_t>();
    need(n);
    std::string s = bytes_.substr(at_, n);
    at_ += n;
    return s;
  }
  void skip(uint64_t n) {
    need(n);
    at_ += n;
  }
  std::optional<GgufValue> value(ValueType type);
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}: {} (at byte {})", path_.string(), what, at_));
  }
  uint64_t at() const { return at_; }
  void seek(uint64_t at) {
    if (at > bytes_.size()) fail("a tensor's offset lies past the end of the file");
    at_ = at;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  void need(uint64_t n) const {
    if (n > bytes_.size() - at_) fail("the file ends early");
  }
  std::string bytes_;
  std::filesystem::path path_;
  uint64_t at_ = 0;
};

uint64_t scalar_size(ValueType type) {
  switch (type) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return 0;
  }
}

std::optional<GgufValue> In::value(ValueType type) {
  switch (type) {
    case ValueType::U32: return pod<uint32_t>();
    case ValueType::I32: return pod<int32_t>();
    case ValueType::U64: return pod<uint64_t>();
    case ValueType::F32: return pod<float>();
    case ValueType::Bool: return pod<uint8_t>() != 0;
    case ValueType::String: return str();
    case ValueType::Array: {
      const auto elem = pod<ValueType>();
      const auto n = pod<uint64_t>();
      if (elem == ValueType::String) {
        std::vector<std::string> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(str());
        return v;
      }
      if (elem == ValueType::I32 || elem == ValueType::F32) {
        if (n > bytes_.size() / 4) fail("an array longer than the file");
        std::vector<int32_t> ints(n);
        for (auto& x : ints) x = pod<int32_t>();
        if (elem == ValueType::I32) return ints;
        std::vector<float> floats(n);
        std::memcpy(floats.data(), ints.data(), n * 4);
        return floats;
      }
      if (scalar_size(elem) == 0) fail("an array of unknown type " + std::to_string(static_cast<uint32_t>(elem)));
      skip(n * scalar_size(elem));
      return std::nullopt;
    }
    default:
      if (scalar_size(type) == 0) fail("a value of unknown type " + std::to_string(static_cast<uint32_t>(type)));
      skip(scalar_size(type));
      return std::nullopt;
  }
}

}  // namespace

GgufFile GgufFile::read(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path.string());
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  In in(std::move(bytes), path);
  if (in.bytes().size() < 4 || in.pod<uint32_t>() != kMagic) in.fail("not a GGUF file (no GGUF magic)");
  const auto version = in.pod<uint32_t>();
  if (version < 2 || version > 3) in.fail(fmt::format("GGUF version {} (lathe reads 2 and 3)", version));
  const auto n_tensors = in.pod<uint64_t>(), n_kv = in.pod<uint64_t>();
  GgufFile file;
  uint64_t alignment = kAlignment;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const auto key = in.str();
    auto v = in.value(in.pod<ValueType>());
    if (key == "general.alignment" && v && std::holds_alternative<uint32_t>(*v)) alignment = std::get<uint32_t>(*v);
    if (v && key != "general.alignment") file.set(key, std::move(*v));
  }
  if (alignment == 0) in.fail("general.alignment is 0");
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = in.str();
    const auto dims = in.pod<uint32_t>();
    if (dims > 4) in.fail(fmt::format("tensor {} has {} dimensions", t.name, dims));
    for (uint32_t d = 0; d < dims; ++d) t.shape.insert(t.shape.begin(), static_cast<int64_t>(in.pod<uint64_t>()));
    t.type = static_cast<GgmlType>(in.pod<uint32_t>());
    offsets.push_back(in.pod<uint64_t>());
    file.tensors_.push_back(std::move(t));
  }
  const uint64_t data = (in.at() + alignment - 1) / alignment * alignment;
  for (std::size_t i = 0; i < file.tensors_.size(); ++i) {
    auto& t = file.tensors_[i];
    const GgmlTypeTraits* traits = nullptr;
    for (const auto& row : kTypes)
      if (row.type == t.type) traits = &row;
    if (!traits) in.fail(fmt::format("tensor {} has ggml type {}, which lathe does not read", t.name,
                                     static_cast<uint32_t>(t.type)));
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    const auto size = static_cast<uint64_t>(n / traits->block_size * traits->block_bytes);
    in.seek(data + offsets[i]);
    in.skip(size);
    t.data.assign(in.bytes().begin() + static_cast<std::ptrdiff_t>(data + offsets[i]),
                  in.bytes().begin() + static_cast<std::ptrdiff_t>(data + offsets[i] + size));
  }
  return file;
}

}  // namespace lathe::export_
