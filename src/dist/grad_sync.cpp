// Bucketed, overlapped gradient reduction and the ZeRO-1 shards.

#include "lathe/dist/grad_sync.hpp"

#include <algorithm>
#include <deque>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "lathe/core/error.hpp"

namespace lathe::dist {

using Clock = std::chrono::steady_clock;

struct GradSync::Bucket {
  int index = 0;
  std::vector<std::size_t> params;  // indices into params_
  std::vector<int64_t> offsets;     // each parameter's first element in the flat buffer
  int64_t numel = 0;                // elements of the parameters
  int64_t padded = 0;               // numel rounded up to a multiple of the world (sharded)
  at::Tensor flat;                  // (padded) gradients in the communication dtype
  at::Tensor shard;                 // sharded: (padded / world) this rank's reduced part, comm dtype
  at::Tensor shard_grad;            // sharded: the same in the parameters' dtype (segments' grads)
  int pending = 0;                  // gradients still to come in this backward
  bool launched = false;
  bool completed = false;           // its transfer waited for and its result in place
  bool from_hook = false;
  WorkPtr work;
  // fsdp units.
  int unit = -1;
  at::Tensor master;  // (padded / world) float32: this rank's part of the parameters
  at::Tensor whole;   // (padded) in the gather dtype: the parameters' storage, empty while resharded
  at::Tensor send;    // the master in the gather dtype while its all-gather runs (not float32)
  WorkPtr gather;     // the all-gather into `whole` under way
  bool gathered = false;
};

/// The memory of the buffers that come and go every step (fsdp's gathered units, the flat
/// gradients of zero2's buckets and of the units), kept for the next step: a few blocks of the
/// sizes in use, reused instead of going back to the heap, which large blocks freed and taken
/// again every step fragment (the process then keeps far more resident than it uses).
struct GradSync::Pool {
  static constexpr std::size_t kKeep = 8;
  std::vector<std::pair<std::size_t, at::DataPtr>> blocks;

  at::DataPtr take(std::size_t bytes, at::Allocator* allocator) {
    for (auto it = blocks.begin(); it != blocks.end(); ++it)
      if (it->first == bytes) {
        auto p = std::move(it->second);
        blocks.erase(it);
        return p;
      }
    return allocator->allocate(bytes);
  }
  void give(std::size_t bytes, at::DataPtr p) {
    if (p && blocks.size() < kKeep) blocks.emplace_back(bytes, std::move(p));
  }

