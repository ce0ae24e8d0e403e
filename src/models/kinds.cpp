// The model kinds' rows: each kind's functions, then its row in kKinds.

#include "lathe/models/kind.hpp"

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include "lathe/core/error.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/nn/cross_entropy.hpp"

namespace lathe::models {
namespace fs = std::filesystem;
using torch::nn::Module;

namespace {

/// The module as the class `Impl` (the row has checked it with `holds`).
template <class Impl>
Impl& as(Module& m) {
  return static_cast<Impl&>(m);
}
template <class Impl>
const Impl& as(const Module& m) {
  return static_cast<const Impl&>(m);
}
template <class Impl>
bool holds(const Module& m) {
  return dynamic_cast<const Impl*>(&m) != nullptr;
}

// ------------------------------------------------------------------ gpt

std::shared_ptr<Module> gpt_make(const ModelOptions& o) { return Gpt(o).ptr(); }
void gpt_init(Module& m, const nn::ValueSink& sink) { as<GptImpl>(m).reset_parameters(sink); }
std::pair<std::shared_ptr<Module>, nn::ValueSource> gpt_open_hf(const fs::path& dir, int64_t) {
  auto [gpt, values] = open_hf_gpt(dir);
  return {gpt.ptr(), std::move(values)};
}
const ModelOptions& gpt_options(const Module& m) { return as<GptImpl>(m).options; }
std::shared_ptr<Module> gpt_load_hf(const fs::path& dir, int64_t, io::Read read) {
  return load_hf_gpt(dir, read).ptr();
}
std::vector<std::string> gpt_save_hf(Module& m, const fs::path& dir, const std::vector<std::string>&,
                                     const HfWriteOptions& options) {
  Gpt gpt(std::static_pointer_cast<GptImpl>(m.shared_from_this()));
  return save_hf(gpt, dir, options);
}
HfNaming gpt_hf_naming(const Module& m) {
  return hf_naming(Gpt(std::const_pointer_cast<GptImpl>(std::static_pointer_cast<const GptImpl>(m.shared_from_this()))));
}
at::Tensor gpt_tied_head(Module& m) {
  auto& gpt = as<GptImpl>(m);
  return gpt.lm_head ? at::Tensor() : gpt.wte->weight;
}
void gpt_separate_head(Module& m) { as<GptImpl>(m).separate_head(); }

TaskLogits gpt_scored(Module& m, const TaskInputs& in) {
  auto logits = as<GptImpl>(m).forward(in.input_ids, {}, nullptr, in.segments);
  return {logits.reshape({-1, logits.size(-1)}), in.targets.reshape({-1})};
}

at::Tensor gpt_blockwise_loss(Module& m, const TaskInputs& in, at::ScalarType* logits_dtype) {
  auto& gpt = as<GptImpl>(m);
  // A quantized head, or one with an adapter, runs its own forward (scored).
  if (gpt.lm_head && (gpt.lm_head->quantized() || gpt.lm_head->lora)) return {};
  // The vocabulary projection and the loss blockwise (nn::linear_cross_entropy): the
  // (B*T, V) logits are never held whole.
  auto h = gpt.hidden(in.input_ids, {}, nullptr, in.segments);
  h = h.reshape({-1, h.size(-1)});
  const auto& head = gpt.lm_head ? gpt.lm_head->weight : gpt.wte->weight;
  const auto& bias = gpt.lm_head ? gpt.lm_head->bias : at::Tensor();
  // The head's forward is bypassed: its observer (GPTQ's Hessian, Wanda's norms) sees h here.
  if (gpt.lm_head && gpt.lm_head->input_observer) gpt.lm_head->input_observer(h);
  const auto type = h.device().type();
  if (logits_dtype)  // what at::linear gives, under autocast or not
    *logits_dtype = at::autocast::is_autocast_enabled(type) ? at::autocast::get_autocast_dtype(type)
                                                             : at::result_type(h, head);
  // Blocks of about 32M logits (128 MB in float32).
  const int64_t block = std::max<int64_t>(64, (int64_t{1} << 25) / head.size(0));
  return nn::linear_cross_entropy(h, head, bias, in.targets.reshape({-1}), block, -100, gpt.options.logit_softcap);
}

// ------------------------------------------------------------------ bert_masked_lm

std::shared_ptr<Module> mlm_make(const ModelOptions& o) { return BertForMaskedLM(o).ptr(); }
void mlm_init(Module& m, const nn::ValueSink& sink) { as<BertForMaskedLMImpl>(m).reset_parameters(sink); }
const ModelOptions& mlm_options(const Module& m) { return as<BertForMaskedLMImpl>(m).bert->options; }
std::shared_ptr<Module> mlm_load_hf(const fs::path& dir, int64_t, io::Read) { return load_hf_bert_mlm(dir).ptr(); }
std::pair<std::shared_ptr<Module>, nn::ValueSource> mlm_open_hf(const fs::path& dir, int64_t) {
  auto [mlm, values] = open_hf_bert_mlm(dir);
  return {mlm.ptr(), std::move(values)};
}
std::vector<std::string> mlm_save_hf(Module& m, const fs::path& dir, const std::vector<std::string>&,
                                     const HfWriteOptions& options) {
  BertForMaskedLM mlm(std::static_pointer_cast<BertForMaskedLMImpl>(m.shared_from_this()));
  return save_hf(mlm, dir, options);
}

TaskLogits mlm_scored(Module& m, const TaskInputs& in) {
  auto& mlm = as<BertForMaskedLMImpl>(m);
  auto hidden = mlm.bert->forward(in.input_ids, in.token_type_ids, in.attention_mask);
  auto sel = in.targets.reshape({-1}).ne(-100).nonzero().squeeze(1);
  // Only the selected positions go through the vocabulary projection.
  auto h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, sel);
  return {mlm.head(h), in.targets.reshape({-1}).index_select(0, sel)};
}

// ------------------------------------------------------------------ bert_classifier

std::shared_ptr<Module> classifier_make(const ModelOptions& o) { return BertForSequenceClassification(o).ptr(); }
void classifier_init(Module& m, const nn::ValueSink& sink) {
  as<BertForSequenceClassificationImpl>(m).reset_parameters(sink);
}
const ModelOptions& classifier_options(const Module& m) {
  return as<BertForSequenceClassificationImpl>(m).bert->options;
}
std::shared_ptr<Module> classifier_load_hf(const fs::path& dir, int64_t num_labels, io::Read) {
  return load_hf_bert_classifier(dir, num_labels).ptr();
}
std::pair<std::shared_ptr<Module>, nn::ValueSource> classifier_open_hf(const fs::path& dir, int64_t num_labels) {
  auto [classifier, values] = open_hf_bert_classifier(dir, num_labels);
  return {classifier.ptr(), std::move(values)};
}
std::vector<std::string> classifier_save_hf(Module& m, const fs::path& dir, const std::vector<std::string>& labels,
                                            const HfWriteOptions& options) {
  BertForSequenceClassification classifier(
      std::static_pointer_cast<BertForSequenceClassificationImpl>(m.shared_from_this()));
  return save_hf(classifier, dir, labels, options);
}

TaskLogits classifier_scored(Module& m, const TaskInputs& in) {
  return {as<BertForSequenceClassificationImpl>(m).forward(in.input_ids, in.token_type_ids, in.attention_mask),
          in.targets};
}

// ------------------------------------------------------------------ bert_encoder

std::shared_ptr<Module> encoder_make(const ModelOptions& o) { return BertModel(o, o.pooler).ptr(); }
void encoder_init(Module& m, const nn::ValueSink& sink) { as<BertModelImpl>(m).reset_parameters(sink); }
const ModelOptions& encoder_options(const Module& m) { return as<BertModelImpl>(m).options; }
std::shared_ptr<Module> encoder_load_hf(const fs::path& dir, int64_t, io::Read) {
  return load_hf_bert_encoder(dir).ptr();
}
std::pair<std::shared_ptr<Module>, nn::ValueSource> encoder_open_hf(const fs::path& dir, int64_t) {
  auto [encoder, values] = open_hf_bert_encoder(dir);
  return {encoder.ptr(), std::move(values)};
}
std::vector<std::string> encoder_save_hf(Module& m, const fs::path& dir, const std::vector<std::string>&,
                                         const HfWriteOptions& options) {
  BertModel encoder(std::static_pointer_cast<BertModelImpl>(m.shared_from_this()));
  return save_hf(encoder, dir, options);
}
/// An encoder has no task: what would score it is refused by name.
TaskLogits encoder_scored(Module&, const TaskInputs&) {
  throw Error("a bert_encoder (a BERT without a head) has no task to score; it is imported and exported for its "
              "hidden states");
}

constexpr std::array kKinds{
    ModelKindTraits{.kind = ModelKind::Gpt,
                    .arch = Arch::Gpt,
                    .task = "causal_lm",
                    .also_trains = {"sft", "dpo"},
                    .make = gpt_make,
                    .init = gpt_init,
                    .holds = holds<GptImpl>,
                    .options = gpt_options,
                    .load_hf = gpt_load_hf,
                    .open_hf = gpt_open_hf,
                    .save_hf = gpt_save_hf,
                    .hf_naming = gpt_hf_naming,
                    .tied_head_path = "lm_head",
                    .tied_head = gpt_tied_head,
                    .separate_head = gpt_separate_head,
                    .scored = gpt_scored,
                    .blockwise_loss = gpt_blockwise_loss},
    // The decoder stays tied to the word embeddings: no head to hold apart.
    ModelKindTraits{.kind = ModelKind::BertMaskedLm,
                    .arch = Arch::Bert,
                    .task = "masked_lm",
                    .weigh_by_targets = true,
                    .make = mlm_make,
                    .init = mlm_init,
                    .holds = holds<BertForMaskedLMImpl>,
                    .options = mlm_options,
                    .load_hf = mlm_load_hf,
                    .open_hf = mlm_open_hf,
                    .save_hf = mlm_save_hf,
                    .scored = mlm_scored},
    ModelKindTraits{.kind = ModelKind::BertClassifier,
                    .arch = Arch::Bert,
                    .task = "classification",
                    .labelled = true,
                    .weigh_by_targets = true,
                    .starts_from = ModelKind::BertMaskedLm,
                    .make = classifier_make,
                    .init = classifier_init,
                    .holds = holds<BertForSequenceClassificationImpl>,
                    .options = classifier_options,
                    .load_hf = classifier_load_hf,
                    .open_hf = classifier_open_hf,
                    .save_hf = classifier_save_hf,
                    .scored = classifier_scored},
    ModelKindTraits{.kind = ModelKind::BertEncoder,
                    .arch = Arch::Bert,
                    .task = "",
                    .make = encoder_make,
                    .init = encoder_init,
                    .holds = holds<BertModelImpl>,
                    .options = encoder_options,
                    .load_hf = encoder_load_hf,
                    .open_hf = encoder_open_hf,
                    .save_hf = encoder_save_hf,
                    .scored = encoder_scored},
};

constexpr bool rows_complete() {
  for (const auto& row : kKinds) {
    if (!row.make || !row.init || !row.holds || !row.options || !row.load_hf || !row.open_hf ||
        !row.save_hf || !row.scored)
      return false;
    if ((row.tied_head == nullptr) != (row.separate_head == nullptr) ||
        (row.tied_head == nullptr) != row.tied_head_path.empty())
      return false;
  }
  return true;
}

static_assert(covers_every_kind(kKinds),
              "src/models/kinds.cpp: kKinds needs one row per models::ModelKind, in the order of its spelling table "
              "(include/lathe/models/kind.hpp)");
static_assert(rows_complete(),
              "src/models/kinds.cpp: a row names no task, lacks a function every kind needs (make, init, holds, options, "
              "load_hf, open_hf, save_hf, scored), or has only part of a tied head (path, tied_head, separate_head)");

}  // namespace

std::span<const ModelKindTraits> model_kinds() { return kKinds; }

const ModelKindTraits& kind_traits(ModelKind kind) {
  for (const auto& row : kKinds)
    if (row.kind == kind) return row;
  throw std::logic_error("model kind without a row");
}

}  // namespace lathe::models
