// Atomic file writes.

#include <catch2/catch.hpp>

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