  /// Frees (into the pool, unless `keep` is false: to the allocator) or (re)allocates the memory
  /// under `t` (the storage its views share) without touching the views: the parameters set onto
  /// it keep their shapes and autograd identity.
  void release_storage(const at::Tensor& t, bool keep = true) {
    auto* s = t.storage().unsafeGetStorageImpl();
    const auto bytes = s->nbytes();
    auto freed = s->set_data_ptr(at::DataPtr(nullptr, t.device()));
    if (keep) give(bytes, std::move(freed));
    s->set_nbytes(0);
  }
  void allocate_storage(const at::Tensor& t) {
    auto* s = t.storage().unsafeGetStorageImpl();
    const auto bytes = static_cast<std::size_t>(t.numel()) * t.element_size();
    if (s->nbytes() == bytes) return;
    s->set_data_ptr_noswap(take(bytes, s->allocator()));
    s->set_nbytes(bytes);
  }
  /// A new 1-d tensor of `n` elements on the pool's memory.
  at::Tensor empty(int64_t n, const at::TensorOptions& options) {
    auto t = at::empty({0}, options);
    auto* s = t.storage().unsafeGetStorageImpl();
    const auto bytes = static_cast<std::size_t>(n) * t.element_size();
    s->set_data_ptr_noswap(take(bytes, s->allocator()));
    s->set_nbytes(bytes);
    t.unsafeGetTensorImpl()->set_sizes_contiguous({n});
    return t;
  }
  /// Gives `t`'s memory back (when nothing else holds it) and resets `t`.
  void recycle(at::Tensor& t) {
    if (t.defined() && t.storage().use_count() == 1) release_storage(t);
    t.reset();
  }
};

GradSync::GradSync(std::vector<Param> params, std::shared_ptr<Communicator> comm, const DistOptions& options)
    : comm_(std::move(comm)), options_(options), sharded_(options.sharded()),
      free_grads_(options.resolved_strategy() >= Strategy::Zero2),
      gather_dtype_(options.param_dtype == ParamDtype::Bf16   ? at::kBFloat16
                    : options.param_dtype == ParamDtype::Fp16 ? at::kHalf
                                                              : at::kFloat),
      params_(std::move(params)) {
  pool_ = std::make_unique<Pool>();
  if (params_.empty()) throw std::invalid_argument("GradSync: no parameters");
  const int64_t world = comm_->size();
  const auto device = comm_->device();
  const auto limit = static_cast<int64_t>(options_.bucket_mb * 1024 * 1024);
  bucket_of_.resize(params_.size());
  // Reverse registration order: the output end of the model produces its gradients first. A
  // unit's parameters (consecutive in registration order) make one bucket of their own.
  const bool fsdp = options_.resolved_strategy() == Strategy::Fsdp;
  std::unique_ptr<Bucket> cur;
  auto close = [&] {
    if (!cur) return;
    cur->index = static_cast<int>(buckets_.size());
    cur->padded = (cur->numel + world - 1) / world * world;
    buckets_.push_back(std::move(cur));
  };
  for (std::size_t k = params_.size(); k-- > 0;) {
    const auto& t = params_[k].tensor;
    deferred_ = deferred_ || t.is_meta();
    if (!t.is_contiguous() || t.scalar_type() != at::kFloat || (t.device() != device && !t.is_meta()))
      throw std::invalid_argument(fmt::format("GradSync: {} must be a contiguous float32 tensor on {} (or meta)",
                                              params_[k].name, device.str()));
    const int unit = fsdp ? params_[k].unit : -1;
    if (cur && (cur->unit != unit || (unit < 0 && cur->numel > 0 && (cur->numel + t.numel()) * 4 > limit))) close();
    if (!cur) {
      cur = std::make_unique<Bucket>();
      cur->unit = unit;
      if (unit >= 0) {
        const auto u = static_cast<std::size_t>(unit);
        if (unit_bucket_.size() <= u) unit_bucket_.resize(u + 1, SIZE_MAX);
        if (unit_bucket_[u] != SIZE_MAX)
          throw std::invalid_argument(fmt::format("GradSync: the parameters of unit {} are not consecutive ({})", unit,
                                                  params_[k].name));
        unit_bucket_[u] = buckets_.size();
      }
    }
    bucket_of_[k] = buckets_.size();
    cur->params.push_back(k);
    cur->offsets.push_back(cur->numel);
    cur->numel += t.numel();
  }
  close();
  for (std::size_t u = 0; u < unit_bucket_.size(); ++u)
    if (unit_bucket_[u] == SIZE_MAX) throw std::invalid_argument(fmt::format("GradSync: unit {} has no parameters", u));
  if (deferred_) return;  // load_parameters() places them
  make_buffers();
  // fsdp's units take new storage (and dtype) in shard_parameters(), which attaches the hooks: a
  // parameter whose data changes device or dtype gets a new gradient accumulator.
  if (unit_bucket_.empty()) attach_hooks();
}

void GradSync::attach_hooks() {
  for (std::size_t k = 0; k < params_.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[k].tensor);
    if (!acc) throw std::invalid_argument("GradSync: " + params_[k].name + " is not a leaf that requires grad");
    auto key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_grad_ready(k);
          return outputs;
        }));
    hooks_.emplace_back(std::move(acc), key);
  }
}

