// Activation checkpointing (train.activation_checkpointing): a checkpointed block runs its forward
// again in the backward with the random-number state of the first run, so the gradients are
// those of the unchecked model bit for bit. The reference is the same model run without
// checkpointing (PyTorch's own autograd over every intermediate tensor).

#include <catch2/catch.hpp>

#include <malloc.h>

#include <algorithm>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "lathe/io/safetensors.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/nn/checkpoint.hpp"
#include "lathe/train/trainer.hpp"
#include "run_fixture.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using namespace lathe;
using lathe::test::Corpus;
using lathe::test::prepared;
using lathe::test::TempDir;

namespace {

struct Grads {
  at::Tensor loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
  at::Tensor next_draw;  // what the generator gives after the step
};

/// One forward and backward of `model` from seed 11 (dropout draws from it), the loss a sum
/// over every output so that each position's gradient flows.
template <class Model>
Grads step(Model& model, const at::Tensor& ids) {
  model->train();
  model->zero_grad();
  torch::manual_seed(11);
  const auto out = model->forward(ids);
  const auto loss = (out * out).mean();
  loss.backward();
  Grads g;
  g.loss = loss.detach();
  for (const auto& p : model->named_parameters())
    g.grads.emplace_back(p.key(), p.value().grad().defined() ? p.value().grad().clone() : at::Tensor());
  g.next_draw = at::rand({4});
  return g;
}

void require_identical(const Grads& a, const Grads& b) {
  CHECK(at::equal(a.loss, b.loss));
  REQUIRE(a.grads.size() == b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    INFO(a.grads[i].first);
    REQUIRE(a.grads[i].second.defined());
    CHECK(at::equal(a.grads[i].second, b.grads[i].second));  // bit for bit
  }
  CHECK(at::equal(a.next_draw, b.next_draw));  // the generator goes on as without checkpointing
}

/// Bytes the C heap holds now (arenas and mapped blocks): where CPU tensors live.
double heap_bytes() {
  const auto mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
}

}  // namespace

TEST_CASE("checkpointing: the spellings of train.activation_checkpointing", "[checkpointing]") {
  CHECK(nn::checkpoint_interval("none") == 0);
  CHECK(nn::checkpoint_interval("blocks") == 1);
  CHECK(nn::checkpoint_interval("every_1") == 1);
  CHECK(nn::checkpoint_interval("every_3") == 3);
  CHECK_FALSE(nn::checkpoint_interval("every_0"));
  CHECK_FALSE(nn::checkpoint_interval("every_"));
  CHECK_FALSE(nn::checkpoint_interval("every_-1"));
  CHECK_FALSE(nn::checkpoint_interval("block"));
  CHECK_FALSE(nn::checkpoint_interval(""));

  const auto msg = test::error_of([] {
    test::recipe_from("model: {preset: gpt-tiny}\ntrain: {activation_checkpointing: block}\n");
  });
  CHECK(msg.find("train.activation_checkpointing") != std::string::npos);
  CHECK(msg.find("did you mean 'blocks'") != std::string::npos);
  const auto graphs = test::error_of([] {
    test::recipe_from(
        "model: {preset: gpt-tiny}\nrun: {device: cuda}\ntrain: {activation_checkpointing: blocks, cuda_graphs: true}\n");
  });
  CHECK(graphs.find("train.cuda_graphs") != std::string::npos);
  CHECK(graphs.find("train.activation_checkpointing") != std::string::npos);
}

TEST_CASE("checkpointing: checkpointed blocks give the unchecked gradients bit for bit (fp32, dropout 0.1)",
          "[checkpointing]") {
  for (const std::string family : {"gpt", "llama", "bert"}) {
    for (const int64_t every : {1, 2}) {
      INFO(family << ", every " << every);
      auto o = test::tiny(family);
      o.n_layer = 3;
      o.dropout = o.attn_dropout = 0.1;
      torch::manual_seed(3);
      const auto ids = at::randint(0, o.vocab_size, {2, 12}, at::kLong);
      if (family == "bert") {
        torch::manual_seed(5);
        models::BertModel model(o, /*with_pooler=*/false);
        const auto plain = step(model, ids);
        REQUIRE(nn::set_block_runner(*model, std::make_shared<nn::CheckpointRunner>(every)) == 1);
        require_identical(plain, step(model, ids));
      } else {
        torch::manual_seed(5);
        models::Gpt model(o);
        const auto plain = step(model, ids);
        REQUIRE(nn::set_block_runner(*model, std::make_shared<nn::CheckpointRunner>(every)) == 1);
        require_identical(plain, step(model, ids));
        // Without grad (evaluation, generation) the runner steps aside.
        torch::NoGradGuard no_grad;
        model->eval();
        const auto with = model->forward(ids);
        nn::set_block_runner(*model, nullptr);
        CHECK(at::equal(with, model->forward(ids)));
      }
    }
  }
}

TEST_CASE("checkpointing: a training run with checkpointed blocks ends with the unchecked run's weights",
          "[checkpointing][train]") {
  Corpus corpus;
  for (const std::string precision : {"fp32", "bf16"}) {
    INFO(precision);
    TempDir a, b;
    const std::string train = "max_steps: 4, batch_size: 4, grad_accum: 2, log_every: 1, save_every: 0, "
                              "eval_every: 0, eval_batches: 1, precision: " + precision;
    auto ra = prepared(corpus.recipe(a.path(), train));
    ra.model.dropout = 0.1;
    train::Trainer(ra).run();
    auto rb = ra;
    rb.run.out_dir = b.path().string();
    rb.train.activation_checkpointing = "blocks";
    lathe::pipeline::run_tokenizer_stage(rb, false);
    lathe::pipeline::run_data_stage(rb, false);
    train::Trainer(rb).run();
    const auto wa = io::load_safetensors(a.path() / "checkpoints/step_00000004/model.safetensors");
    const auto wb = io::load_safetensors(b.path() / "checkpoints/step_00000004/model.safetensors");
    REQUIRE(wa.tensors.size() == wb.tensors.size());
    for (std::size_t i = 0; i < wa.tensors.size(); ++i) {
      INFO(wa.tensors[i].first);
      CHECK(at::equal(wa.tensors[i].second, wb.tensors[i].second));
    }
  }
}

TEST_CASE("checkpointing: a 12-layer model's step holds less memory with checkpointed blocks", "[checkpointing]") {
  auto o = test::tiny("gpt");
  o.n_layer = 12;
  o.d_model = 64;
  o.max_seq_len = 128;
  o.dropout = 0.1;
  torch::manual_seed(5);
  models::Gpt model(o);
  const auto ids = at::randint(0, o.vocab_size, {8, 128}, at::kLong);
  // The peak of a step: the heap after the forward (the saved activations) and whenever a
  // parameter's gradient is ready during the backward (a recomputed block's activations).
  double peak = 0;
  for (auto& p : model->parameters())
    p.register_hook([&peak](const at::Tensor&) { peak = std::max(peak, heap_bytes()); });
  auto measure = [&] {
    model->zero_grad();
    malloc_trim(0);
    const double base = heap_bytes();
    peak = 0;
    const auto out = model->forward(ids);
    auto loss = (out * out).mean();
    peak = heap_bytes();
    loss.backward();
    return peak - base;
  };
  const double plain = measure();
  nn::set_block_runner(*model, std::make_shared<nn::CheckpointRunner>(1));
  const double checked = measure();
  WARN("peak heap above the model during a step of a 12-layer GPT (B 8, T 128, width 64): " << plain / 1e6
       << " MB unchecked, " << checked / 1e6 << " MB with every block checkpointed");
  CHECK(checked < plain);
}
