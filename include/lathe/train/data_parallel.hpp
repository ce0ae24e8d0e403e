// The data-parallel side of training: what each rank checks with the others before it trains
// (the same job, the same checkpoint to resume), the gradient reduction, the step's one
// agreement, and the sharded optimizer's state (ZeRO-1) in the whole-parameter form that a
// one-process checkpoint holds, so that a checkpoint resumes on any world size.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include "lathe/dist/communicator.hpp"
#include "lathe/dist/grad_sync.hpp"
#include "lathe/nn/block.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"
#include "lathe/train/checkpoint.hpp"
#include "lathe/train/optimizer.hpp"
#include "lathe/train/task.hpp"

namespace lathe::train {

/// The device this process trains on: `device`, or for a rank on CUDA the GPU of its local rank.
/// `comm` null (one process) in a launched job is refused: one-process commands are not the
/// data-parallel trainer.
at::Device rank_device(const at::Device& device, const dist::Communicator* comm);

/// run.threads when set; CPU ranks of one node otherwise share its cores, none oversubscribing.
void share_threads(int64_t threads, const dist::Communicator* comm, const at::Device& device);

/// Every rank runs the same job: the same resolved recipe, tokenizer and shard index. Each
/// rank's fingerprints are gathered; any difference is an error on every rank, naming the ranks.
void check_same_job(dist::Communicator& comm, const recipe::Recipe& recipe, const tokenizer::Tokenizer* tok);

/// Rank 0 chose the checkpoint to resume (`resume`, or none); the other ranks load the same one
/// from the shared checkpoint directory `root` (or train.resume's path, `how`) and check that it
/// is the same step.
std::optional<CheckpointData> agree_on_resume(dist::Communicator& comm, const std::filesystem::path& root,
                                              const std::string& how, std::optional<CheckpointData> resume);

/// The values of one step that the ranks agree on, on the device.
struct StepAgreement {
  at::Tensor loss;       // the mean loss over ranks
  at::Tensor found_inf;  // > 0: some rank's fp16 gradients overflowed
  at::Tensor stop;       // > 0: some rank asked to stop
  at::Tensor grad_norm;  // the global gradient norm, before clipping
};

/// One process's values of the step, as DataParallel::agree gives them for ranks; the
/// gradients clipped to `grad_clip`.
StepAgreement local_agreement(const at::Tensor& loss, const at::Tensor& found_inf, Optimizer& opt, double grad_clip);

class DataParallel {
 public:
  /// Reduces the gradients of `model`'s trainable parameters (already on the device) over the
  /// ranks of `comm`; every rank's parameters become rank 0's here. With `values` the
  /// parameters are on the meta device instead and take their values from it (every rank's
  /// source gives the same): fsdp keeps this rank's shard of each unit's values alone.
  DataParallel(std::shared_ptr<dist::Communicator> comm, const torch::nn::Module& model,
               const dist::DistOptions& options, const ValueSource* values = nullptr);

  dist::Communicator& comm() const { return *comm_; }
  dist::GradSync& sync() const { return *sync_; }
  int world() const { return comm_->size(); }
  bool sharded() const { return sync_->sharded(); }

  /// fsdp: what runs the model's blocks with their parameters gathered (null otherwise); the
  /// trainer gives it to the model (nn::set_block_runner), behind activation checkpointing.
  std::shared_ptr<nn::BlockRunner> block_runner() const { return runner_; }
  /// fsdp: the values of `model`'s parameters for a checkpoint, in named_parameters() order,
  /// each block's float32 masters gathered from every rank in turn and freed after: no rank
  /// holds more than one block whole beside its shards. A collective: every rank runs it (with
  /// a sink that may discard), rank 0 writes what it gives. Empty under the other strategies
  /// (the parameters are whole).
  ValueSource model_values(const torch::nn::Module& model) const;
  /// fsdp, at the end of training: `model`'s blocks gathered for good in float32 (whatever
  /// distributed.param_dtype) and run plainly again.
  void gather_model(torch::nn::Module& model) const;

  /// The optimizer of this rank: over the whole model, or (sharded) over the segments it owns.
  std::unique_ptr<Optimizer> optimizer(const torch::nn::Module& model, const recipe::OptimConfig& config) const;
  /// A checkpoint's whole-parameter optimizer state as this rank's optimizer loads it: (sharded)
  /// each segment's part of every tensor ("exp_avg.<param>" -> "exp_avg.<param>@<offset>").
  std::map<std::string, at::Tensor> rank_state(std::map<std::string, at::Tensor> full) const;
  /// The optimizer state a checkpoint holds, the names and shapes of a one-process checkpoint:
  /// (sharded) whole-parameter tensors gathered from every rank a bucket at a time as the stream
  /// runs. A collective: every rank runs the stream, rank 0 writes what it gives.
  TensorStream checkpoint_state(const Optimizer& opt, const recipe::OptimConfig& config) const;

  /// The sum of `value` over the ranks (`what` names the collective in a timeout).
  double sum(double value, const std::string& what) const;
  /// The step's one agreement: one all-reduce of this rank's mean loss, fp16 overflow flag, wish
  /// to stop and (sharded) squared gradient norm; then clips the gradients to `grad_clip`.
  StepAgreement agree(const at::Tensor& loss, const at::Tensor& found_inf, bool stop, Optimizer& opt,
                      double grad_clip, int64_t step) const;

 private:
  std::shared_ptr<dist::Communicator> comm_;
  std::unique_ptr<dist::GradSync> sync_;
  std::shared_ptr<nn::BlockRunner> runner_;
  std::vector<std::string> unit_prefix_;  // fsdp: each unit's parameter name prefix
  /// fsdp: the unit that holds parameter `name`, or -1.
  int unit_of_param(const std::string& name) const;
  std::vector<std::pair<std::string, std::vector<int64_t>>> model_shapes_;  // every parameter's
};

/// What each micro-batch's mean loss is divided by in a step of `micro` (this rank's part of
/// the global batch; `dp` null: one process). Masked LM and classification (`weighted`): a
/// micro-batch's mean loss counts by its share of the targets of the whole step (every
/// micro-batch of every rank, summed over the ranks for step `step` + 1), so the gradient is
/// that of the mean over the global batch's targets however the batch is split: N ranks x B
/// equal 1 x N*B, as in Hugging Face's Trainer (num_items_in_batch). A masked micro-batch holds
/// a random number of targets; a causal LM one always batch x seq_len, so its plain mean
/// (divisor: the number of micro-batches) is that share.
std::vector<double> loss_divisors(const std::vector<Batch>& micro, bool weighted, const DataParallel* dp,
                                  int64_t step);

}  // namespace lathe::train