void GradSync::make_buffers() {
  const int64_t world = comm_->size();
  const auto device = comm_->device();
  const auto comm_dtype = options_.bf16_grads ? at::kBFloat16 : at::kFloat;
  const auto r = static_cast<int64_t>(comm_->rank());
  for (auto& b : buckets_) {
    // zero2 holds a bucket's flat gradients only from its launch to the end of its transfer.
    if (!free_grads_) b->flat = at::zeros({b->padded}, at::TensorOptions(device).dtype(comm_dtype));
    if (!sharded_) continue;
    const int64_t s = b->padded / world, lo = r * s, hi = lo + s;
    // A unit's reduced part exists only from its launch to its completion.
    if (b->unit < 0) b->shard = at::zeros({s}, at::TensorOptions(device).dtype(comm_dtype));
    // A unit's shard gradient sums the micro-steps' reductions: a tensor of its own.
    b->shard_grad = options_.bf16_grads || b->unit >= 0 ? at::zeros({s}, at::TensorOptions(device).dtype(at::kFloat))
                                                         : b->shard;
    if (b->unit >= 0) b->master = at::zeros({s}, at::TensorOptions(device).dtype(at::kFloat));
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      const auto& p = params_[b->params[j]];
      const int64_t from = std::max(lo, b->offsets[j]), to = std::min(hi, b->offsets[j] + p.tensor.numel());
      if (from >= to) continue;
      Segment seg;
      seg.param = p.name;
      seg.offset = from - b->offsets[j];
      seg.length = to - from;
      seg.key = fmt::format("{}@{}", p.name, seg.offset);
      seg.value = b->unit >= 0 ? b->master.narrow(0, from - lo, seg.length)
                               : p.tensor.detach().view({-1}).narrow(0, seg.offset, seg.length);
      seg.grad = b->shard_grad.narrow(0, from - lo, seg.length);
      segments_.push_back(std::move(seg));
    }
  }
}

GradSync::~GradSync() {
  for (auto& [node, key] : hooks_) node->del_post_hook(key);
}

void GradSync::broadcast_parameters() {
  torch::NoGradGuard no_grad;
  // One bucket at a time: a rank holds one bucket's copy beside the model, not a second model.
  for (auto& b : buckets_) {
    auto flat = at::empty({b->numel}, at::TensorOptions(comm_->device()).dtype(at::kFloat));
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      const auto& t = params_[b->params[j]].tensor;
      flat.narrow(0, b->offsets[j], t.numel()).copy_(t.detach().view({-1}));
    }
    comm_->broadcast(flat, 0, fmt::format("the parameter broadcast (bucket {})", b->index))->wait();
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      auto t = params_[b->params[j]].tensor.detach();
      t.view({-1}).copy_(flat.narrow(0, b->offsets[j], t.numel()));
    }
  }
}

void GradSync::shard_parameters() {
  torch::NoGradGuard no_grad;
  const int64_t r = comm_->rank();
  for (std::size_t u = 0; u < unit_bucket_.size(); ++u) {
    auto& b = *buckets_[unit_bucket_[u]];
    const int64_t s = b.padded / comm_->size();
    auto flat = at::zeros({b.padded}, b.master.options());
    for (std::size_t j = 0; j < b.params.size(); ++j)
      flat.narrow(0, b.offsets[j], params_[b.params[j]].tensor.numel()).copy_(params_[b.params[j]].tensor.detach().view({-1}));
    b.master.copy_(flat.narrow(0, r * s, s));
    flat.reset();
    // The parameters (the same leaves: their autograd identity stays) now live in the unit's
    // buffer, in the gather dtype.
    b.whole = at::empty({b.padded}, b.master.options().dtype(gather_dtype_));
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto& t = params_[b.params[j]].tensor;
      t.set_data(b.whole.narrow(0, b.offsets[j], t.numel()).view(t.sizes()));
    }
    // Made only to shape the views: back to the allocator (the pool keeps what a step reuses).
    pool_->release_storage(b.whole, /*keep=*/false);
    b.gathered = false;
  }
  attach_hooks();
}

