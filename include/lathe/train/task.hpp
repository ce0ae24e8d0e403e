// What a training task feeds the model and how it scores it: causal LM windows, masked-LM
// windows ([CLS] ... [SEP], 80/10/10 masking) and labelled examples for classification.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>

#include <ATen/core/Tensor.h>

#include "lathe/models/store.hpp"
#include "lathe/recipe/recipe.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::train {

/// One micro-batch. targets: causal LM and sft (B, T) next tokens, -100 where nothing is
/// predicted (sft: prompts, padding, the end of each packed example); masked LM (B, T) labels
/// with -100 where nothing is predicted; classification (B) class ids. attention_mask /
/// token_type_ids: BERT tasks only (undefined for GPT). segments: packed sft rows (B, T), the
/// example of each position (models::GptImpl::forward), else undefined.
/// dpo: 2B rows, the B pairs' chosen completions then their rejected ones (targets -100 but on
/// the completion); `reference` (B, 2) float64 the reference model's log-probabilities of each
/// pair's chosen and rejected row (undefined while they are being computed); `beta` and
/// `label_smoothing` the loss's (train.dpo_beta, train.dpo_label_smoothing).
struct Batch {
  at::Tensor input_ids;
  at::Tensor targets;
  at::Tensor attention_mask;
  at::Tensor token_type_ids;
  int64_t tokens = 0;  // real input tokens, for throughput
  at::Tensor segments;
  at::Tensor reference;
  double beta = 0;
  double label_smoothing = 0;

  /// The tensor fields (some may be undefined), for code that treats them alike: pinning,
  /// moving to a device, a CUDA graph's static inputs.
  std::array<at::Tensor*, 6> tensors() {
    return {&input_ids, &targets, &attention_mask, &token_type_ids, &segments, &reference};
  }
  std::array<const at::Tensor*, 6> tensors() const {
    return {&input_ids, &targets, &attention_mask, &token_type_ids, &segments, &reference};
  }
};

/// The batch in page-locked host memory, so that a copy to a GPU can run asynchronously; the
/// training loader pins in its worker threads when training on CUDA. Needs CUDA.
Batch pin(const Batch& batch);

/// Moves a batch to `device` (the one place batches move): for CUDA with asynchronous copies
/// from pinned memory (pinning here what is not pinned yet), so the copy overlaps the previous
/// step's kernels; a CPU batch is returned as it is.
Batch to_device(const Batch& batch, const at::Device& device);

/// Batches of a task, each a pure function of its index (resume and prefetching rely on it).
class TaskData {
 public:
  virtual ~TaskData() = default;
  /// Micro-batch `index` (optimizer step * grad_accum + micro step); safe from several threads.
  virtual Batch train_batch(uint64_t index) const = 0;
  /// Validation batches available (0: no validation data).
  virtual int64_t val_batches() const = 0;
  virtual Batch val_batch(int64_t index) const = 0;
  /// Class names by id (classification), else empty.
  virtual std::vector<std::string> labels() const { return {}; }
  /// Preference data (dpo) scores its pairs with the reference model once, before they are
  /// used: those of training batches [train_begin, train_end) and of the first `val_batches`
  /// validation batches. `score` gives the summed log-probability of each row's targets of a
  /// batch (row_logps). A batch of a pair not scored so is refused (std::logic_error).
  virtual bool wants_reference() const { return false; }
  virtual void set_reference(const std::function<at::Tensor(const Batch&)>& /*score*/, uint64_t /*train_begin*/,
                             uint64_t /*train_end*/, int64_t /*val_batches*/) {}
  /// Something the user should know about the data (a validation split read as one smaller
  /// batch, say); empty when there is nothing to say.
  virtual std::string notes() const { return {}; }
};

/// A data-parallel process: train_batch(i) of rank r is rows [r * B, (r + 1) * B) of the global
/// batch i of world * B rows (B = train.batch_size), so W ranks read together what one process
/// with W * B rows reads. Validation batches are whole on every rank.
struct DataRank {
  int rank = 0;
  int world = 1;
};

