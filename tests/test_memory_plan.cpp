// The memory plan (train::plan_memory): its figures against the bytes a one-process step really
// holds (parameters, gradients, optimizer state), and the refusal of a plan a node cannot hold.
// The per-rank gradient bytes of the sharded strategies are measured in test_dist.cpp.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "lathe/models/gpt.hpp"
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
    const auto plan = train::plan_memory(count, config, dist::DistOptions{}, 1);
    CHECK(plan.params == params);
    CHECK(plan.grads == grads);
    CHECK(plan.optimizer == state);
    CHECK(plan.buffers == 0);
  }
}

TEST_CASE("memory plan: each strategy keeps less per rank, and a plan too large is refused with its figures",
          "[memory_plan]") {
  const int64_t P = 774'000'000;  // GPT-2 large
  recipe::OptimConfig adamw;
  dist::DistOptions o;
  double last = 1e300;
  for (const auto s : {dist::Strategy::Ddp, dist::Strategy::Zero1, dist::Strategy::Zero2}) {
    o.strategy = s;
    const auto plan = train::plan_memory(P, adamw, o, 2);
    INFO(plan.describe());
    CHECK(plan.total() < last);
    last = plan.total();
  }
  o.strategy = dist::Strategy::Ddp;
  const auto ddp = train::plan_memory(P, adamw, o, 2);
  CHECK(ddp.total() == 20.0 * P);  // 4 parameters + 4 gradients + 8 moments + 4 flat buckets
  const auto msg = test::error_of([&] { train::refuse_if_too_large(ddp, 12e9, at::Device(at::kCPU)); });
  CHECK(msg.find("the memory plan does not fit: ddp over 2 ranks") != std::string::npos);
  CHECK(msg.find("14.42 GiB") != std::string::npos);  // 20 x 774M bytes
  CHECK(msg.find("11.18 GiB") != std::string::npos);  // what a rank has
  CHECK(msg.find("distributed.strategy zero2") != std::string::npos);
  CHECK(test::error_of([&] { train::refuse_if_too_large(ddp, 16e9, at::Device(at::kCPU)); }) == "no error");
  // The machine's memory is read (MemTotal, or the cgroup's limit) and shared by a node's ranks.
  const auto one = train::memory_per_rank(at::Device(at::kCPU), 1), two = train::memory_per_rank(at::Device(at::kCPU), 2);
  REQUIRE(one);
  CHECK(*one > 1e8);
  CHECK(*two == *one / 2);
}
