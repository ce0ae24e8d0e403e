// safetensors read/write against the Python `safetensors` package.

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "support.hpp"

using lathe::test::error_of;
using lathe::test::TempDir;
namespace fs = std::filesystem;

TEST_CASE("safetensors: files written by lathe load in Python with the same values", "[io][safetensors][python]") {
  TempDir dir;
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> tensors{
      {"w.f32", at::randn({3, 4})},
      {"w.bf16", at::randn({5}).to(at::kBFloat16)},
      {"w.f16", at::randn({2, 2}).to(at::kHalf)},
      {"ids", at::arange(7, at::kLong)},
      {"mask", at::tensor({1, 0, 1}).to(at::kBool)},
      {"scalar", at::tensor(3.5, at::kDouble).reshape({})},
      {"empty", at::zeros({0, 4})},
      {"view", at::randn({4, 6}).t()}};  // non-contiguous input
  const auto file = dir.path() / "a.safetensors";
  lathe::io::save_safetensors(file, tensors, {{"format", "pt"}});
  // Python writes back the sums and shapes; values are compared exactly through float64.
  auto py = lathe::test::run_python(
      "import sys, json, torch\n"
      "from safetensors import safe_open\n"
      "out = {}\n"
      "with safe_open(sys.argv[1], framework='pt') as f:\n"
      "    out['__metadata__'] = f.metadata()\n"
      "    for k in f.keys():\n"
      "        t = f.get_tensor(k)\n"
      "        out[k] = [str(t.dtype), list(t.shape), t.double().flatten().tolist()]\n"
      "print(json.dumps(out))\n",
      {file.string()});
  INFO(py.err);
  REQUIRE(py.code == 0);
  auto j = nlohmann::json::parse(py.out);
  CHECK(j["__metadata__"]["format"] == "pt");
  for (const auto& [name, t] : tensors) {
    INFO(name);
    const auto expected = t.to(at::kDouble).contiguous().flatten();
    const auto values = j[name][2].get<std::vector<double>>();
    REQUIRE(values.size() == static_cast<std::size_t>(expected.numel()));
    for (std::size_t i = 0; i < values.size(); ++i) CHECK(values[i] == expected[static_cast<int64_t>(i)].item<double>());
    CHECK(j[name][1].get<std::vector<int64_t>>() == t.sizes().vec());
  }
  CHECK(j["w.bf16"][0] == "torch.bfloat16");
}

TEST_CASE("safetensors: files written by Python load in lathe", "[io][safetensors][python]") {
  TempDir dir;
  const auto file = dir.path() / "p.safetensors";
  auto py = lathe::test::run_python(
      "import sys, torch\n"
      "from safetensors.torch import save_file\n"
      "g = torch.Generator().manual_seed(1)\n"
      "save_file({'b': torch.randn(2, 3, generator=g), 'a': torch.arange(6, dtype=torch.int32).reshape(3, 2),\n"
      "           'h': torch.randn(4, generator=g).to(torch.float16)}, sys.argv[1], metadata={'step': '10'})\n"
      "t = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))\n"
      "print(' '.join(repr(x) for x in t.flatten().tolist()))\n",
      {file.string()});
  INFO(py.err);
  REQUIRE(py.code == 0);
  auto st = lathe::io::load_safetensors(file);
  CHECK(st.metadata.at("step") == "10");
  CHECK(st.tensors.size() == 3);
  CHECK(st.at("a").scalar_type() == at::kInt);
  CHECK(at::equal(st.at("a"), at::arange(6, at::kInt).reshape({3, 2})));
  CHECK(st.at("h").scalar_type() == at::kHalf);
  std::istringstream values(py.out);
  auto b = st.at("b").flatten();
  for (int64_t i = 0; i < 6; ++i) {
    double v = 0;
    values >> v;
    CHECK(b[i].item<double>() == static_cast<float>(v));
  }
  CHECK(error_of([&] { st.at("nope"); }) == "no tensor named 'nope'");
}

