// The training loop. The components do the rest, each owning its own schedule and policy: the
// checkpointer (when to save, what a checkpoint holds, which one to resume), the validator
// (when to validate), mixed precision (autocast, loss scaling, non-finite steps), the
// data-parallel state (agreements, gradient reduction, the sharded optimizer) and the metrics.

#include "lathe/train/trainer.hpp"

#include <algorithm>
#include <csignal>
#include <limits>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/adapters/lora.hpp"
#include "lathe/core/error.hpp"
#include "lathe/data/loader.hpp"
#include "lathe/dist/world.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/nn/checkpoint.hpp"
#include "lathe/recipe/load.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/checkpointer.hpp"
#include "lathe/train/data_parallel.hpp"
#include "lathe/train/device.hpp"
#include "lathe/train/eval_tasks.hpp"
#include "lathe/train/evaluate.hpp"
#include "lathe/train/initial_model.hpp"
#include "lathe/train/memory_plan.hpp"
#include "lathe/train/mfu.hpp"
#include "lathe/train/optimizer.hpp"
#include "lathe/train/precision.hpp"
#include "lathe/train/run_dir.hpp"
#include "lathe/train/schedule.hpp"
#include "lathe/train/step_graph.hpp"
#include "lathe/train/stop_signal.hpp"

