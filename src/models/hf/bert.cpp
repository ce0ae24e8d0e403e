// transformers' BERT (BertForMaskedLM, BertForSequenceClassification): the encoder, its MLM
// head and its classifier.

#include "family.hpp"

#include <algorithm>

#include "lathe/models/deferred.hpp"
#include "lathe/models/hf.hpp"

namespace lathe::models {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace hf;

namespace {

/// The encoder's tensors: lathe's under `ours` ("bert." inside a model with a head, "" for the
/// encoder alone), the family's under `theirs` (the same: BertModel saves without the prefix).
Table bert_encoder_table(const ModelOptions& o, bool pooler, const std::string& ours = "bert.",
                         const std::string& theirs = "bert.") {
  Table t;
  add_wb(t, ours + "word_embeddings.", theirs + "embeddings.word_embeddings.", false);
  add_wb(t, ours + "position_embeddings.", theirs + "embeddings.position_embeddings.", false);
  add_wb(t, ours + "token_type_embeddings.", theirs + "embeddings.token_type_embeddings.", false);
  add_wb(t, ours + "embeddings_norm.", theirs + "embeddings.LayerNorm.", true);
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = ours + "layers." + std::to_string(i) + ".",
                      h = theirs + "encoder.layer." + std::to_string(i) + ".";
    add_stacked(t, p + "attn.qkv.", h + "attention.self.", {"query", "key", "value"}, {o.d_model, o.d_model, o.d_model}, true);
    add_wb(t, p + "attn.proj.", h + "attention.output.dense.", true);
    add_wb(t, p + "ln_1.", h + "attention.output.LayerNorm.", true);
    add_wb(t, p + "mlp.fc.", h + "intermediate.dense.", true);
    add_wb(t, p + "mlp.proj.", h + "output.dense.", true);
    add_wb(t, p + "ln_2.", h + "output.LayerNorm.", true);
  }
  if (pooler) add_wb(t, ours + "pooler.", theirs + "pooler.dense.", true);
  return t;
}

Table bert_mlm_table(const ModelOptions& o) {
  Table t = bert_encoder_table(o, false);
  add_wb(t, "mlm_dense.", "cls.predictions.transform.dense.", true);
  add_wb(t, "mlm_norm.", "cls.predictions.transform.LayerNorm.", true);
  t.push_back({"mlm_bias", {"cls.predictions.bias"}});
  return t;
}

Table bert_classifier_table(const ModelOptions& o) {
  Table t = bert_encoder_table(o, true);
  add_wb(t, "classifier.", "classifier.", true);
  return t;
}

const KeyTable kBertKeys{{"vocab_size", "vocab_size", true}, {"max_seq_len", "max_position_embeddings"},
                         {"type_vocab_size", "type_vocab_size"}, {"d_model", "hidden_size"},
                         {"n_layer", "num_hidden_layers"}, {"n_head", "num_attention_heads"},
                         {"d_ff", "intermediate_size"}, {"norm_eps", "layer_norm_eps"},
                         {"dropout", "hidden_dropout_prob"}, {"attn_dropout", "attention_probs_dropout_prob"},
                         {"pad_token_id", "pad_token_id"}, {"init_std", "initializer_range"},
                         {"num_labels", "num_labels"}};

/// Where config.json holds each model option, a row per option in models::visit's order: a new

const Layout kBertLayout{"bert.", {"cls.", "classifier."},
                         {"position_ids", "token_type_ids", "cls.predictions.decoder.", "cls.seq_relationship."}};

json bert_config(const ModelOptions& o, const char* architecture) {
  check_heads_fill_width(o, "bert");
  json c = {{"architectures", {architecture}},
            {"model_type", "bert"},
            {"hidden_act", o.activation == nn::Activation::GeluTanh ? "gelu_new" : "gelu"},
            {"tie_word_embeddings", true}};
  write_keys(c, kBertKeys, Arch::Bert, o);
  if (o.pad_token_id < 0) c["pad_token_id"] = nullptr;
  return c;
}

}  // namespace

ModelOptions read_hf_bert_config(const fs::path& dir) {
  const json c = read_config(dir);
  if (auto type = model_type(c, dir); type != "bert")
    throw Error((dir / "config.json").string() + ": model_type '" + type + "' is not bert");
  ModelOptions bert = ModelOptions::bert_defaults();  // BertConfig's defaults
  bert.d_ff = 3072;
  if (c.contains("id2label") && c["id2label"].is_object()) bert.num_labels = static_cast<int64_t>(c["id2label"].size());
  ModelOptions o = read_keys(c, dir, kBertKeys, bert);
  o.activation = read_activation(c, dir, "hidden_act", "gelu");
  if (auto pos = get<std::string>(c, dir, "position_embedding_type", "absolute"); pos != "absolute")
    unsupported(dir, "position_embedding_type", pos, "BERT positions are absolute");
  validate_read(o, Arch::Bert, dir);
  return o;
}

namespace {

/// A BERT of `options` on the meta device.
template <class Model>
Model on_meta(ModelOptions options) {
  options.device = at::kMeta;
  nn::SkipInitGuard skip_init;
  return Model(options);
}

/// The model materialised from its source (what the loaders return).
template <class Model>
Model materialised(const Model& model, const nn::ValueSource& values) {
  return Model(std::dynamic_pointer_cast<typename Model::ContainedType>(
      materialise(DeferredModel{AnyModel(model.ptr()), values}).module()));
}

}  // namespace