namespace {

/// `param` (a leaf, its autograd identity kept) takes `data`'s storage, shape and device. A
/// parameter on the meta device takes it as to_empty() would: set_data() refuses the change of
/// tensor type, and the LibTorch modules hold their parameters as members that a replaced
/// tensor would leave behind.
void place(at::Tensor& param, const at::Tensor& data) {
  if (!param.is_meta()) return param.set_data(data);
  param.unsafeGetTensorImpl()->shallow_copy_from(data.getIntrusivePtr());
}

}  // namespace

void GradSync::load_parameters(const ValueSource& values) {
  if (!deferred_) throw std::logic_error("GradSync::load_parameters: the parameters are in place already");
  torch::NoGradGuard no_grad;
  const auto device = comm_->device();
  const auto options = at::TensorOptions(device).dtype(at::kFloat);
  // The parameters' memory: a unit's whole buffer (released at once: its parameters are views of
  // it, readable while gathered), every other parameter whole on the device.
  for (const auto& b : buckets_) {
    if (b->unit >= 0) b->whole = at::empty({b->padded}, options.dtype(gather_dtype_));
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      auto& t = params_[b->params[j]].tensor;
      place(t, b->unit >= 0 ? b->whole.narrow(0, b->offsets[j], t.numel()).view(t.sizes())
                            : at::empty(t.sizes(), options));
    }
    if (b->unit >= 0) pool_->release_storage(b->whole, /*keep=*/false);  // made only to shape the views
  }
  make_buffers();
  std::map<std::string, std::size_t> index;
  for (std::size_t k = 0; k < params_.size(); ++k) index[params_[k].name] = k;
  std::vector<bool> given(params_.size(), false);
  const int64_t r = comm_->rank();
  values([&](const std::string& name, const at::Tensor& value) {
    const auto it = index.find(name);
    if (it == index.end()) return;  // not trained here
    const auto k = it->second;
    auto& t = params_[k].tensor;
    if (given[k] || value.sizes() != t.sizes())
      throw std::logic_error(fmt::format("GradSync::load_parameters: {} given twice or of another shape", name));
    given[k] = true;
    const auto& b = *buckets_[bucket_of_[k]];
    if (b.unit < 0) {
      t.detach().copy_(value);
      return;
    }
    // This rank's part of the unit: [r*s, (r+1)*s) of its flat buffer, of which this parameter
    // holds [offset, offset + numel).
    const int64_t s = b.padded / comm_->size(), off = b.offsets[std::find(b.params.begin(), b.params.end(), k) -
                                                                 b.params.begin()];
    const int64_t from = std::max(r * s, off), to = std::min((r + 1) * s, off + t.numel());
    if (from >= to) return;
    // Only the rows that hold this part are read (a value stored transposed is copied as far as
    // those rows, not whole).
    const int64_t row = value.numel() / value.size(0), r0 = (from - off) / row, r1 = (to - off - 1) / row + 1;
    const auto rows = value.narrow(0, r0, r1 - r0).reshape({-1});
    b.master.narrow(0, from - r * s, to - from).copy_(rows.narrow(0, from - off - r0 * row, to - from));
  });
  for (std::size_t k = 0; k < params_.size(); ++k)
    if (!given[k]) throw std::logic_error("GradSync::load_parameters: no value for " + params_[k].name);
  deferred_ = false;
  attach_hooks();
}

void GradSync::unshard(int unit) {
  auto& b = *buckets_.at(unit_bucket_.at(unit));
  if (b.gathered || b.gather) return;
  torch::NoGradGuard no_grad;
  pool_->allocate_storage(b.whole);
  gathered_max_ = std::max(gathered_max_, gathered_units());
  if (gather_dtype_ != at::kFloat) b.send = b.master.to(gather_dtype_);
  b.gather = comm_->all_gather(b.whole, gather_dtype_ == at::kFloat ? b.master : b.send,
                               fmt::format("the parameter all-gather of unit {}", unit));
}