namespace lathe::train {
namespace fs = std::filesystem;

namespace {

/// With adapters on, what the checkpoints hold: the adapters, on the base train.init_from.
std::optional<AdapterFiles> adapter_files(const recipe::Recipe& r) {
  if (!r.adapters.on()) return std::nullopt;
  return AdapterFiles{r.adapters, fs::absolute(r.train.init_from).lexically_normal().string()};
}

}  // namespace

struct Trainer::Impl {
  std::shared_ptr<dist::Communicator> comm;  // data-parallel ranks; null: one process
  std::unique_ptr<DataParallel> dp;          // set when distributed()
  bool distributed() const { return comm && comm->backend() != "none"; }
  bool lead() const { return !distributed() || comm->rank() == 0; }  // writes files and the console
  int world() const { return distributed() ? comm->size() : 1; }
  std::optional<io::DirLock> lock;  // one writer per out_dir
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<TaskData> data;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<MixedPrecision> precision;
  MemoryPlan plan;  // what each rank holds for the model
  std::string resumed_from;
  std::string resume_note;  // the settings that differ from the resumed checkpoint's recipe
  std::unique_ptr<MicroStepGraph> graph;  // train.cuda_graphs
  std::optional<adapters::AdapterSummary> adapters;  // what trains, with adapters on
  std::string reference_note;  // dpo: how the reference log-probabilities were computed
  at::Tensor preference_window;  // dpo: reward sums of the steps since the last train record (host)
  at::ScalarType logits_dtype = at::kFloat;
  void gather_model(torch::nn::Module& m) {  // fsdp: the whole model on each rank, optimizer freed first
    if (!dp || !dp->block_runner()) return;
    optimizer.reset();
    dp->gather_model(m);
  }
};

Trainer::Trainer(recipe::Recipe r, TrainOptions options)
    : impl_(std::make_unique<Impl>()), recipe_(std::move(r)), options_(options),
      device_(resolve_device(recipe_.run.device)) {
  impl_->comm = options_.comm;
  const bool distributed = impl_->distributed(), lead = impl_->lead();
  dist::Communicator* const peers = distributed ? impl_->comm.get() : nullptr;
  device_ = rank_device(device_, peers);
  if (!lead) options_.console = nullptr;  // rank 0 speaks for the job
  // A launched rank cannot tell where its output goes: Open MPI gives every rank a pseudo-terminal
  // even when mpirun's own output is a file. Plain lines every train.log_every, never redrawn.
  if (distributed || dist::detect_world().launcher != "none") options_.console_is_tty = false;
  share_threads(recipe_.run.threads, peers, device_);
  check_precision(recipe_.train, device_, impl_->distributed(), impl_->world());
  const auto root = recipe::checkpoint_dir(recipe_);
  impl_->precision = std::make_unique<MixedPrecision>(recipe_.train, device_, root);
  if (recipe_.train.cuda_graphs) impl_->graph = std::make_unique<MicroStepGraph>();
  if (distributed && recipe_.distributed.sharded() && options_.sparsity)
    throw Error(fmt::format("distributed.strategy {}: the pruning fine-tune holds masks on whole parameters; run it "
                            "with strategy ddp",
                            enum_name(recipe_.distributed.resolved_strategy())));
  torch::manual_seed(static_cast<uint64_t>(recipe_.run.seed));
  // What each rank does alone before the ranks work together: a rank that fails here ends every
  // rank at once with its message (dist::together), rather than leaving them to time out.
  dist::together(peers, "the start of training (each rank reads out_dir)", [&] {
    if (lead) {
      impl_->lock.emplace(recipe_.run.out_dir);
      recover_checkpoints(root);
    }
    impl_->tok = load_run_tokenizer(recipe_, /*required=*/false);
  });
  if (distributed) check_same_job(*impl_->comm, recipe_, impl_->tok.get());
  std::optional<CheckpointData> resume;
  dist::together(peers, "the choice of the checkpoint to resume (rank 0 chooses)", [&] {
    if (lead)
      resume = choose_resume(root, recipe_.train.resume, [&](const std::string& w) {
        if (options_.console) *options_.console << w << "\n";
      });
  });
  if (distributed) resume = agree_on_resume(*impl_->comm, root, recipe_.train.resume, std::move(resume));
  start(std::move(resume));
}

void Trainer::start(std::optional<CheckpointData> resume) {
  // fsdp: the model stays on the meta device; each rank keeps its shard of the values alone.
  const bool fsdp = impl_->distributed() && recipe_.distributed.resolved_strategy() == dist::Strategy::Fsdp;
  if (resume && resume->adapters && !recipe_.adapters.on())
    throw Error(resume->dir.string() + " holds adapters alone (a run with adapters), and adapters.kind is none: "
                "resume it with the adapters section that trained them, or start over with --force");
  // With adapters the model is the base (train.init_from) again, and a checkpoint holds the adapters.
  auto start_from = resume && !resume->adapters ? resumed_model(recipe_, impl_->tok.get(), *resume)
                                                : initial_model(recipe_, impl_->tok.get());
  model_ = fsdp ? start_from.model : models::materialise(start_from);
  if (recipe_.adapters.on()) start_adapters(resume ? &*resume : nullptr);
  if (resume) {
    state_ = resume->state;
    impl_->resumed_from = resume->dir.string();
    impl_->resume_note = changed_settings(resume->state.recipe_yaml, recipe_);
  }
  if (state_.run_id.empty()) state_.run_id = new_run_id();  // a fresh run, or a checkpoint from before run ids
  if (impl_->tok) check_vocab(model_, *impl_->tok, "");
  state_.recipe_yaml = recipe::to_yaml(recipe_);
  if (!fsdp) model_.module()->to(device_);
  impl_->plan = check_memory_plan(*model_.module(), recipe_, impl_->distributed() ? impl_->comm.get() : nullptr,
                                  device_);
  if (impl_->distributed())
    impl_->dp = std::make_unique<DataParallel>(impl_->comm, *model_.module(), recipe_.distributed,
                                               fsdp ? &start_from.values : nullptr);
  const auto* dp = impl_->dp.get();
  // How the blocks run: checkpointed (outermost: its re-run gathers again), then gathered (fsdp).
  auto runner = dp ? dp->block_runner() : nullptr;
  if (const auto every = *nn::checkpoint_interval(recipe_.train.activation_checkpointing); every > 0)
    runner = std::make_shared<nn::CheckpointRunner>(every, runner);
  if (runner) nn::set_block_runner(*model_.module(), runner);
  impl_->optimizer = dp ? dp->optimizer(*model_.module(), recipe_.optim)
                        : std::make_unique<Optimizer>(*model_.module(), recipe_.optim);
  if (resume) {
    auto optim = checkpoint_part(*resume, "optim.");
    if (dp) optim = dp->rank_state(std::move(optim));
    impl_->optimizer->load_state(optim, (resume->dir / "trainer.safetensors").string());
    restore_rng(resume->tensors, device_);
  }
  if (auto& sp = options_.sparsity) {
    if (resume) sp->masks = checkpoint_part(*resume, "mask.");
    for (auto& [name, mask] : sp->masks) mask = mask.to(device_, at::kBool);
    hold_masks(*sp, model_, *impl_->optimizer);
  }
}

void Trainer::start_adapters(const CheckpointData* resume) {
  const auto& a = recipe_.adapters;
  if (a.kind == adapters::AdapterKind::Qlora && !device_.is_cpu())
    throw Error("adapters.kind qlora: the quantized base runs on lathe's CPU kernels, and this run is on " +
                device_.str() + "; use lora, or run.device: cpu");
  if (resume && !resume->adapters)
    throw Error(resume->dir.string() + " holds a whole model, but adapters.kind is " + std::string(enum_name(a.kind)) +
                ": resume it without adapters, or start over with --force");
  if (resume) {
    // The adapters continue as they were trained: the same scale, base and layers.
    if (auto problem = adapters::resume_problem(resume->dir, a, adapter_files(recipe_)->base); !problem.empty())
      throw Error(problem + ": resume with the settings that trained them, or start over with --force");
    if (a.kind == adapters::AdapterKind::Qlora) adapters::quantize_base(model_, a);
    adapters::load_peft(model_, resume->dir);
    if (adapters::adapted_layers(model_) != adapters::target_layers(model_, a.targets))
      throw Error(fmt::format("{} holds adapters on other layers than adapters.targets [{}] selects: resume with the "
                              "targets that trained them, or start over with --force",
                              resume->dir.string(), fmt::join(a.targets, ", ")));
    impl_->adapters = adapters::summarise(model_, std::string(enum_name(a.kind)));
  } else {
    impl_->adapters = adapters::attach(model_, a);
  }
}

Trainer::~Trainer() = default;

models::AnyModel& Trainer::model() {
  if (impl_->dp && impl_->dp->block_runner() && impl_->optimizer)
    throw std::logic_error("Trainer::model: under fsdp a rank holds shards; TrainOptions::whole_model gathers it");
  return model_;
}

StepResult Trainer::step(const std::vector<Batch>& micro, bool stop) {
  if (!impl_->optimizer) throw std::logic_error("Trainer::step: run() has ended and gathered the fsdp model");
  auto& opt = *impl_->optimizer;
  auto& precision = *impl_->precision;
  const auto* dp = impl_->dp.get();
  auto* graph = impl_->graph.get();
  const auto& sparsity = options_.sparsity;
  StepResult res;
  res.lr = learning_rate(recipe_.schedule, recipe_.optim.lr, state_.step, recipe_.train.max_steps);
  if (sparsity && sparsity->update(state_.step, model_)) hold_masks(*sparsity, model_, opt);
  model_.module()->train();
  opt.zero_grad(/*keep=*/graph != nullptr);  // a captured backward adds into the same gradient tensors
  if (dp) dp->sync().zero_grad();
  if (impl_->comm) impl_->comm->set_step(state_.step + 1);  // what this rank's heartbeat reports
  // The loss stays on the device through the micro-batches; the host reads it, the gradient
  // norm and the fp16 overflow flag together, once, at the end of the step. A non-finite loss
  // is found there too: its backward only wasted work, and its gradients are dropped.
  precision.begin_step(state_);
  const bool weighted = model_.traits().weigh_by_targets;
  const auto divisor = loss_divisors(micro, weighted, dp, state_.step);
  // Set per micro-batch. A captured graph keeps the divisor of its capture: graphs capture GPT
  // steps only, whose divisor is always the number of micro-batches.
  double micro_divisor = 0;
  bool last_micro = false;
  at::Tensor preference;  // dpo: the step's reward sums, on the device
  // One micro-batch's forward and backward (what train.cuda_graphs captures); the detached loss.
  auto micro_step = [&](const Batch& batch) {
    at::Tensor loss;
    {
      AutocastScope autocast(precision.precision(), device_);
      loss = task_loss(model_, batch, &impl_->logits_dtype, &preference);
    }
    auto scaled = precision.scale(loss / micro_divisor);
    // Data-parallel: the gradients are reduced during the last micro-batch's backward only.
    if (dp) dp->sync().begin_backward(/*sync=*/last_micro);
    scaled.backward();
    return loss.detach();
  };
  at::Tensor loss_sum;
  int64_t tokens = 0;
  for (std::size_t k = 0; k < micro.size(); ++k) {
    last_micro = k + 1 == micro.size();
    micro_divisor = divisor[k];
    const auto loss = graph ? graph->run(micro[k], static_cast<int64_t>(micro.size()), device_, micro_step)
                            : micro_step(to_device(micro[k], device_));
    tokens += micro[k].tokens;
    auto value = loss.to(at::kDouble);  // a copy: a replayed loss is overwritten by the next replay
    if (weighted) value = value / divisor[k];
    loss_sum = loss_sum.defined() ? loss_sum + value : value;
  }
  res.logits_dtype = impl_->logits_dtype;
  if (dp) dp->sync().finish();
  if (sparsity) mask_gradients(*sparsity, model_);
  const auto found_inf = precision.unscale(opt.grads(), state_);
  // Weighted: the sum of the shares is the rank's part of the global mean (times world).
  const auto loss_mean = weighted ? loss_sum.reshape({}) : loss_sum.reshape({}) / static_cast<double>(micro.size());
  const auto agreed = dp ? dp->agree(loss_mean, found_inf, stop, opt, recipe_.optim.grad_clip, state_.step + 1)
                         : local_agreement(loss_mean, found_inf, opt, recipe_.optim.grad_clip);
  auto together = at::stack({agreed.loss, agreed.grad_norm.to(at::kDouble).reshape({}),
                             agreed.found_inf.to(at::kDouble).reshape({}), agreed.stop.to(at::kDouble).reshape({})});
  if (preference.defined()) together = at::cat({together, preference});
  const auto host = together.to(at::kCPU);  // the step's one synchronisation
  if (preference.defined()) res.preference = host.narrow(0, 4, preference.numel()).clone();
  const auto* v = host.data_ptr<double>();
  res.loss = v[0];
  res.grad_norm = v[1];
  res.stop = v[3] > 0;
  if (auto why = precision.verdict(state_, res.loss, res.grad_norm, /*overflow=*/v[2] > 0)) {
    res.skipped = true;
    res.why = std::move(*why);
    opt.zero_grad(/*keep=*/graph != nullptr);
  } else {
    opt.step(res.lr);
    if (dp && dp->sharded()) dp->sync().gather_parameters();
  }
  ++state_.step;
  res.tokens = tokens * impl_->world();  // every rank read as many
  state_.tokens += res.tokens;
  return res;
}

std::map<std::string, double> Trainer::evaluate(int64_t batches) {
  if (!impl_->data) throw std::logic_error("Trainer::evaluate needs the data (run() sets it up)");
  const int64_t n = std::min(batches, impl_->data->val_batches());
  return evaluate_batches(model_, *impl_->data, n, recipe_.train.precision, device_).metrics(recipe_.model.num_labels);
}

void Trainer::load_data() {
  if (!impl_->tok) impl_->tok = load_run_tokenizer(recipe_, /*required=*/true);
  check_vocab(model_, *impl_->tok, "");
  impl_->data = make_task_data(recipe_, *impl_->tok, recipe::Split::Val,
                               {impl_->distributed() ? impl_->comm->rank() : 0, impl_->world()});
  model_.labels = impl_->data->labels();
  if (impl_->data->wants_reference()) {
    // The pairs of the steps this run will take, and of the validations.
    const auto accum = static_cast<uint64_t>(recipe_.train.grad_accum);
    const auto begin = static_cast<uint64_t>(state_.step) * accum, end = static_cast<uint64_t>(recipe_.train.max_steps) * accum;
    auto score = [&](const models::AnyModel& reference) {
      return score_reference(*impl_->data, reference, recipe_.train.precision, device_, begin, end,
                             recipe_.train.eval_batches);
    };
    // With adapters the reference is the base the policy holds (its adapters off); otherwise the
    // model the run started from, built again (a resumed run's model has moved).
    if (recipe_.adapters.on()) {
      nn::AdaptersDisabledGuard base_only;
      impl_->reference_note = score(model_) + " (the base: the adapters off)";
    } else {
      impl_->reference_note = score(reference_model(recipe_, impl_->tok.get(), device_)) + " (train.init_from)";
    }
  }
}

bool Trainer::announce(Metrics& metrics) const {
  const auto& tr = recipe_.train;
  auto say = [&](const std::string& s) { metrics.message(s); };
  if (!impl_->resumed_from.empty()) say(fmt::format("resumed from {} (step {})", impl_->resumed_from, state_.step));
  else if (!tr.init_from.empty()) say("starting from the weights of " + tr.init_from);
  if (!impl_->resume_note.empty()) say(impl_->resume_note);
  // With adapters: every parameter of the base (quantized weights too) and the adapters.
  const auto* a = impl_->adapters ? &*impl_->adapters : nullptr;
  const int64_t params = a ? a->base_parameters + a->adapter_parameters : models::parameter_count(*model_.module());
  say(fmt::format("training {} ({:.2f}M parameters) on {} for {} steps: batch {} x {} tokens x {} accumulation{}",
                  model_.kind_name(), static_cast<double>(params) / 1e6, device_.str(), tr.max_steps, tr.batch_size,
                  recipe_.data.seq_len, tr.grad_accum, impl_->optimizer->fused() ? ", fused AdamW" : ""));
  if (const auto* dp = impl_->dp.get())
    say(fmt::format("data-parallel over {} ranks ({}, {}): global batch {}, {} gradient buckets of up to {} MiB{}{}{}",
                    dp->world(), dp->comm().backend(), dp->comm().world().launcher,
                    tr.batch_size * tr.grad_accum * dp->world(), dp->sync().buckets(), recipe_.distributed.bucket_mb,
                    dp->sharded() ? fmt::format(", strategy {}", enum_name(recipe_.distributed.resolved_strategy()))
                                  : "",
                    recipe_.distributed.bf16_grads ? ", bf16 gradients" : "",
                    device_.is_cuda() ? "" : fmt::format(", {} threads per rank", at::get_num_threads())));
  if (impl_->adapters) say(impl_->adapters->describe());
  say("memory plan: " + impl_->plan.describe());
  if (const auto note = impl_->data->notes(); !note.empty()) say(note);
  if (!impl_->reference_note.empty()) say(impl_->reference_note);
  if (impl_->data->val_batches() > 0) return true;
  const auto& p = recipe_.pipeline;
  if (std::find(p.begin(), p.end(), recipe::Stage::Eval) != p.end() && recipe_.eval.split == recipe::Split::Val)
    throw Error("the validation split holds no batch, and the pipeline's eval stage evaluates on it: set "
                "data.val_files or a larger data.val_fraction, or remove eval from pipeline: (found before "
                "training, so nothing is lost)");
  say("no validation data: validation is skipped (set data.val_files or data.val_fraction)");
  return false;
}

void Trainer::log_step(Metrics& metrics, StepWindow& window, const StepResult& r, bool logged, double mfu_per_tps,
                       TrainReport& report) const {
  const auto& tr = recipe_.train;
  if (r.skipped) metrics.message(fmt::format("step {}: step skipped: {}", state_.step, r.why));
  const double tps = window.tokens_per_s();
  metrics.progress({state_.step, tr.max_steps, r.loss, r.lr, tps, tps * mfu_per_tps,
                    window.eta_s(state_.step, tr.max_steps)},
                   logged);
  auto& rewards = impl_->preference_window;  // dpo: the rewards of the steps since the last record
  if (r.preference.defined()) rewards = rewards.defined() ? rewards + r.preference : r.preference;
  if (!logged) return;
  report.train_loss = window.mean_loss(r.loss);
  std::map<std::string, double> values{{"loss", report.train_loss},
                                       {"lr", r.lr},
                                       {"grad_norm", r.grad_norm},
                                       {"tokens_per_s", tps},
                                       {"mfu", tps * mfu_per_tps},
                                       {"tokens", static_cast<double>(state_.tokens)},
                                       {"skipped_steps", static_cast<double>(state_.skipped_steps)},
                                       {"peak_rss_gb", peak_rss_bytes() / 1e9}};
  if (rewards.defined()) values.merge(preference_metrics(rewards));
  rewards = at::Tensor();
  metrics.record({state_.step, "train", std::move(values)});
  if (const auto* dp = impl_->dp.get()) {
    const auto& o = dp->sync().last_overlap();
    metrics.record({state_.step, "comm",
                    {{"buckets", static_cast<double>(o.buckets)},
                     {"launched_in_backward", static_cast<double>(o.launched_before_backward_end)},
                     {"started_in_backward", static_cast<double>(o.started_before_backward_end)},
                     {"seconds", o.comm_s},
                     {"hidden_fraction", o.hidden_fraction()},
                     {"grad_bytes", o.grad_bytes},
                     {"gathered_units", static_cast<double>(o.max_gathered_units)}}});
  }
  window.reset();
}

TrainReport Trainer::run() {
  const auto& tr = recipe_.train;
  const bool lead = impl_->lead();
  load_data();
  // Rank 0 alone writes metrics.jsonl, TensorBoard and the console.
  Metrics metrics({lead ? fs::path(recipe_.run.out_dir) : fs::path(), lead, options_.console,
                   options_.console_is_tty, state_.run_id, impl_->resumed_from.empty() ? -1 : state_.step});
  TrainReport report;
  report.start_step = state_.step;
  // From the first line on: a signal during the setup below stops the run after its first step
  // (with a checkpoint) rather than ending the process.
  SignalScope signals(options_.handle_signals);
  const bool can_eval = announce(metrics);
  const double peak = measure_peak_flops(device_, tr.precision) * impl_->world();  // every rank's device
  const double mfu_per_tps = flops_per_token(model_, recipe_.data.seq_len) / peak;
  const auto accum = static_cast<uint64_t>(tr.grad_accum);
  // On CUDA the workers also pin each batch, so the step's copy to the GPU is asynchronous.
  auto batch = [&, pinned = device_.is_cuda()](uint64_t i) {
    auto b = impl_->data->train_batch(i);
    return pinned ? pin(b) : b;
  };
  data::PrefetchLoader<Batch> loader(batch, static_cast<int>(recipe_.data.num_workers),
                                     static_cast<int>(recipe_.data.prefetch), static_cast<uint64_t>(state_.step) * accum);

  Checkpointer checkpointer({recipe::checkpoint_dir(recipe_), device_, /*writes=*/lead, adapter_files(recipe_)}, tr);
  Validator validator(tr.eval_every, can_eval);
  auto save = [&] {  // sharded: the optimizer state (fsdp: the blocks too) streamed from every rank
    const auto& opt = *impl_->optimizer;
    const auto* dp = impl_->dp.get();  // rank 0 failing to write ends every rank with its message
    dist::together(dp ? &dp->comm() : nullptr, fmt::format("the checkpoint of step {}", state_.step), [&] {
      report.checkpoint = checkpointer.save(model_, dp ? dp->model_values(*model_.module()) : ValueSource{},
                                            dp ? dp->checkpoint_state(opt, recipe_.optim) : TensorStream::of(opt.state()),
                                            options_.sparsity.get(), state_, validator.done_at(state_.step));
    });
  };
  auto validate = [&] {
    auto [m, best] = validator.run(state_.step, state_, metrics, [&] { return evaluate(tr.eval_batches); });
    report.val = std::move(m);
    return best;
  };
  TaskSchedule tasks(recipe_, lead);
  StepWindow window(state_.step);
  const double elapsed_before = state_.elapsed_s;
  while (state_.step < tr.max_steps) {
    std::vector<Batch> micro;
    for (uint64_t k = 0; k < accum; ++k) micro.push_back(loader.next());
    // Data-parallel ranks stop together: a signal is this rank's wish, agreed in the step.
    const auto r = step(micro, /*stop=*/signals.signal() != 0);
    if (impl_->graph)
      for (const auto& news : impl_->graph->news(state_.step)) metrics.message(news);
    const int own = signals.signal();
    const int stop_signal = impl_->distributed() ? (r.stop ? (own ? own : SIGTERM) : 0) : own;
    report.logits_dtype = r.logits_dtype;
    window.add(r.loss, r.skipped, r.tokens);
    state_.elapsed_s = elapsed_before + window.run_seconds();

    const bool last = state_.step == tr.max_steps;
    // The step a signal stops at is logged too: the report's loss is that of the steps since
    // the last log, not of an earlier window (or none).
    log_step(metrics, window, r, state_.step % tr.log_every == 0 || last || stop_signal != 0, mfu_per_tps, report);
    const bool new_best = validator.due(state_.step, last) && validate();
    if (tasks.due(state_.step, last)) tasks.run(state_.step, model_, metrics);
    if (checkpointer.due(state_.step, last, new_best)) save();
    if (const int sig = stop_signal) {
      if (!checkpointer.done_at(state_.step)) save();
      metrics.message(fmt::format("received {}: saved {} at step {}; resume with train.resume: auto",
                      sig == SIGTERM ? "SIGTERM" : "SIGINT", report.checkpoint.string(), state_.step));
      report.interrupted = true;
      break;
    }
  }
  if (!report.interrupted && !checkpointer.done_at(state_.step)) {
    if (validator.due(state_.step, /*last=*/true) && !validator.done_at(state_.step)) validate();
    if (tasks.due(state_.step, /*last=*/true)) tasks.run(state_.step, model_, metrics);
    save();
  }
  finish_report(report, window, validator.seconds() + checkpointer.seconds() + tasks.seconds());  // training alone
  if (options_.whole_model) impl_->gather_model(*model_.module());
  return report;
}

void Trainer::finish_report(TrainReport& report, const StepWindow& window, double other_s) const {
  report.steps = state_.step;
  report.world_size = impl_->world();
  if (impl_->dp) report.overlap = impl_->dp->sync().last_overlap();
  report.skipped_steps = state_.skipped_steps;
  report.overflow_steps = state_.overflow_steps;
  report.loss_scale = state_.loss_scale;
  report.seconds = window.run_seconds();
  const double training_s = report.seconds - other_s;
  report.tokens_per_s = training_s > 0 ? static_cast<double>(window.run_tokens()) / training_s : 0;
}

}  // namespace lathe::train
