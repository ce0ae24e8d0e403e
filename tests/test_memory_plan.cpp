// The memory plan (train::plan_memory): its figures against the bytes a one-process step really
// holds (parameters, gradients, optimizer state), and the refusal of a plan a node cannot hold.
// The per-rank gradient bytes of the sharded strategies are measured in test_dist.cpp.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "lathe/models/gpt.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/train/memory_plan.hpp"
#include "lathe/train/optimizer.hpp"
#include "support.hpp"
#include "tiny_models.hpp"

using namespace lathe;

TEST_CASE("memory plan: one process's figures are the bytes a step holds", "[memory_plan]") {
  for (const auto name : {recipe::Optimizer::AdamW, recipe::Optimizer::Sgd}) {
    INFO(enum_name(name));
    torch::manual_seed(1);
    models::Gpt model(test::tiny("gpt"));
    recipe::OptimConfig config;
    config.name = name;
    train::Optimizer opt(*model, config);
    const auto ids = at::randint(0, 64, {2, 8}, at::kLong);
    model->forward(ids).sum().backward();
    opt.step(1e-3);
    double params = 0, grads = 0, state = 0;
    int64_t count = 0;
    for (const auto& p : model->parameters()) {
      params += static_cast<double>(p.nbytes());
      grads += static_cast<double>(p.grad().nbytes());
      count += p.numel();
    }
    for (const auto& [key, t] : opt.state())
      if (!key.starts_with("step.")) state += static_cast<double>(t.nbytes());  // the step counters are scalars
    const auto size = train::model_size(*model);
    CHECK(size.parameters == count);
    CHECK(size.blocks == 2);
    const auto plan = train::plan_memory(size, config, dist::DistOptions{}, 1);
    CHECK(plan.params == params);
    CHECK(plan.grads == grads);
    CHECK(plan.optimizer == state);
    CHECK(plan.buffers == 0);
  }
}

TEST_CASE("memory plan: each strategy keeps less per rank, and a plan too large is refused with its figures",
          "[memory_plan]") {
  const train::ModelSize P{774'000'000, 708'000'000, 36};  // GPT-2 large: 36 blocks of 19.7M
  recipe::OptimConfig adamw;
  dist::DistOptions o;
  double last = 1e300;
  for (const auto s : {dist::Strategy::Ddp, dist::Strategy::Zero1, dist::Strategy::Zero2, dist::Strategy::Fsdp}) {
    o.strategy = s;
    const auto plan = train::plan_memory(P, adamw, o, 2);
    INFO(plan.describe());
    CHECK(plan.total() < last);
    last = plan.total();
  }
  o.strategy = dist::Strategy::Ddp;
  const auto ddp = train::plan_memory(P, adamw, o, 2);
  CHECK(ddp.total() == 20.0 * 774e6);  // 4 parameters + 4 gradients + 8 moments + 4 flat buckets
  const auto msg = test::error_of([&] { train::refuse_if_too_large(ddp, 12e9, at::Device(at::kCPU)); });
  CHECK(msg.find("the memory plan does not fit: ddp over 2 ranks") != std::string::npos);
  CHECK(msg.find("14.42 GiB") != std::string::npos);  // 20 x 774M bytes
  CHECK(msg.find("11.18 GiB") != std::string::npos);  // what a rank has
  CHECK(msg.find("distributed.strategy fsdp") != std::string::npos);
  // fsdp keeps fewer parameter bytes than zero2 only while it reshards after the forward;
  // accumulation keeps zero2's whole gradients.
  o.strategy = dist::Strategy::Zero2;
  const auto zero2 = train::plan_memory(P, adamw, o, 2), zero2_accum = train::plan_memory(P, adamw, o, 2, 4);
  CHECK(zero2_accum.grads == zero2.grads + 4 * 774e6);
  o.strategy = dist::Strategy::Fsdp;
  CHECK(train::plan_memory(P, adamw, o, 2).params < zero2.params);
  o.reshard_after_forward = false;
  CHECK(train::plan_memory(P, adamw, o, 2).params > zero2.params);  // every block whole, and the masters
  CHECK(test::error_of([&] { train::refuse_if_too_large(ddp, 16e9, at::Device(at::kCPU)); }) == "no error");
  // The machine's memory is read (MemTotal, or the cgroup's limit) and shared by a node's ranks.
  const auto one = train::memory_per_rank(at::Device(at::kCPU), 1), two = train::memory_per_rank(at::Device(at::kCPU), 2);
  REQUIRE(one);
  CHECK(*one > 1e8);
  CHECK(*two == *one / 2);
}

TEST_CASE("memory plan: distributed.strategy, and shard_optimizer as zero1's older spelling", "[memory_plan][recipe]") {
  auto parse = [](const std::string& distributed) {
    return lathe::recipe::parse_recipe(
        "pipeline: [train]\nmodel: {preset: gpt-tiny}\ntokenizer: {path: t.json}\ndata: {shard_dir: s}\ndistributed: {" +
            distributed + "}\n",
        "test.yaml");
  };
  CHECK(parse("").distributed.resolved_strategy() == dist::Strategy::Ddp);
  CHECK(parse("shard_optimizer: true").distributed.resolved_strategy() == dist::Strategy::Zero1);
  CHECK(parse("strategy: fsdp").distributed.resolved_strategy() == dist::Strategy::Fsdp);
  const auto both = test::error_of([&] { parse("strategy: zero2, shard_optimizer: true"); });
  CHECK(both.find("distributed.shard_optimizer") != std::string::npos);
  CHECK(both.find("strategy says zero2") != std::string::npos);
  const auto bad = test::error_of([&] { parse("strategy: zero3"); });
  CHECK(bad.find("distributed.strategy") != std::string::npos);
}