std::vector<std::pair<std::string, at::Tensor>> GradSync::gathered_values(int unit) {
  const auto& b = *buckets_.at(unit_bucket_.at(unit));
  torch::NoGradGuard no_grad;
  auto all = at::empty({b.padded}, b.master.options());
  comm_->all_gather(all, b.master, fmt::format("the float32 all-gather of unit {}", unit))->wait();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t j = 0; j < b.params.size(); ++j) {
    const auto& p = params_[b.params[j]];
    out.emplace_back(p.name, all.narrow(0, b.offsets[j], p.tensor.numel()).view(p.tensor.sizes()));
  }
  return out;
}

int GradSync::gathered_units() const {
  int n = 0;
  for (const auto u : unit_bucket_) n += buckets_[u]->whole.storage().nbytes() > 0 ? 1 : 0;
  return n;
}

void GradSync::wait_unshard(int unit) {
  unshard(unit);
  auto& b = *buckets_[unit_bucket_[unit]];
  if (b.gather) {
    b.gather->wait();
    b.gather.reset();
    b.send.reset();
  }
  b.gathered = true;
}

void GradSync::reshard(int unit) {
  auto& b = *buckets_.at(unit_bucket_.at(unit));
  if (b.gather) {
    b.gather->wait();
    b.gather.reset();
    b.send.reset();
  }
  pool_->release_storage(b.whole);
  b.gathered = false;
}

void GradSync::zero_grad() {
  for (auto& p : params_) p.tensor.mutable_grad().reset();
  for (const auto u : unit_bucket_) buckets_[u]->shard_grad.zero_();
}

void GradSync::begin_backward(bool sync) {
  std::lock_guard lock(mu_);
  if (!unit_bucket_.empty()) {
    // fsdp: the units are reduced on every micro-step; the last one's transfers end here (and
    // the reductions waiting for a parameter that took no part are launched).
    if (units_active_) launch_ready(/*from_hook=*/false);
    for (const auto u : unit_bucket_)
      if (auto& b = *buckets_[u]; b.launched && !b.completed) complete(b);
    sync_ = false;
  }
  if (!unit_bucket_.empty() || (sync && !sync_)) {
    sync_ = true;
    next_launch_ = 0;
    backward_start_ = Clock::now();
    for (auto& b : buckets_) {
      b->pending = static_cast<int>(b->params.size());
      b->launched = false;
      b->completed = false;
      b->from_hook = false;
      b->work.reset();
    }
    sync_ = sync;
    units_active_ = !unit_bucket_.empty();
  }
}

void GradSync::on_grad_ready(std::size_t k) {
  std::lock_guard lock(mu_);
  // An accumulation micro-step: gradients only add up locally, except a unit's (fsdp).
  if (!sync_ && !units_active_) return;
  auto& b = *buckets_[bucket_of_[k]];
  if (--b.pending == 0) launch_ready(/*from_hook=*/true);
}

void GradSync::launch_ready(bool from_hook) {
  // Strictly in bucket order, so every rank issues the same collectives in the same order.
  while (next_launch_ < buckets_.size() && (buckets_[next_launch_]->pending <= 0 || !from_hook)) {
    auto& b = *buckets_[next_launch_++];
    if (sync_ || b.unit >= 0) {
      launch(b, from_hook);
    } else {  // fsdp's accumulation micro-step: this bucket's gradients stay whole until the last
      b.launched = b.completed = true;
    }
  }
}

