// lathe model files and the AnyModel handle.

#include "lathe/io/json_file.hpp"
#include "lathe/models/store.hpp"

#include <fstream>
#include <map>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/hf.hpp"
#include "lathe/nn/init.hpp"
#include "lathe/nn/linear.hpp"

namespace lathe::models {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kModelFormatVersion = 1;

/// The options of `arch` as the model file stores them: every declared field that applies.
class JsonWriter {
 public:
  explicit JsonWriter(Arch arch) : arch_(arch) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits traits) {
    if (!applies_to(traits, arch_)) return;
    if constexpr (std::is_enum_v<T>) out[std::string(key)] = std::string(enum_name(value));
    else out[std::string(key)] = value;
  }
  json out = json::object();

 private:
  Arch arch_;
};

/// Reads what JsonWriter wrote. A key the file lacks keeps the default of `arch` (files written
/// before the option existed); a key of the wrong type or an unknown spelling is an error.
class JsonReader {
 public:
  explicit JsonReader(const json& in) : in_(in) {}
  template <class T>
  void field(std::string_view key, T& value, std::string_view, Range, Traits) {
    auto it = in_.find(std::string(key));
    if (it == in_.end()) return;
    if constexpr (std::is_enum_v<T>) {
      auto v = it->is_string() ? parse_enum<T>(it->template get<std::string>()) : std::nullopt;
      if (!v) throw std::invalid_argument(std::string(key) + ": unknown value " + it->dump());
      value = *v;
    } else {
      value = it->template get<T>();
    }
  }

 private:
  const json& in_;
};

json options_to_json(Arch arch, const ModelOptions& o) {
  ModelOptions copy = o;
  JsonWriter w(arch);
  visit(w, copy);
  return w.out;
}

ModelOptions options_from_json(Arch arch, const json& j) {
  ModelOptions o = arch == Arch::Bert ? ModelOptions::bert_defaults() : ModelOptions{};
  JsonReader r(j);
  visit(r, o);
  return o;
}

}  // namespace

std::map<std::string, const nn::QuantizedWeight*> quantized_layers(const AnyModel& model) {
  std::map<std::string, const nn::QuantizedWeight*> out;
  for (const auto& [path, lin] : nn::linear_layers(*model.module()))
    if (lin->quantized()) out[path] = lin->quantized();
  return out;
}

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

int64_t AnyModel::vocab_size() const { return options().vocab_size; }

const ModelOptions& AnyModel::options() const { return kind == ModelKind::Gpt ? gpt->options : bert()->options; }

const char* AnyModel::kind_name() const {
  switch (kind) {
    case ModelKind::Gpt: return "gpt";
    case ModelKind::BertMaskedLm: return "bert_masked_lm";
    case ModelKind::BertClassifier: return "bert_classifier";
  }
  return "?";
}

AnyModel make_model(ModelKind kind, const ModelOptions& options) {
  AnyModel m;
  m.kind = kind;
  switch (kind) {
    case ModelKind::Gpt: m.gpt = Gpt(options); break;
    case ModelKind::BertMaskedLm: m.mlm = BertForMaskedLM(options); break;
    case ModelKind::BertClassifier: m.classifier = BertForSequenceClassification(options); break;
  }
  return m;
}

void save_model(const AnyModel& model, const fs::path& path) {
  json meta = {{"format_version", kModelFormatVersion}, {"kind", model.kind_name()}};
  meta["options"] = options_to_json(model.arch(), model.options());
  if (!model.labels.empty()) meta["labels"] = model.labels;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model.module()->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
  json quantized = json::object();
  for (const auto& [path, q] : quantized_layers(model)) {
    quantized[path] = {{"scheme", enum_name(q->grid().scheme)},
                       {"group_size", q->grid().group_size},
                       {"activations", enum_name(q->activations())}};
    for (const auto& [name, t] : q->stored()) tensors.emplace_back(path + "." + name, t);
  }
  if (!quantized.empty()) meta["quantized"] = quantized;
  io::save_safetensors(path, tensors, {{"format", "pt"}, {"lathe.model", meta.dump()}});
}

void assign_parameter(at::Tensor& param, const at::Tensor& value) {
  if (value.scalar_type() == param.scalar_type() && value.device() == param.device() && value.is_contiguous())
    param.set_data(value);
  else
    param.copy_(value);
}

