#include "lathe/io/safetensors.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"

namespace lathe::io {
namespace fs = std::filesystem;

namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> table = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},   {"U8", at::kByte},       {"BOOL", at::kBool}};
  return table;
}

std::string dtype_name(at::ScalarType t) {
  for (const auto& [name, type] : dtypes())
    if (type == t) return name;
  throw Error(std::string("safetensors cannot store dtype ") + c10::toString(t));
}

/// The alignment of LibTorch's CPU allocations (c10::gAlignment).
constexpr uint64_t kTensorAlignment = 64;

/// A whole file mapped copy-on-write; unmapped with its last tensor.
class Mapping {
 public:
  explicit Mapping(const fs::path& path, uint64_t size) : size_(size) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("cannot open safetensors file '" + path.string() + "': " + std::strerror(errno));
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) throw Error("cannot map safetensors file '" + path.string() + "': " + std::strerror(err));
    base_ = static_cast<char*>(p);
  }
  ~Mapping() { ::munmap(base_, size_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  char* data() const { return base_; }

 private:
  char* base_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace

const at::Tensor& Safetensors::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw Error("no tensor named '" + name + "'");
}

void save_safetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, TensorStream::of(tensors), metadata);
}

void save_safetensors(const fs::path& path, const TensorStream& stream, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& spec : stream.specs) {
    if (!names.insert(spec.name).second) throw Error(path.string() + ": tensor name '" + spec.name + "' is used twice");
    int64_t numel = 1;
    for (const auto d : spec.shape) numel *= d;
    const uint64_t bytes = static_cast<uint64_t>(numel) * c10::elementSize(spec.dtype);
    header[spec.name] = {{"dtype", dtype_name(spec.dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  // The data starts at a multiple of 64 bytes (the format pads the header with spaces), so a
  // mapped reader can use the tensors in place.
  json.append((kTensorAlignment - (8 + json.size()) % kTensorAlignment) % kTensorAlignment, ' ');
  std::string head(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  head += json;

  AtomicFileWriter out(path);
  // A failure (a full disk, a tensor that breaks the specs) stops the writing, not the stream: its
  // source may be a collective every rank takes part in, which must run to its end. The error
  // comes after.
  std::exception_ptr failed;
  auto write = [&](std::string_view piece) {
    if (failed) return;
    try {
      out.write(piece);
    } catch (...) {
      failed = std::current_exception();
    }
  };
  write(head);
  std::size_t next = 0;
  if (stream.values)
    stream.values([&](const std::string& name, const at::Tensor& t) {
      if (failed) return;
      try {
        if (next >= stream.specs.size() || stream.specs[next].name != name ||
            stream.specs[next].dtype != t.scalar_type() || stream.specs[next].shape != t.sizes().vec())
          throw std::logic_error(path.string() + ": the tensor stream gave '" + name +
                                 "' out of its declared order, dtype or shape");
        ++next;
        // Written from the tensor's own memory (a CPU copy only for a tensor elsewhere or strided).
        const auto cpu = t.detach().to(at::kCPU).contiguous();
        write(std::string_view(static_cast<const char*>(cpu.data_ptr()), cpu.nbytes()));
      } catch (...) {
        failed = std::current_exception();
      }
    });
  if (failed) std::rethrow_exception(failed);
  if (next != stream.specs.size())
    throw std::logic_error(path.string() + ": the tensor stream gave " + std::to_string(next) + " of its " +
                           std::to_string(stream.specs.size()) + " tensors");
  out.commit();
}

namespace {

/// One tensor's entry in a safetensors header: its data is [begin, end) of the data section.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

/// The header JSON of the file open in `in` (`size` bytes), and the length of that header.
std::pair<nlohmann::json, uint64_t> read_header(std::ifstream& in, const std::string& name, uint64_t size) {
  unsigned char len[8];
  if (size < 8 || !in.read(reinterpret_cast<char*>(len), 8)) throw Error(name + ": truncated (no header length)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > size - 8) throw Error(name + ": header length " + std::to_string(n) + " exceeds the file size " + std::to_string(size));
  // The format's reference reader refuses headers over 100 MB: a corrupt length is an error,
  // not a multi-gigabyte allocation.
  if (n > kMaxSafetensorsHeader)
    throw Error(name + ": header length " + std::to_string(n) + " exceeds the format's limit of " +
                std::to_string(kMaxSafetensorsHeader) + " bytes (a corrupt file)");
  std::string json(n, '\0');
  in.read(json.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": invalid header JSON: " + e.what());
  }
  if (!header.is_object()) throw Error(name + ": the header is not a JSON object");
  return {std::move(header), n};
}

/// The header's entry `key`, checked against its dtype, its shape and the data section's size.
Entry read_entry(const std::string& key, const nlohmann::json& v, uint64_t data_bytes, const std::string& name) {
  const auto where = name + ": tensor '" + key + "': ";
  try {
    const auto dt = v.at("dtype").get<std::string>();
    auto type = std::find_if(dtypes().begin(), dtypes().end(), [&](const auto& d) { return d.first == dt; });
    if (type == dtypes().end()) throw Error(where + "unsupported dtype '" + dt + "'");
    Entry e{key, type->second, v.at("shape").get<std::vector<int64_t>>(), v.at("data_offsets").at(0).get<uint64_t>(),
            v.at("data_offsets").at(1).get<uint64_t>()};
    uint64_t elements = 1;
    for (auto d : e.shape) {
      if (d < 0) throw Error(where + "negative dimension");
      elements *= static_cast<uint64_t>(d);
    }
    const uint64_t want = elements * static_cast<uint64_t>(c10::elementSize(e.type));
    if (e.end < e.begin || e.end - e.begin != want)
      throw Error(where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") hold " +
                  std::to_string(e.end - e.begin) + " bytes, its shape needs " + std::to_string(want));
    if (e.end > data_bytes)
      throw Error(where + "data ends at byte " + std::to_string(e.end) + " past the data section (" +
                  std::to_string(data_bytes) + " bytes): the file is truncated");
    return e;
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "malformed entry: " + e.what());
  }
}

}  // namespace

struct SafetensorsReader::Impl {
  fs::path path;
  int fd = -1;
  uint64_t data_start = 0;  // 8 + header length
  std::vector<Entry> entries;  // by offset
  std::map<std::string, std::size_t> index;
  std::vector<Info> infos;
  std::map<std::string, std::string> metadata;
  std::shared_ptr<Mapping> mapping;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }
  const Entry& entry(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) throw Error(path.string() + ": no tensor named '" + name + "'");
    return entries[it->second];
  }
};

SafetensorsReader::SafetensorsReader(const fs::path& path, Read read) : impl_(std::make_shared<Impl>()) {
  auto& m = *impl_;
  m.path = path;
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read safetensors file '" + name + "'");
  const uint64_t size = fs::file_size(path);
  const auto [header, n] = read_header(in, name, size);
  m.data_start = 8 + n;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto v = it.value().begin(); v != it.value().end(); ++v)
        m.metadata[v.key()] = v.value().is_string() ? v.value().get<std::string>() : v.value().dump();
      continue;
    }
    m.entries.push_back(read_entry(it.key(), it.value(), size - 8 - n, name));
  }
  std::sort(m.entries.begin(), m.entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < m.entries.size(); ++i)
    if (m.entries[i].begin < m.entries[i - 1].end)
      throw Error(name + ": tensors '" + m.entries[i - 1].name + "' and '" + m.entries[i].name + "' overlap");
  for (std::size_t i = 0; i < m.entries.size(); ++i) {
    m.index.emplace(m.entries[i].name, i);
    m.infos.push_back({m.entries[i].name, m.entries[i].type, m.entries[i].shape});
  }
  if (read == Read::Map && !m.entries.empty()) m.mapping = std::make_shared<Mapping>(path, size);
  m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) throw Error("cannot open safetensors file '" + name + "': " + std::strerror(errno));
}