void GradSync::launch(Bucket& b, bool from_hook) {
  torch::NoGradGuard no_grad;
  const auto comm_dtype = options_.bf16_grads ? at::kBFloat16 : at::kFloat;
  const auto options = at::TensorOptions(comm_->device()).dtype(comm_dtype);
  if (b.unit >= 0) b.shard = pool_->empty(b.padded / comm_->size(), options);
  if (free_grads_) b.flat = pool_->empty(b.padded, options);
  if (b.padded > b.numel) b.flat.narrow(0, b.numel, b.padded - b.numel).zero_();
  for (std::size_t j = 0; j < b.params.size(); ++j) {
    auto& t = params_[b.params[j]].tensor;
    auto dst = b.flat.narrow(0, b.offsets[j], t.numel());
    // A parameter that took no part in this backward contributes zeros.
    if (t.grad().defined()) dst.copy_(t.grad().view({-1}));
    else dst.zero_();
    // zero2: the whole gradient is in the bucket now; only this rank's reduced part is kept.
    if (free_grads_) t.mutable_grad().reset();
  }
  // fsdp: the unit's backward is done; its whole parameters go until its next forward.
  if (b.unit >= 0) reshard(b.unit);
  const double world = comm_->size();
  // bfloat16 sums are scaled first (no overflow); float32 ones are divided after, as one
  // process divides its sum over the whole batch.
  if (options_.bf16_grads) b.flat.div_(world);
  const auto what = fmt::format("the gradient {} of bucket {} of {}", sharded_ ? "reduce-scatter" : "all-reduce",
                                b.index + 1, buckets_.size());
  b.work = sharded_ ? comm_->reduce_scatter(b.shard, b.flat, what) : comm_->all_reduce(b.flat, ReduceOp::Sum, what);
  b.launched = true;
  b.from_hook = from_hook;
  // zero2 keeps at most kInFlight buckets' flat gradients: the oldest is completed (and freed)
  // before backward goes on.
  constexpr std::size_t kInFlight = 2;
  if (free_grads_ && b.index >= static_cast<int>(kInFlight)) {
    auto& oldest = *buckets_[b.index - kInFlight];
    if (!oldest.completed) complete(oldest);
  }
}

void GradSync::complete(Bucket& b) {
  torch::NoGradGuard no_grad;
  b.completed = true;
  if (!b.work) return;
  b.work->wait();
  const double inv_world = 1.0 / comm_->size();
  if (b.unit >= 0) {  // summed over the micro-steps; averaged in finish()
    b.shard_grad.add_(b.shard);
    pool_->recycle(b.flat);
    pool_->recycle(b.shard);
    return;
  }
  if (sharded_) {
    if (options_.bf16_grads) b.shard_grad.copy_(b.shard);
    else b.shard_grad.mul_(inv_world);
    if (free_grads_) pool_->recycle(b.flat);
    return;
  }
  for (std::size_t j = 0; j < b.params.size(); ++j) {
    auto& t = params_[b.params[j]].tensor;
    auto src = b.flat.narrow(0, b.offsets[j], t.numel()).view(t.sizes());
    auto& g = t.mutable_grad();
    if (!g.defined()) g = at::empty_like(t);
    if (options_.bf16_grads) g.copy_(src);
    else at::mul_out(g, src, inv_world);
  }
}

void GradSync::finish() {
  const auto backward_end = Clock::now();  // the caller's backward() has returned
  {
    std::lock_guard lock(mu_);
    if (!sync_) throw std::logic_error("GradSync::finish without begin_backward(/*sync=*/true)");
    launch_ready(/*from_hook=*/false);  // buckets whose parameters got no gradient
    sync_ = false;
    units_active_ = false;
  }
  overlap_ = {};
  overlap_.buckets = static_cast<int>(buckets_.size());
  overlap_.max_gathered_units = gathered_max_;  // since the last step's finish
  gathered_max_ = gathered_units();
  for (auto& bp : buckets_) {
    auto& b = *bp;
    if (!b.completed) complete(b);
    const auto& w = *b.work;
    overlap_.launched_before_backward_end += b.from_hook ? 1 : 0;
    if (w.started < backward_end) {
      ++overlap_.started_before_backward_end;
      overlap_.hidden_s += std::chrono::duration<double>(std::min(w.finished, backward_end) - w.started).count();
    }
    overlap_.comm_s += std::chrono::duration<double>(w.finished - w.started).count();
    // A unit's float32 sum over the micro-steps becomes the mean over ranks (bfloat16 ones were
    // divided before their transfer).
    if (b.unit >= 0 && !options_.bf16_grads) b.shard_grad.mul_(1.0 / comm_->size());
  }
  // The optimizer reads each segment's gradient from its value's .grad.
  for (auto& seg : segments_) seg.value.mutable_grad() = seg.grad;
  for (const auto& p : params_)
    if (p.tensor.grad().defined()) overlap_.grad_bytes += static_cast<double>(p.tensor.grad().nbytes());
  for (const auto& b : buckets_) {
    if (!sharded_) continue;
    overlap_.grad_bytes += static_cast<double>(b->shard_grad.nbytes());
    if (options_.bf16_grads && b->unit < 0) overlap_.grad_bytes += static_cast<double>(b->shard.nbytes());
  }
}