/// Builds the data of recipe.train.task from the shards (LM tasks) or example files
/// (classification). `split` Train makes the "validation" batches come from the training data
/// (for `lathe eval --split train`). Errors name the file or key to fix.
std::unique_ptr<TaskData> make_task_data(const recipe::Recipe& recipe, const tokenizer::Tokenizer& tok,
                                         recipe::Split eval_split = recipe::Split::Val, DataRank rank = {});

/// Cross-entropy (nats per token) of the validation shards under the training shards' unigram
/// distribution (add-one smoothed): the loss a model that ignores context would reach, the
/// baseline a language model must beat.
double unigram_loss(const recipe::Recipe& recipe, const tokenizer::Tokenizer& tok);

/// The chat template sft and the generate stage (generate.chat) render with: tokenizer.chat_template
/// (the template, or a file holding one), else the one beside the tokenizer; empty when none.
std::string chat_template_source(const recipe::Recipe& r);

/// The kind of model a task trains.
models::ModelKind model_kind(recipe::Task task);

/// The metric a stage's one-line summary shows: perplexity (language models), rewards_accuracy
/// (dpo) or accuracy (classifiers).
const char* headline_metric(const std::map<std::string, double>& metrics);

/// Mean cross-entropy of the batch (computed in float32; a GPT's vocabulary projection and loss
/// blockwise, nn::linear_cross_entropy, never holding the whole logits). `logits_dtype`
/// (optional) receives the dtype the model produced its logits in: what autocast really ran.
/// `preference` (optional, dpo batches): receives the batch's preference_sums, added to what it
/// holds.
at::Tensor task_loss(const models::AnyModel& model, const Batch& batch, at::ScalarType* logits_dtype = nullptr,
                     at::Tensor* preference = nullptr);

/// The summed log-probability of each row's targets (B) float32: a sequence's log-likelihood
/// where its targets are its completion.
at::Tensor row_logps(const models::AnyModel& model, const Batch& batch);

/// DPO (Rafailov et al. 2023, the sigmoid loss; with label smoothing, conservative DPO) of pairs
/// whose policy log-probabilities are `logps` (2B: the chosen rows, then the rejected) and the
/// reference's `reference` (B, 2): per pair, with d = (pi_c - ref_c) - (pi_r - ref_r),
/// loss = -(1 - s) log sigmoid(beta d) - s log sigmoid(-beta d), and the implicit rewards
/// beta (pi - ref) of each completion.
struct PreferenceTerms {
  at::Tensor loss;              // (B)
  at::Tensor chosen_rewards;    // (B)
  at::Tensor rejected_rewards;  // (B)
  at::Tensor chosen_logps, rejected_logps;  // (B) the policy's
};
PreferenceTerms preference_terms(const at::Tensor& logps, const at::Tensor& reference, double beta,
                                 double label_smoothing);

/// What a batch of pairs adds to the reward metrics: (6) float64 on the batch's device, the sums
/// of pairs, pairs whose chosen reward is the larger, chosen rewards, rejected rewards, chosen
/// and rejected log-probabilities.
at::Tensor preference_sums(const PreferenceTerms& terms);
/// The metrics of such sums (on the host), TRL's rewards/* and logps/* in lathe's spelling:
/// rewards_accuracy, rewards_chosen, rewards_rejected, rewards_margin, logps_chosen,
/// logps_rejected (means over the pairs). Empty for no pairs.
std::map<std::string, double> preference_metrics(const at::Tensor& sums);

/// Sums over evaluated batches; metrics() gives loss and perplexity (LM) or loss, accuracy and
/// macro-F1 (classification).
struct EvalAccumulator {
  double loss_sum = 0;  // sum of per-target losses
  int64_t count = 0;    // targets scored
  std::vector<int64_t> predictions, labels;
  at::Tensor preference;  // dpo: preference_sums over the pairs (host)
  void add(const models::AnyModel& model, const Batch& batch);
  std::map<std::string, double> metrics(int64_t num_labels) const;
};

}  // namespace lathe::train