TEST_CASE("safetensors: damaged files are reported with the file and tensor", "[io][safetensors][errors]") {
  TempDir dir;
  const auto file = dir.path() / "x.safetensors";
  lathe::io::save_safetensors(file, {{"w", at::ones({4, 4})}, {"b", at::ones({4})}});
  const auto size = fs::file_size(file);

  auto truncated = dir.path() / "t.safetensors";
  fs::copy_file(file, truncated);
  fs::resize_file(truncated, size - 8);
  CHECK(error_of([&] { lathe::io::load_safetensors(truncated); }).find("the file is truncated") != std::string::npos);

  auto tiny = dir.write("tiny.safetensors", "abc");
  CHECK(error_of([&] { lathe::io::load_safetensors(tiny); }) == tiny.string() + ": truncated (no header length)");

  auto huge = dir.write("huge.safetensors", std::string("\xff\xff\0\0\0\0\0\0{}", 10));
  CHECK(error_of([&] { lathe::io::load_safetensors(huge); }).find("exceeds the file size") != std::string::npos);

  // A header length within a large (sparse) file but over the format's 100 MB cap: refused
  // before anything is allocated or read.
  auto big = dir.write("big.safetensors", std::string("\x00\xa3\xe1\x11\0\0\0\0{}", 10));  // 300'000'000
  fs::resize_file(big, 400'000'000);
  CHECK(error_of([&] { lathe::io::load_safetensors(big); }) ==
        big.string() + ": header length 300000000 exceeds the format's limit of 100000000 bytes (a corrupt file)");

  std::string bad_json = "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}";
  std::string raw(8, '\0');
  raw[0] = static_cast<char>(bad_json.size());
  auto wrong = dir.write("wrong.safetensors", raw + bad_json + std::string(8, '\0'));
  CHECK(error_of([&] { lathe::io::load_safetensors(wrong); }) ==
        wrong.string() + ": tensor 'w': data_offsets [0, 4) hold 4 bytes, its shape needs 8");

  std::string odd = "{\"w\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 1]}}";
  raw[0] = static_cast<char>(odd.size());
  auto f8 = dir.write("f8.safetensors", raw + odd + std::string(8, '\0'));
  CHECK(error_of([&] { lathe::io::load_safetensors(f8); }) == f8.string() + ": tensor 'w': unsupported dtype 'F8'");
  CHECK(error_of([&] { lathe::io::save_safetensors(file, {{"a", at::ones({1})}, {"a", at::ones({1})}}); })
            .find("used twice") != std::string::npos);
}

TEST_CASE("safetensors: a mapped read gives the copied values at LibTorch's alignment", "[io][safetensors][python]") {
  TempDir dir;
  const auto file = dir.path() / "m.safetensors";
  // 4 bytes of u8 put the next float tensor off 64-byte alignment in the data; the third one
  // starts at 4 + 60 * 4 = 244 bytes, off alignment too.
  const auto a = at::arange(4, at::kByte), b = at::randn({60}), c = at::randn({3, 5}).to(at::kBFloat16);
  lathe::io::save_safetensors(file, {{"a", a}, {"b", b}, {"c", c}}, {{"k", "v"}});
  const auto copied = lathe::io::load_safetensors(file);
  std::vector<std::string> names;
  {
    const auto mapped = lathe::io::load_safetensors(file, lathe::io::Read::Map);
    CHECK(mapped.metadata.at("k") == "v");
    REQUIRE(mapped.tensors.size() == 3);
    for (const auto& [name, t] : mapped.tensors) {
      INFO(name);
      names.push_back(name);
      CHECK(at::equal(t, copied.at(name)));
      CHECK(reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 64 == 0);
    }
    auto keep = mapped.at("a");  // a view outlives the Safetensors that held it
    keep.add_(1);                // and writes into this process's copy only
    CHECK(at::equal(lathe::io::load_safetensors(file).at("a"), a));
  }
  CHECK(names == std::vector<std::string>{"a", "b", "c"});
  // Python's safetensors reads the padded header.
  auto py = lathe::test::run_python(
      "import sys\nfrom safetensors.torch import load_file\nprint(sorted(load_file(sys.argv[1]).keys()))\n",
      {file.string()});
  INFO(py.err);
  CHECK(py.out == "['a', 'b', 'c']\n");
}
