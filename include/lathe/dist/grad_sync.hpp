// Data-parallel gradient synchronisation: DDP, and the sharded strategies ZeRO-1, ZeRO-2 and
// FSDP (ZeRO-3).
//
// The parameters are packed, in reverse registration order (roughly the order backward
// produces their gradients), into flat buckets of about bucket_mb. An autograd post-hook on
// each parameter's gradient accumulator counts the gradients of its bucket; when the last one
// is ready, the bucket's reduction is launched asynchronously while backward goes on with the
// earlier layers — buckets are launched strictly in bucket order, so every rank issues the same
// collectives in the same order. finish() launches what is left, waits, and averages.
//
// Plain DDP: each bucket is all-reduced and every gradient becomes the mean over ranks.
// Sharded (ZeRO-1, as Megatron's distributed optimizer): each bucket is padded to a multiple
// of the world size and reduce-scattered, so rank r holds the mean gradient of the r-th part of
// every bucket; the optimizer updates only those segments (segments()), then
// gather_parameters() all-gathers the updated parameters.
//
// zero2 (as DeepSpeed's stage 2) is ZeRO-1 whose buckets exist only from their launch to the
// end of their transfer, and whose parameters' whole gradients are dropped as soon as their
// bucket has copied them: after backward a rank holds only its reduced 1/world part. At most two
// buckets are in flight; launching a third first completes the oldest.
//
// fsdp (ZeRO-3, as FSDP's full sharding): the parameters of each unit (a transformer block, given
// by Param::unit) form one bucket whose whole values live in one flat buffer that exists only
// while the unit is gathered: shard_parameters() keeps this rank's 1/world of it (the float32
// master the optimizer updates) and frees the rest; unshard() all-gathers it before the unit
// runs, reshard() frees it. A unit's gradients are reduce-scattered on every micro-batch as soon
// as its backward is done (summed into the shard over the accumulation micro-steps), and its
// buffer is freed then. The other parameters (embeddings, final norm, head) are buckets as
// under zero2. Collectives are issued in one order on every rank: gathers in the forward's and
// the backward's unit order, reductions in bucket order.
//
// Gradient accumulation: begin_backward(/*sync=*/false) for the micro-batches before the last,
// which then only accumulate locally; no communication happens on them (under zero2 the whole
// gradients are kept through the accumulation micro-steps and dropped in the last one).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/dist/communicator.hpp"
#include "lathe/core/tensor_values.hpp"

namespace torch::autograd {
struct Node;
}

namespace lathe::dist {

/// A contiguous part of one parameter that this rank owns under the sharded optimizer.
struct Segment {
  std::string param;    // the parameter's name
  std::string key;      // "<param>@<offset>": names this part (optimizer state of the part)
  int64_t offset = 0;   // first element, in the flattened parameter
  int64_t length = 0;   // elements
  at::Tensor value;     // view of the parameter's elements [offset, offset + length)
  at::Tensor grad;      // view of the mean gradient of those elements (valid after finish())
};

/// How much of the last synchronised step's communication ran while backward was still going.
struct OverlapStats {
  int buckets = 0;
  int launched_before_backward_end = 0;  // bucket reductions launched from the autograd hooks
  int started_before_backward_end = 0;   // ... whose transfer had begun before backward finished
  double comm_s = 0;     // time the transfers took, summed over buckets
  double hidden_s = 0;   // the part of it before backward finished
  double grad_bytes = 0; // gradient bytes this rank holds after finish(): whole and reduced parts
  int max_gathered_units = 0;  // fsdp: the most units whole at once during the step
  double hidden_fraction() const { return comm_s > 0 ? hidden_s / comm_s : 0; }
};

class GradSync {
 public:
  struct Param {
    std::string name;
    at::Tensor tensor;  // a contiguous leaf that requires grad
    int unit = -1;      // fsdp: the unit (block) whose bucket holds it; -1: none
  };
  GradSync(std::vector<Param> params, std::shared_ptr<Communicator> comm, const DistOptions& options);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  /// Every rank's parameters become rank 0's.
  void broadcast_parameters();
  /// For parameters given on the meta device (nothing allocated): places them and takes their
  /// values from `values` (the same on every rank: e.g. a deferred model's initialisation or its
  /// mapped file). fsdp units keep only this rank's part of each value, in their masters, and
  /// are resharded (never whole); the other parameters are allocated whole. Instead of
  /// broadcast_parameters() and shard_parameters().
  void load_parameters(const ValueSource& values);
  /// fsdp: each unit keeps its 1/world master shard and frees its whole parameters (call after
  /// broadcast_parameters()). The units' parameters are then readable only while gathered, in
  /// DistOptions::param_dtype.
  void shard_parameters();
  /// fsdp: launches the all-gather of `unit`'s parameters (nothing if gathered or under way).
  void unshard(int unit);
  /// fsdp: the unit's parameters are whole when this returns.
  void wait_unshard(int unit);
  /// fsdp: frees the unit's whole parameters.
  void reshard(int unit);
  /// fsdp: the unit's parameters' float32 values gathered from every rank's master (whatever
  /// dtype the unit is gathered in for computing), by name: views of one buffer of their own. A
  /// collective.
  std::vector<std::pair<std::string, at::Tensor>> gathered_values(int unit);
  /// fsdp: how many units are whole (gathered or being gathered) now.
  int gathered_units() const;
  /// fsdp: the number of units (0 otherwise).
  int units() const { return static_cast<int>(unit_bucket_.size()); }
  /// Before each micro-batch's backward: `sync` on the last one of a step.
  void begin_backward(bool sync);
  /// After the last micro-batch's backward: completes every bucket's reduction and leaves the
  /// mean gradients in the parameters' .grad (plain) or in the segments' grad views (sharded).
  void finish();
  /// Drops the parameters' gradients (the next backward creates them afresh).
  void zero_grad();

