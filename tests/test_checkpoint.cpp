// Checkpoints under failure: crash-safe replacement (a fault injected at every step of a save),
// pruning that touches the current run alone, names that are not checkpoints, and a save that
// runs out of room.

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <fstream>

#include <ATen/ATen.h>

#include "lathe/core/error.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/train/checkpoint.hpp"
#include "support.hpp"

using lathe::test::error_of;
using lathe::test::TempDir;
using namespace lathe::train;
namespace fs = std::filesystem;

namespace {

/// What a process killed at a fault point leaves: not a std::exception, so no clean-up runs.
struct Killed {};

lathe::models::AnyModel tiny_model(double fill) {
  lathe::models::ModelOptions o;
  o.vocab_size = 20;
  o.n_layer = 1;
  o.n_head = 2;
  o.d_model = 8;
  o.max_seq_len = 8;
  auto m = lathe::models::make_model(lathe::models::ModelKind::Gpt, o);
  torch::NoGradGuard no_grad;
  for (auto& p : m.module()->parameters()) p.fill_(fill);
  return m;
}

fs::path save(const fs::path& root, int64_t step, const std::string& run_id, double fill = 1.0,
              double val_loss = std::nan("")) {
  TrainerState s;
  s.step = step;
  s.run_id = run_id;
  s.val_loss = val_loss;
  return save_checkpoint(root, tiny_model(fill), {{"optim.x", at::full({4}, fill)}}, s);
}

std::vector<std::string> names(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(p.filename().string());
  return out;
}

double fill_of(const fs::path& dir) { return load_checkpoint(dir).tensors.at("optim.x")[0].item<double>(); }

struct HookScope {
  explicit HookScope(CheckpointFaultHook h) { set_checkpoint_fault_hook(std::move(h)); }
  ~HookScope() { set_checkpoint_fault_hook({}); }
};

}  // namespace

TEST_CASE("checkpoint: pruning keeps the current run's newest and never another run's", "[checkpoint]") {
  TempDir dir;
  const auto root = dir.path() / "checkpoints";
  // An earlier run reached step 12; a new run in the same place writes steps 2..6, keep_last 2.
  save(root, 10, "earlier");
  save(root, 12, "earlier");
  for (int64_t step : {2, 4, 6}) {
    const auto written = save(root, step, "now");
    const auto removed = prune_checkpoints(root, "now", /*keep_last=*/2, /*keep_best=*/false);
    CHECK(fs::exists(written));  // the checkpoint just written survives its own pruning
    if (step == 6) CHECK(names(removed) == std::vector<std::string>{"step_00000002"});
  }
  CHECK(names(list_checkpoints(root)) ==
        std::vector<std::string>{"step_00000004", "step_00000006", "step_00000010", "step_00000012"});
  // keep_best keeps the lowest validation loss of this run besides the newest.
  save(root, 8, "now", 1.0, /*val_loss=*/1.5);
  save(root, 14, "now", 1.0, 2.5);
  prune_checkpoints(root, "now", 1, /*keep_best=*/true);
  CHECK(names(list_checkpoints(root)) ==
        std::vector<std::string>{"step_00000008", "step_00000010", "step_00000012", "step_00000014"});
}

TEST_CASE("checkpoint: only exact step_NNNNNNNN names with lathe's meta.json are checkpoints", "[checkpoint]") {
  TempDir dir;
  const auto root = dir.path() / "checkpoints";
  save(root, 2, "r");
  save(root, 4, "r");
  // The user's backup, with a copy of a real meta.json inside, and a look-alike without one.
  fs::copy(root / "step_00000004", root / "step_00000003_backup", fs::copy_options::recursive);
  fs::create_directories(root / "step_00000009");
  CHECK(names(list_checkpoints(root)) == std::vector<std::string>{"step_00000002", "step_00000004"});
  CHECK(!is_checkpoint(root / "step_00000003_backup"));
  CHECK(!is_checkpoint(root / "step_00000009"));
  save(root, 6, "r");
  prune_checkpoints(root, "r", 1, false);
  CHECK(fs::exists(root / "step_00000003_backup/model.safetensors"));
  CHECK(fs::exists(root / "step_00000009"));
  CHECK(names(list_checkpoints(root)) == std::vector<std::string>{"step_00000006"});
  // A directory of the user's with the name of the next checkpoint stops the save, untouched.
  CHECK(error_of([&] { save(root, 9, "r"); }).find("'" + (root / "step_00000009").string() +
                                                   "' exists and was not written by lathe") == 0);
  CHECK(fs::is_empty(root / "step_00000009"));
}

TEST_CASE("checkpoint: a save killed at any point never loses the newest complete checkpoint", "[checkpoint]") {
  for (const std::string point : {"model", "trainer", "complete", "renamed", "exchanged"}) {
    for (const bool replace : {true, false}) {
      INFO("killed at " << point << (replace ? ", replacing step 4" : ", writing step 6"));
      TempDir dir;
      const auto root = dir.path() / "checkpoints";
      save(root, 2, "r", 2.0);
      save(root, 4, "r", 4.0);
      bool killed = false;
      {
        HookScope hook([&](std::string_view at) {
          if (at == point) throw Killed{};
        });
        try {
          save(root, replace ? 4 : 6, "r", 40.0);
        } catch (const Killed&) {
          killed = true;
        }
      }
      // Points a save does not pass (a rename on a fresh name is not an exchange) kill nothing.
      if (!killed) continue;
      // The next process repairs what is left and resumes from the newest complete checkpoint.
      recover_checkpoints(root);
      auto latest = load_latest_checkpoint(root, {});
      REQUIRE(latest);
      const bool new_one_landed = point == "renamed" || point == "exchanged";
      CHECK(latest->state.step == (replace || !new_one_landed ? 4 : 6));
      CHECK(fill_of(latest->dir) == (new_one_landed ? 40.0 : 4.0));
      for (const auto& e : fs::directory_iterator(root)) {
        const auto n = e.path().filename().string();
        CHECK(!(n.starts_with(".tmp-") || n.starts_with(".old-")));  // leftovers are gone
      }
      // Saving the same step again works (no leftover in the way).
      save(root, 4, "r", 44.0);
      CHECK(fill_of(root / "step_00000004") == 44.0);
    }
  }
}

TEST_CASE("checkpoint: a checkpoint moved aside by an interrupted replacement is put back", "[checkpoint]") {
  // What a file system without an atomic swap leaves when the writer dies between its renames.
  TempDir dir;
  const auto root = dir.path() / "checkpoints";
  save(root, 4, "r", 4.0);
  const auto aside = root / ".old-step_00000004-123-1-0";
  lathe::io::claim(aside);
  fs::rename(root / "step_00000004", aside);
  CHECK(list_checkpoints(root).empty());
  recover_checkpoints(root);
  REQUIRE(names(list_checkpoints(root)) == std::vector<std::string>{"step_00000004"});
  CHECK(fill_of(root / "step_00000004") == 4.0);
}