const fs::path& SafetensorsReader::path() const { return impl_->path; }
const std::vector<SafetensorsReader::Info>& SafetensorsReader::tensors() const { return impl_->infos; }
const std::map<std::string, std::string>& SafetensorsReader::metadata() const { return impl_->metadata; }

at::Tensor SafetensorsReader::get(const std::string& name) const {
  const auto& e = impl_->entry(name);
  const uint64_t at_byte = impl_->data_start + e.begin;
  // Only data at LibTorch's own allocation alignment becomes a view: some kernels (the int8
  // weight product among them) assume it, and crash on less.
  if (impl_->mapping && at_byte % kTensorAlignment == 0) {
    // The tensor holds the mapping: it is unmapped when the last view goes.
    auto mapping = impl_->mapping;
    return at::from_blob(mapping->data() + at_byte, e.shape, [mapping](void*) {}, at::TensorOptions().dtype(e.type));
  }
  at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
  read_into(name, t);
  return t;
}

void SafetensorsReader::read_into(const std::string& name, const at::Tensor& out) const {
  const auto& e = impl_->entry(name);
  const auto where = impl_->path.string() + ": tensor '" + name + "': ";
  if (!out.device().is_cpu() || !out.is_contiguous() || out.scalar_type() != e.type ||
      out.nbytes() != e.end - e.begin)
    throw std::logic_error(where + "read_into needs a contiguous CPU tensor of its dtype and size");
  auto* dst = static_cast<char*>(out.data_ptr());
  uint64_t done = 0, want = e.end - e.begin;
  while (done < want) {
    const auto got = ::pread(impl_->fd, dst + done, want - done, static_cast<off_t>(impl_->data_start + e.begin + done));
    const int err = errno;
    if (got < 0 && err == EINTR) continue;
    if (got < 0) throw Error(where + "cannot read its data: " + std::strerror(err));
    if (got == 0) throw Error(where + "the file ends before its data does (it was truncated after it was opened)");
    done += static_cast<uint64_t>(got);
  }
}

Safetensors load_safetensors(const fs::path& path, Read read) {
  const SafetensorsReader reader(path, read);
  Safetensors out;
  out.metadata = reader.metadata();
  for (const auto& info : reader.tensors()) out.tensors.emplace_back(info.name, reader.get(info.name));
  return out;
}

}  // namespace lathe::io
