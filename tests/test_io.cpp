// Atomic file writes.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <limits>

#include "lathe/core/denormals.hpp"
#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "support.hpp"

namespace fs = std::filesystem;

TEST_CASE("io: write_file_atomic creates, replaces and leaves no temporary behind", "[io]") {
  lathe::test::TempDir dir;
  const auto target = dir.path() / "a" / "b" / "file.txt";
  lathe::io::write_file_atomic(target, "first");
  CHECK(lathe::test::read_file(target) == "first");
  lathe::io::write_file_atomic(target, std::string(1 << 20, 'x'));
  CHECK(fs::file_size(target) == (1u << 20));
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(target.parent_path())) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("io: write_file_atomic failure names the path and keeps the old file", "[io][errors]") {
  lathe::test::TempDir dir;
  auto blocker = dir.write("not_a_dir", "data");
  try {
    lathe::io::write_file_atomic(blocker / "file.txt", "x");
    FAIL("expected an error");
  } catch (const lathe::Error& e) {
    CHECK(std::string(e.what()).find(blocker.string()) != std::string::npos);
  }
  CHECK(lathe::test::read_file(blocker) == "data");
}

namespace {

/// Whether a denormal times 1.5 comes out as zero in every chunk of a multiplication large
/// enough that ATen spreads it over all its threads: 1 everywhere zero, 0 nowhere, -1 mixed.
int denormals_flushed() {
  // Written through an integer view: a float fill would itself be flushed.
  const auto bits = at::full({1 << 20}, static_cast<int32_t>(64), at::kInt);  // 64 * the smallest denormal
  const auto product = at::mul(bits.view(at::kFloat), 1.5);
  const auto zero = product.eq(0);
  return zero.all().item<bool>() ? 1 : zero.any().item<bool>() ? -1 : 0;
}

}  // namespace

TEST_CASE("core: denormals are flushed to zero on every thread, and kept when asked", "[io][denormals]") {
  // The test binary's main() does what lathe's does; the pool's threads inherited it.
  CHECK(denormals_flushed() == 1);
  CHECK(at::mul(at::full({1 << 20}, 1e-30f), 1e-10f).eq(0).all().item<bool>());  // an underflow is zero too
  CHECK(at::mul(at::full({1 << 20}, 1e-30f), 2.0f).gt(0).all().item<bool>());    // normal numbers stay
  // LATHE_KEEP_DENORMALS=1: IEEE arithmetic in a fresh process (this binary, the hidden case).
  const auto kept = lathe::test::run_process({"env", "LATHE_KEEP_DENORMALS=1", fs::read_symlink("/proc/self/exe").string(),
                                              "[denormals-kept]"});
  INFO(kept.out << kept.err);
  CHECK(kept.code == 0);
  CHECK_THAT(kept.out, Catch::Contains("All tests passed"));
}

TEST_CASE("core: denormals follow LATHE_KEEP_DENORMALS (run by the case above)", "[.][denormals-kept]") {
  const char* keep = std::getenv("LATHE_KEEP_DENORMALS");
  CHECK(denormals_flushed() == (keep && std::string(keep) == "1" ? 0 : 1));
}
