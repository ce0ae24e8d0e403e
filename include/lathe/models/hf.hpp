// Hugging Face layout: a directory with config.json and model.safetensors that `transformers`
// loads with from_pretrained, for GPT2LMHeadModel, LlamaForCausalLM (a GPT with rope, rmsnorm
// and swiglu; biases when attention_bias = mlp_bias; Llama 3's rope scaling),
// Qwen2ForCausalLM (biases on q, k and v alone), MistralForCausalLM (a sliding window),
// GemmaForCausalLM (scaled embeddings, rmsnorm_offset, GeGLU), Phi3ForCausalLM (fused q / k / v
// and gate / up tensors), BertForMaskedLM and BertForSequenceClassification.
//
// Tensor names are translated by one table per family (src/models/hf/<family>.cpp; the families
// are listed in src/models/hf.cpp). Loading checks
// every tensor; missing, unexpected and mis-shaped tensors are reported together in one error.
// Tensors of any floating dtype are converted to the model's dtype.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lathe/io/safetensors.hpp"
#include "lathe/models/bert.hpp"
#include "lathe/models/gpt.hpp"
#include "lathe/models/hf_options.hpp"

namespace lathe::models {

/// True when `dir` holds a config.json with a model_type (a Hugging Face model directory).
bool is_hf_model_dir(const std::filesystem::path& dir);

/// Reads config.json of a gpt2, llama, qwen2, mistral, gemma or phi3 model. Throws lathe::Error
/// naming the file and key.
ModelOptions read_hf_gpt_config(const std::filesystem::path& dir);
/// Reads config.json of a bert model (num_labels from id2label / num_labels when present).
ModelOptions read_hf_bert_config(const std::filesystem::path& dir);

/// Builds the model described by config.json and loads model.safetensors into it (`read`: see
/// load_model).
Gpt load_hf_gpt(const std::filesystem::path& dir, io::Read read = io::Read::Copy);
/// The same model not materialised: its parameters on the meta device, and the source of their
/// values (views of the mapped files, one tensor built at a time where the family stacks them).
/// Everything load_hf_gpt checks is checked here.
std::pair<Gpt, nn::ValueSource> open_hf_gpt(const std::filesystem::path& dir);
BertForMaskedLM load_hf_bert_mlm(const std::filesystem::path& dir);
/// The same model not materialised (as open_hf_gpt).
std::pair<BertForMaskedLM, nn::ValueSource> open_hf_bert_mlm(const std::filesystem::path& dir);
/// Fine-tuning start: from a classifier directory, or from a BERT pre-training / masked-LM /
/// base-model directory, in which case the pooler (when absent) and the classifier keep their
/// fresh initialisation and their names are added to `initialized`. `num_labels` > 0 overrides
/// the config's.
BertForSequenceClassification load_hf_bert_classifier(const std::filesystem::path& dir, int64_t num_labels = 0,
                                                      std::vector<std::string>* initialized = nullptr);
/// The same model not materialised: the values of the parameters the directory lacks are what a
/// new classifier draws (its whole initialisation runs when the source runs, keeping theirs).
std::pair<BertForSequenceClassification, nn::ValueSource> open_hf_bert_classifier(
    const std::filesystem::path& dir, int64_t num_labels = 0, std::vector<std::string>* initialized = nullptr);

/// A BertModel directory (a BERT without a head: sentence-embedding checkpoints such as
/// all-MiniLM-L6-v2), its tensors with or without the "bert." prefix; the pooler is read when
/// the directory has one (options.pooler says whether it did).
BertModel load_hf_bert_encoder(const std::filesystem::path& dir);
std::pair<BertModel, nn::ValueSource> open_hf_bert_encoder(const std::filesystem::path& dir);
/// Writes config.json and model.safetensors (float32, tied weights stored once) into `dir`. A
/// GPT whose head was separated from its tied embedding (separate_head) is written untied.
/// A GPT read from a Hugging Face directory is written as the family it was read as
/// (Gpt::hf_family). Otherwise as gpt2 when it has learned positions, layernorm, tanh GELU and
/// biases; with rope, rmsnorm and swiglu as qwen2 when it has biases on q, k and v alone, as
/// mistral when it has a sliding window, as llama otherwise; with rmsnorm_offset, geglu and scaled
/// embeddings as gemma; any other mix throws.
/// `options`: the family, storage dtype and shard size (hf_options.hpp). Returns the names of the
/// files written (config.json, then model.safetensors or the index and its shards).
std::vector<std::string> save_hf(Gpt& model, const std::filesystem::path& dir, const HfWriteOptions& options = {});
std::vector<std::string> save_hf(BertForMaskedLM& model, const std::filesystem::path& dir,
                                 const HfWriteOptions& options = {});
/// As transformers' BertModel.save_pretrained: no "bert." prefix.
std::vector<std::string> save_hf(BertModel& model, const std::filesystem::path& dir, const HfWriteOptions& options = {});
/// `labels`: the name of each class (id2label / label2id); empty: LABEL_0, LABEL_1, ...
std::vector<std::string> save_hf(BertForSequenceClassification& model, const std::filesystem::path& dir,
                                 const std::vector<std::string>& labels = {}, const HfWriteOptions& options = {});
/// How save_hf names the model's tensors (hf_options.hpp).
HfNaming hf_naming(const Gpt& model);

/// config.json's model_type ("llama"), or an error naming the file.
std::string read_hf_model_type(const std::filesystem::path& dir);
/// The storage dtype of a Hugging Face directory's weights: config.json's dtype (torch_dtype in
/// older files), float32 when it names none.
at::ScalarType hf_storage_dtype(const std::filesystem::path& dir);

}  // namespace lathe::models