void GradSync::gather_parameters() {
  if (!sharded_) throw std::logic_error("GradSync::gather_parameters needs the sharded optimizer");
  torch::NoGradGuard no_grad;
  const int64_t world = comm_->size(), r = comm_->rank();
  struct Gather {
    Bucket* bucket;
    at::Tensor all;
    WorkPtr work;
  };
  // At most two buckets' gathers in flight: their buffers are a bucket each, not a second model.
  std::deque<Gather> flats;
  auto land = [&] {
    auto& [b, all, work] = flats.front();
    work->wait();
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      auto t = params_[b->params[j]].tensor.detach();
      t.view({-1}).copy_(all.narrow(0, b->offsets[j], t.numel()));
    }
    pool_->recycle(all);
    flats.pop_front();
  };
  // A unit still gathered (prefetched by a re-run forward, or kept) holds the values before the
  // update: it is freed, and gathered from its updated master when next used.
  for (int u = 0; u < units(); ++u) reshard(u);
  for (auto& b : buckets_) {
    if (b->unit >= 0) continue;  // updated in its master, gathered when next used
    const int64_t s = b->padded / world;
    auto mine = at::zeros({s}, at::TensorOptions(comm_->device()).dtype(at::kFloat));
    for (std::size_t j = 0; j < b->params.size(); ++j) {
      const auto& t = params_[b->params[j]].tensor;
      const int64_t from = std::max(r * s, b->offsets[j]), to = std::min((r + 1) * s, b->offsets[j] + t.numel());
      if (from < to) mine.narrow(0, from - r * s, to - from).copy_(t.detach().view({-1}).narrow(0, from - b->offsets[j], to - from));
    }
    auto all = pool_->empty(b->padded, mine.options());
    auto work = comm_->all_gather(all, mine, fmt::format("the parameter all-gather of bucket {}", b->index + 1));
    flats.push_back({b.get(), all, work});
    if (flats.size() > 2) land();
  }
  while (!flats.empty()) land();
}

std::vector<std::string> GradSync::bucket_order() const {
  std::vector<std::string> out;
  for (const auto& b : buckets_)
    for (const auto k : b->params) out.push_back(params_[k].name);
  return out;
}

void GradSync::gather_segments(const std::map<std::string, at::Tensor>& parts, const ValueSink& sink) {
  if (!sharded_) throw std::logic_error("GradSync::gather_segments needs the sharded optimizer");
  torch::NoGradGuard no_grad;
  const int64_t world = comm_->size(), r = comm_->rank();
  for (auto& b : buckets_) {
    const int64_t s = b->padded / world;
    auto mine = at::zeros({s}, at::TensorOptions(comm_->device()).dtype(at::kFloat));
    for (const auto& seg : segments_) {
      auto it = parts.find(seg.key);
      if (it == parts.end()) continue;
      // Where the segment lies in this bucket's shard (segments of other buckets are skipped).
      for (std::size_t j = 0; j < b->params.size(); ++j)
        if (params_[b->params[j]].name == seg.param) {
          mine.narrow(0, b->offsets[j] + seg.offset - r * s, seg.length).copy_(it->second.reshape({-1}));
        }
    }
    auto all = pool_->empty(b->padded, mine.options());
    comm_->all_gather(all, mine, fmt::format("the optimizer-state all-gather of bucket {}", b->index + 1))->wait();
    for (std::size_t j = 0; j < b->params.size() && sink; ++j) {
      const auto& p = params_[b->params[j]];
      sink(p.name, all.narrow(0, b->offsets[j], p.tensor.numel()).view(p.tensor.sizes()));
    }
    pool_->recycle(all);
  }
}

}  // namespace lathe::dist