std::pair<BertForMaskedLM, nn::ValueSource> open_hf_bert_mlm(const fs::path& dir) {
  auto options = read_hf_bert_config(dir);
  auto model = on_meta<BertForMaskedLM>(options);
  Layout layout = kBertLayout;
  layout.ignore.push_back("bert.pooler.");
  auto values = tensor_values(*model, bert_mlm_table(options), weights_files(dir), layout, {}, nullptr, io::Read::Map);
  return {model, std::move(values)};
}

std::pair<BertForSequenceClassification, nn::ValueSource> open_hf_bert_classifier(
    const fs::path& dir, int64_t num_labels, std::vector<std::string>* initialized) {
  auto options = read_hf_bert_config(dir);
  if (num_labels > 0) options.num_labels = num_labels;
  auto model = on_meta<BertForSequenceClassification>(options);
  Layout layout = kBertLayout;
  layout.ignore.push_back("cls.");
  std::vector<std::string> fresh;
  auto stored = tensor_values(*model, bert_classifier_table(options), weights_files(dir), layout,
                              {"bert.pooler.", "classifier."}, &fresh, io::Read::Map);
  if (initialized) initialized->insert(initialized->end(), fresh.begin(), fresh.end());
  if (fresh.empty()) return {model, std::move(stored)};
  // The parameters the directory lacks get what a new classifier draws: the whole model's
  // initialisation runs (one parameter at a time), keeping only theirs.
  auto values = [model, stored = std::move(stored), fresh = std::move(fresh)](const nn::ValueSink& sink) mutable {
    stored(sink);
    model->reset_parameters([&](const std::string& name, const at::Tensor& value) {
      if (std::find(fresh.begin(), fresh.end(), name) != fresh.end()) sink(name, value);
    });
  };
  return {model, std::move(values)};
}

std::pair<BertModel, nn::ValueSource> open_hf_bert_encoder(const fs::path& dir) {
  auto options = read_hf_bert_config(dir);
  // The pooler is the checkpoint's when it has one (all-MiniLM-L6-v2 does; many do not).
  options.pooler = false;
  for (const auto& file : weights_files(dir))
    for (const auto& [name, info] : io::load_safetensors(file, io::Read::Map).tensors)
      if (name == "pooler.dense.weight" || name == "bert.pooler.dense.weight") options.pooler = true;
  options.device = at::kMeta;
  nn::SkipInitGuard skip_init;
  BertModel model(options, options.pooler);
  // Heads of other kinds (a masked-LM or classifier checkpoint read as its encoder) are left.
  Layout layout = kBertLayout;
  layout.ignore.insert(layout.ignore.end(), {"cls.", "classifier."});
  auto values = tensor_values(*model, bert_encoder_table(options, options.pooler, "", "bert."), weights_files(dir),
                              layout, {}, nullptr, io::Read::Map);
  return {model, std::move(values)};
}

BertModel load_hf_bert_encoder(const fs::path& dir) {
  auto [model, values] = open_hf_bert_encoder(dir);
  return materialised(model, values);
}

BertForMaskedLM load_hf_bert_mlm(const fs::path& dir) {
  auto [model, values] = open_hf_bert_mlm(dir);
  return materialised(model, values);
}

BertForSequenceClassification load_hf_bert_classifier(const fs::path& dir, int64_t num_labels,
                                                       std::vector<std::string>* initialized) {
  auto [model, values] = open_hf_bert_classifier(dir, num_labels, initialized);
  return materialised(model, values);
}

std::vector<std::string> save_hf(BertModel& model, const fs::path& dir, const HfWriteOptions& options) {
  const auto& o = model->options;
  return save_tensors(*model, bert_encoder_table(o, o.pooler, "", ""), dir, bert_config(o, "BertModel"), options);
}

std::vector<std::string> save_hf(BertForMaskedLM& model, const fs::path& dir, const HfWriteOptions& options) {
  const auto& o = model->bert->options;
  return save_tensors(*model, bert_mlm_table(o), dir, bert_config(o, "BertForMaskedLM"), options);
}

std::vector<std::string> save_hf(BertForSequenceClassification& model, const fs::path& dir,
                                 const std::vector<std::string>& labels, const HfWriteOptions& options) {
  const auto& o = model->bert->options;
  if (!labels.empty() && static_cast<int64_t>(labels.size()) != o.num_labels)
    throw std::invalid_argument("save_hf: " + std::to_string(labels.size()) + " label names for a classifier of " +
                                std::to_string(o.num_labels) + " labels");
  json c = bert_config(o, "BertForSequenceClassification");
  json id2label = json::object(), label2id = json::object();
  for (int64_t i = 0; i < o.num_labels; ++i) {
    // transformers' names when the model knows none.
    const auto name = labels.empty() ? "LABEL_" + std::to_string(i) : labels[static_cast<std::size_t>(i)];
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  c["id2label"] = id2label;
  c["label2id"] = label2id;
  return save_tensors(*model, bert_classifier_table(o), dir, c, options);
}

}  // namespace lathe::models