AnyModel load_model(const fs::path& path, std::optional<ModelKind> want, int64_t num_labels, io::Read read) {
  if (fs::is_directory(path) && is_hf_model_dir(path)) {
    const auto type = io::read_json(path / "config.json").value("model_type", "");
    AnyModel m;
    if (type == "bert") {
      m.kind = want.value_or(ModelKind::BertMaskedLm);
      if (m.kind == ModelKind::Gpt) throw Error(path.string() + ": a BERT model cannot be trained or run as a GPT");
      if (m.kind == ModelKind::BertMaskedLm) m.mlm = load_hf_bert_mlm(path);
      else m.classifier = load_hf_bert_classifier(path, num_labels);
    } else {
      if (want && *want != ModelKind::Gpt)
        throw Error(path.string() + ": a " + type + " model cannot be used as a BERT model");
      m.gpt = load_hf_gpt(path, read);
    }
    return m;
  }
  const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
  auto st = io::load_safetensors(file, read);
  auto it = st.metadata.find("lathe.model");
  if (it == st.metadata.end())
    throw Error(file.string() + ": no lathe.model metadata (not a lathe model file; a Hugging Face model is read "
                                "from its directory)");
  json meta;
  try {
    meta = json::parse(it->second);
  } catch (const json::exception& e) {
    throw Error(file.string() + ": bad lathe.model metadata: " + e.what());
  }
  AnyModel m;
  try {
    if (meta.at("format_version").get<int>() > kModelFormatVersion)
      throw Error("written by a newer lathe (format_version " + meta.at("format_version").dump() + ")");
    const auto kind = meta.at("kind").get<std::string>();
    const auto& opts = meta.at("options");
    nn::SkipInitGuard skip_init;  // every parameter is read below (or the file is refused)
    if (kind == "gpt") m = make_model(ModelKind::Gpt, options_from_json(Arch::Gpt, opts));
    else if (kind == "bert_masked_lm") m = make_model(ModelKind::BertMaskedLm, options_from_json(Arch::Bert, opts));
    else if (kind == "bert_classifier") m = make_model(ModelKind::BertClassifier, options_from_json(Arch::Bert, opts));
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
  // Quantized layers first: their float weights then leave the parameters.
  try {
    if (meta.contains("quantized")) {
      // A GPT with tied embeddings whose head was quantized holds that head apart.
      if (m.kind == ModelKind::Gpt && meta.at("quantized").contains("lm_head")) m.gpt->separate_head();
      const auto all = nn::linear_layers(*m.module());
      const std::map<std::string, nn::LinearImpl*> layers(all.begin(), all.end());
      for (const auto& [path, q] : meta.at("quantized").items()) {
        auto lin = layers.find(path);
        if (lin == layers.end()) throw Error("quantized layer '" + path + "' is not a Linear layer of the model");
        const auto scheme = parse_enum<nn::QuantScheme>(q.at("scheme").get<std::string>());
        const auto activations = parse_enum<nn::QuantActivations>(q.at("activations").get<std::string>());
        if (!scheme || !activations) throw Error("quantized layer '" + path + "': unknown scheme " + q.dump());
        std::map<std::string, at::Tensor> parts;
        for (const char* name : {"qweight", "scales", "zeros"})
          if (auto t = stored.find(path + "." + name); t != stored.end()) {
            parts[name] = t->second;
            stored.erase(t);
          }
        try {
          lin->second->quantize(nn::QuantizedWeight::from_stored({*scheme, q.at("group_size").get<int64_t>()}, *activations,
                                                                 parts, lin->second->options.in));
        } catch (const std::invalid_argument& e) {
          throw Error("quantized layer '" + path + "': " + e.what());
        }
      }
    }
  } catch (const json::exception& e) {
    throw Error(file.string() + ": bad lathe.model metadata: " + e.what());
  } catch (const std::exception& e) {
    throw Error(file.string() + ": " + e.what());
  }
  for (auto& item : m.module()->named_parameters()) {
    auto it = stored.find(item.key());
    if (it == stored.end()) missing.push_back(item.key());
    else if (it->second.sizes() != item.value().sizes()) wrong.push_back(item.key());
    else assign_parameter(item.value(), it->second);
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
    if (!quantized_layers(m).empty())
      throw Error(file.string() + ": holds a quantized " + m.kind_name() + " model, which cannot become another kind");
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
