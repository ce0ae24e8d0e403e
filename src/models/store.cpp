// lathe model files and the AnyModel handle.

#include "lathe/models/store.hpp"

#include <fstream>
#include <map>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/hf.hpp"

namespace lathe::models {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kModelFormatVersion = 1;

json to_json(const GptOptions& o) {
  return {{"vocab_size", o.vocab_size}, {"max_seq_len", o.max_seq_len}, {"n_layer", o.n_layer},
          {"n_head", o.n_head}, {"n_kv_head", o.n_kv_head}, {"d_model", o.d_model}, {"d_ff", o.d_ff},
          {"dropout", o.dropout}, {"attn_dropout", o.attn_dropout}, {"bias", o.bias},
          {"norm", recipe::enum_name(o.norm)}, {"norm_eps", o.norm_eps},
          {"activation", recipe::enum_name(o.activation)}, {"position", recipe::enum_name(o.position)},
          {"rope_theta", o.rope_theta}, {"tie_embeddings", o.tie_embeddings}, {"init_std", o.init_std}};
}

json to_json(const BertOptions& o) {
  return {{"vocab_size", o.vocab_size}, {"max_seq_len", o.max_seq_len}, {"type_vocab_size", o.type_vocab_size},
          {"n_layer", o.n_layer}, {"n_head", o.n_head}, {"d_model", o.d_model}, {"d_ff", o.d_ff},
          {"dropout", o.dropout}, {"attn_dropout", o.attn_dropout}, {"norm_eps", o.norm_eps},
          {"activation", recipe::enum_name(o.activation)}, {"pad_token_id", o.pad_token_id},
          {"num_labels", o.num_labels}, {"init_std", o.init_std}};
}

template <class E>
E enum_from(const json& j, const char* key) {
  auto v = recipe::parse_enum<E>(j.at(key).get<std::string>());
  if (!v) throw std::invalid_argument(std::string(key) + ": unknown value " + j.at(key).dump());
  return *v;
}

GptOptions gpt_from_json(const json& j) {
  GptOptions o;
  o.vocab_size = j.at("vocab_size");
  o.max_seq_len = j.at("max_seq_len");
  o.n_layer = j.at("n_layer");
  o.n_head = j.at("n_head");
  o.n_kv_head = j.at("n_kv_head");
  o.d_model = j.at("d_model");
  o.d_ff = j.at("d_ff");
  o.dropout = j.at("dropout");
  o.attn_dropout = j.at("attn_dropout");
  o.bias = j.at("bias");
  o.norm = enum_from<recipe::Norm>(j, "norm");
  o.norm_eps = j.at("norm_eps");
  o.activation = enum_from<recipe::Activation>(j, "activation");
  o.position = enum_from<recipe::Position>(j, "position");
  o.rope_theta = j.at("rope_theta");
  o.tie_embeddings = j.at("tie_embeddings");
  o.init_std = j.at("init_std");
  return o;
}

BertOptions bert_from_json(const json& j) {
  BertOptions o;
  o.vocab_size = j.at("vocab_size");
  o.max_seq_len = j.at("max_seq_len");
  o.type_vocab_size = j.at("type_vocab_size");
  o.n_layer = j.at("n_layer");
  o.n_head = j.at("n_head");
  o.d_model = j.at("d_model");
  o.d_ff = j.at("d_ff");
  o.dropout = j.at("dropout");
  o.attn_dropout = j.at("attn_dropout");
  o.norm_eps = j.at("norm_eps");
  o.activation = enum_from<recipe::Activation>(j, "activation");
  o.pad_token_id = j.at("pad_token_id");
  o.num_labels = j.at("num_labels");
  o.init_std = j.at("init_std");
  return o;
}

}  // namespace

std::shared_ptr<torch::nn::Module> AnyModel::module() const {
  switch (kind) {
    case ModelKind::Gpt: return gpt.ptr();
    case ModelKind::BertMaskedLm: return mlm.ptr();
    case ModelKind::BertClassifier: return classifier.ptr();
  }
  return nullptr;
}

BertModel AnyModel::bert() const {
  if (kind == ModelKind::BertMaskedLm) return mlm->bert;
  if (kind == ModelKind::BertClassifier) return classifier->bert;
  return nullptr;
}

int64_t AnyModel::vocab_size() const {
  return kind == ModelKind::Gpt ? gpt->options.vocab_size : bert()->options.vocab_size;
}

const char* AnyModel::kind_name() const {
  switch (kind) {
    case ModelKind::Gpt: return "gpt";
    case ModelKind::BertMaskedLm: return "bert_masked_lm";
    case ModelKind::BertClassifier: return "bert_classifier";
  }
  return "?";
}

AnyModel make_model(const GptOptions& options) {
  AnyModel m;
  m.kind = ModelKind::Gpt;
  m.gpt = Gpt(options);
  return m;
}