  bool sharded() const { return sharded_; }
  /// Sharded: the parts of the parameters this rank updates, in bucket order.
  const std::vector<Segment>& segments() const { return segments_; }
  /// Sharded: after the update of the segments, every rank's parameters become the updated ones
  /// (fsdp units: their masters are updated in place and gathered when next used).
  void gather_parameters();
  /// Sharded: per-segment tensors (keyed by Segment::key, `length` elements each, as many
  /// segments as the caller has values for: all or none of a bucket's) gathered from every
  /// rank, a bucket at a time, into whole tensors shaped like their parameters, handed to `sink`
  /// (when given) by parameter name in bucket_order(); a view valid during the call only. A
  /// collective: every rank calls it, with or without a sink.
  void gather_segments(const std::map<std::string, at::Tensor>& parts, const ValueSink& sink);
  /// The parameters' names in bucket order (gather_segments' order).
  std::vector<std::string> bucket_order() const;

  const OverlapStats& last_overlap() const { return overlap_; }
  int buckets() const { return static_cast<int>(buckets_.size()); }
  Communicator& communicator() { return *comm_; }

 private:
  struct Bucket;
  struct Pool;
  std::unique_ptr<Pool> pool_;
  /// The buckets' flat buffers, shards (sharded), masters (fsdp units) and this rank's segments.
  void make_buffers();
  /// The autograd hooks on the parameters' gradient accumulators (once they are in place).
  void attach_hooks();
  void on_grad_ready(std::size_t param);
  void launch(Bucket& b, bool from_hook);
  /// Waits for `b`'s transfer and puts its mean gradients in place.
  void complete(Bucket& b);
  void launch_ready(bool from_hook);

  std::shared_ptr<Communicator> comm_;
  DistOptions options_;
  bool sharded_;
  std::vector<std::size_t> unit_bucket_;  // fsdp: unit -> bucket
  bool free_grads_;  // zero2: a parameter's .grad is dropped once its bucket holds it
  at::ScalarType gather_dtype_;  // fsdp units: what their parameters are gathered in
  bool deferred_ = false;  // parameters on the meta device until load_parameters()
  std::vector<Param> params_;
  std::vector<std::size_t> bucket_of_;  // param index -> bucket
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<Segment> segments_;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;
  std::mutex mu_;
  bool sync_ = false;
  bool units_active_ = false;  // fsdp: a backward is under way (units reduce on every micro-step)
  int gathered_max_ = 0;       // fsdp: the most units whole at once since the last finish()
  std::size_t next_launch_ = 0;
  std::chrono::steady_clock::time_point backward_start_{};
  OverlapStats overlap_;
};

}  // namespace lathe::dist