AnyModel make_model(ModelKind kind, const BertOptions& options) {
  AnyModel m;
  m.kind = kind;
  if (kind == ModelKind::BertMaskedLm) m.mlm = BertForMaskedLM(options);
  else if (kind == ModelKind::BertClassifier) m.classifier = BertForSequenceClassification(options);
  else throw std::invalid_argument("make_model: a GPT takes GptOptions");
  return m;
}

void save_model(const AnyModel& model, const fs::path& path) {
  json meta = {{"format_version", kModelFormatVersion}, {"kind", model.kind_name()}};
  meta["options"] = model.kind == ModelKind::Gpt ? to_json(model.gpt->options) : to_json(model.bert()->options);
  if (!model.labels.empty()) meta["labels"] = model.labels;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model.module()->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
  io::save_safetensors(path, tensors, {{"format", "pt"}, {"lathe.model", meta.dump()}});
}

AnyModel load_model(const fs::path& path, std::optional<ModelKind> want, int64_t num_labels) {
  if (fs::is_directory(path) && is_hf_model_dir(path)) {
    const auto type = json::parse(std::ifstream(path / "config.json"), nullptr, false).value("model_type", "");
    AnyModel m;
    if (type == "bert") {
      m.kind = want.value_or(ModelKind::BertMaskedLm);
      if (m.kind == ModelKind::Gpt) throw Error(path.string() + ": a BERT model cannot be trained or run as a GPT");
      if (m.kind == ModelKind::BertMaskedLm) m.mlm = load_hf_bert_mlm(path);
      else m.classifier = load_hf_bert_classifier(path, num_labels);
    } else {
      if (want && *want != ModelKind::Gpt)
        throw Error(path.string() + ": a " + type + " model cannot be used as a BERT model");
      m.gpt = load_hf_gpt(path);
    }
    return m;
  }
  const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
  auto st = io::load_safetensors(file);
  auto it = st.metadata.find("lathe.model");
  if (it == st.metadata.end())
    throw Error(file.string() + ": no lathe.model metadata (not a lathe model file; a Hugging Face model is read "
                                "from its directory)");
  AnyModel m;
  try {
    const json meta = json::parse(it->second);
    if (meta.at("format_version").get<int>() > kModelFormatVersion)
      throw Error("written by a newer lathe (format_version " + meta.at("format_version").dump() + ")");
    const auto kind = meta.at("kind").get<std::string>();
    const auto& opts = meta.at("options");
    if (kind == "gpt") m = make_model(gpt_from_json(opts));
    else if (kind == "bert_masked_lm") m = make_model(ModelKind::BertMaskedLm, bert_from_json(opts));
    else if (kind == "bert_classifier") m = make_model(ModelKind::BertClassifier, bert_from_json(opts));
    else throw Error("unknown model kind '" + kind + "'");
    if (meta.contains("labels")) m.labels = meta["labels"].get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw Error(file.string() + ": bad lathe.model metadata: " + e.what());
  } catch (const std::exception& e) {
    throw Error(file.string() + ": " + e.what());
  }
  std::map<std::string, at::Tensor> stored(st.tensors.begin(), st.tensors.end());
  std::vector<std::string> missing, wrong;
  torch::NoGradGuard no_grad;
  for (auto& item : m.module()->named_parameters()) {
    auto it = stored.find(item.key());
    if (it == stored.end()) missing.push_back(item.key());
    else if (it->second.sizes() != item.value().sizes()) wrong.push_back(item.key());
    else item.value().copy_(it->second);
    if (it != stored.end()) stored.erase(it);
  }
  if (!missing.empty() || !wrong.empty() || !stored.empty()) {
    std::string msg = file.string() + ": tensors do not match the model its metadata describes:";
    for (const auto& n : missing) msg += "\n  missing " + n;
    for (const auto& n : wrong) msg += "\n  wrong shape " + n;
    for (const auto& [n, t] : stored) msg += "\n  unexpected " + n;
    throw Error(msg);
  }
  if (want && *want != m.kind) {
    // A masked-LM file starts a classifier: its encoder is copied, the heads stay new.
    if (*want == ModelKind::BertClassifier && m.kind == ModelKind::BertMaskedLm) {
      auto options = m.mlm->bert->options;
      if (num_labels > 0) options.num_labels = num_labels;
      AnyModel c = make_model(ModelKind::BertClassifier, options);
      auto src = m.mlm->bert->named_parameters();
      for (auto& item : c.classifier->bert->named_parameters())
        if (auto* t = src.find(item.key())) item.value().copy_(*t);
      return c;
    }
    throw Error(file.string() + ": holds a " + m.kind_name() + " model, not the model this task needs");
  }
  if (m.kind == ModelKind::BertClassifier && num_labels > 0 && num_labels != m.classifier->bert->options.num_labels)
    throw Error(file.string() + ": the classifier has " + std::to_string(m.classifier->bert->options.num_labels) +
                " labels, " + std::to_string(num_labels) + " were asked for (model.num_labels)");
  return m;
}

}  // namespace lathe::models
