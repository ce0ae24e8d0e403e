// lathe model files and the AnyModel handle.

#include "lathe/models/store.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/json_file.hpp"
#include "lathe/io/safetensors.hpp"
#include "lathe/models/deferred.hpp"
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

AnyModel::AnyModel(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {
  for (const auto& row : model_kinds())
    if (module_ && row.holds(*module_)) row_ = &row;
  if (!row_) throw std::logic_error("AnyModel: the module is of no model kind's class");
}

const ModelKindTraits& AnyModel::traits() const {
  if (!row_) throw std::logic_error("AnyModel: an empty handle has no kind");
  return *row_;
}

std::optional<nn::RoledParameter> AnyModel::tied_head() const {
  const auto& row = traits();
  if (!row.tied_head) return std::nullopt;
  auto weight = row.tied_head(*module_);
  if (!weight.defined()) return std::nullopt;
  return nn::RoledParameter{std::string(row.tied_head_path) + ".weight", weight, nn::Role::OutputHead};
}

void AnyModel::separate_head() const {
  if (const auto& row = traits(); row.separate_head) row.separate_head(*module_);
}

at::Tensor AnyModel::blockwise_loss(const TaskInputs& inputs, at::ScalarType* logits_dtype) const {
  const auto& row = traits();
  return row.blockwise_loss ? row.blockwise_loss(*module_, inputs, logits_dtype) : at::Tensor();
}

AnyModel make_model(ModelKind kind, const ModelOptions& options) {
  const auto& row = kind_traits(kind);
  return AnyModel(row, row.make(options));
}

std::vector<std::string> save_hf(const AnyModel& model, const fs::path& dir, const HfWriteOptions& options) {
  return model.traits().save_hf(*model.module(), dir, model.labels, options);
}

void save_model(const AnyModel& model, const fs::path& path, const ValueSource& values) {
  json meta = {{"format_version", kModelFormatVersion}, {"kind", model.kind_name()}};
  meta["options"] = options_to_json(model.arch(), model.options());
  if (!model.labels.empty()) meta["labels"] = model.labels;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model.module()->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
  if (values) {
    if (!quantized_layers(model).empty()) throw std::logic_error("save_model: a quantized model's values come whole");
    auto stream = TensorStream::of(std::move(tensors));
    for (auto& spec : stream.specs)  // float32 values, whatever dtype the parameters compute in
      if (at::isFloatingType(spec.dtype)) spec.dtype = at::kFloat;
    stream.values = values;
    io::save_safetensors(path, stream, {{"format", "pt"}, {"lathe.model", meta.dump()}});
    return;
  }
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

namespace {

/// The kind a Hugging Face directory is read as: `want`, or the first kind of its architecture.
const ModelKindTraits& hf_row(const fs::path& path, std::optional<ModelKind> want) {
  const auto config = io::read_json(path / "config.json");
  const auto type = config.value("model_type", "");
  // Every other model_type is a GPT family's (which refuses the types it does not know).
  const Arch arch = type == "bert" ? Arch::Bert : Arch::Gpt;
  const auto kinds = model_kinds();
  const auto* row = want ? &kind_traits(*want)
                         : &*std::find_if(kinds.begin(), kinds.end(), [&](const auto& k) { return k.arch == arch; });
  // A BERT without a word of its head is its encoder; a classifier directory its classifier.
  if (!want && arch == Arch::Bert && config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty()) {
    const auto architecture = config["architectures"][0].get<std::string>();
    if (architecture == "BertModel") row = &kind_traits(ModelKind::BertEncoder);
    if (architecture == "BertForSequenceClassification") row = &kind_traits(ModelKind::BertClassifier);
  }
  if (row->arch != arch)
    throw Error(path.string() + (arch == Arch::Bert ? std::string(": a BERT model cannot be trained or run as a GPT")
                                                    : ": a " + type + " model cannot be used as a BERT model"));
  return *row;
}

AnyModel load_hf_dir(const fs::path& path, std::optional<ModelKind> want, int64_t num_labels, io::Read read) {
  return AnyModel(hf_row(path, want).load_hf(path, num_labels, read));
}

/// Rethrows what reading the file's metadata threw, naming the file.
template <class F>
auto naming_file(const fs::path& file, F&& f) {
  try {
    return f();
  } catch (const json::exception& e) {
    throw Error(file.string() + ": bad lathe.model metadata: " + e.what());
  } catch (const std::exception& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

json read_metadata(const fs::path& file, const io::Safetensors& st) {
  auto it = st.metadata.find("lathe.model");
  if (it == st.metadata.end())
    throw Error(file.string() +
                ": no lathe.model metadata (not a lathe model file; a Hugging Face model is read "
                "from its directory)");
  try {
    return json::parse(it->second);
  } catch (const json::exception& e) {
    throw Error(file.string() + ": bad lathe.model metadata: " + e.what());
  }
}

/// The model the metadata describes, its parameters not initialized (every one is read next).
AnyModel model_from_metadata(const json& meta) {
  if (meta.at("format_version").get<int>() > kModelFormatVersion)
    throw Error("written by a newer lathe (format_version " + meta.at("format_version").dump() + ")");
  const auto name = meta.at("kind").get<std::string>();
  const auto& opts = meta.at("options");
  const auto kind = parse_enum<ModelKind>(name);
  if (!kind) throw Error("unknown model kind '" + name + "'");
  nn::SkipInitGuard skip_init;
  AnyModel m = make_model(*kind, options_from_json(kind_traits(*kind).arch, opts));
  if (meta.contains("labels")) m.labels = meta["labels"].get<std::vector<std::string>>();
  return m;
}

/// Rebuilds the quantized layers the metadata lists from their stored tensors, which leave
/// `stored`; their float weights then leave the parameters.
void read_quantized(const json& quantized, const AnyModel& m, std::map<std::string, at::Tensor>& stored) {
  // A tied head that was quantized is held apart.
  if (const auto& row = m.traits(); row.separate_head && quantized.contains(std::string(row.tied_head_path)))
    m.separate_head();
  const auto all = nn::linear_layers(*m.module());
  const std::map<std::string, nn::LinearImpl*> layers(all.begin(), all.end());
  for (const auto& [path, q] : quantized.items()) {
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

/// The stored tensors become the model's parameters; all of them, each of its shape, or an error
/// listing every difference.
void assign_stored(const fs::path& file, const AnyModel& m, std::map<std::string, at::Tensor>& stored) {
  std::vector<std::string> missing, wrong;
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
}

/// The file's model as the kind the caller wants: itself, a new model of a kind it can start
/// (its parameters of the same name copied, the others new), or an error.
AnyModel as_wanted(const fs::path& file, AnyModel m, std::optional<ModelKind> want, int64_t num_labels) {
  if (want && *want != m.kind()) {
    if (!quantized_layers(m).empty())
      throw Error(file.string() + ": holds a quantized " + m.kind_name() + " model, which cannot become another kind");
    const auto& row = kind_traits(*want);
    if (row.starts_from != m.kind())
      throw Error(file.string() + ": holds a " + m.kind_name() + " model, not the model this task needs");
    auto options = m.options();
    if (row.labelled && num_labels > 0) options.num_labels = num_labels;
    AnyModel started = make_model(*want, options);
    torch::NoGradGuard no_grad;
    auto src = m.module()->named_parameters();
    for (auto& item : started.module()->named_parameters())
      if (auto* t = src.find(item.key())) item.value().copy_(*t);
    return started;
  }
  if (m.traits().labelled && num_labels > 0 && num_labels != m.options().num_labels)
    throw Error(file.string() + ": the classifier has " + std::to_string(m.options().num_labels) + " labels, " +
                std::to_string(num_labels) + " were asked for (model.num_labels)");
  return m;
}

}  // namespace

AnyModel load_model(const fs::path& path, std::optional<ModelKind> want, int64_t num_labels, io::Read read) {
  if (fs::is_directory(path) && is_hf_model_dir(path)) return load_hf_dir(path, want, num_labels, read);
  const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
  auto st = io::load_safetensors(file, read);
  const json meta = read_metadata(file, st);
  AnyModel m = naming_file(file, [&] { return model_from_metadata(meta); });
  std::map<std::string, at::Tensor> stored(st.tensors.begin(), st.tensors.end());
  torch::NoGradGuard no_grad;
  // Quantized layers first: their float weights then leave the parameters.
  if (meta.contains("quantized")) naming_file(file, [&] { read_quantized(meta.at("quantized"), m, stored); });
  assign_stored(file, m, stored);
  return as_wanted(file, std::move(m), want, num_labels);
}

}  // namespace lathe::models

namespace lathe::models {

DeferredModel deferred_model(ModelKind kind, ModelOptions options) {
  options.device = at::kMeta;
  AnyModel model = [&] {
    nn::SkipInitGuard skip_init;
    return make_model(kind, options);
  }();
  auto values = [model](const nn::ValueSink& sink) { model.traits().init(*model.module(), sink); };
  return {model, values};
}

nn::ValueSource parameter_values(const AnyModel& model) {
  std::vector<std::pair<std::string, at::Tensor>> values;
  for (const auto& item : model.module()->named_parameters()) values.emplace_back(item.key(), item.value().detach());
  return [values = std::move(values)](const nn::ValueSink& sink) {
    for (const auto& [name, value] : values) sink(name, value);
  };
}

DeferredModel open_model(const fs::path& path, std::optional<ModelKind> want, int64_t num_labels) {
  if (fs::is_directory(path) && is_hf_model_dir(path)) {
    auto [module, values] = hf_row(path, want).open_hf(path, num_labels);
    return {AnyModel(module), std::move(values)};
  }
  auto model = load_model(path, want, num_labels, io::Read::Map);
  return {model, parameter_values(model)};
}

AnyModel materialise(const DeferredModel& deferred, const at::Device& device) {
  const auto& from = deferred.model;
  if (!quantized_layers(from).empty()) throw std::logic_error("materialise: a quantized model is not deferred");
  auto options = from.options();
  options.device = device;
  AnyModel model = [&] {
    nn::SkipInitGuard skip_init;
    return make_model(from.kind(), options);
  }();
  model.labels = from.labels;
  auto params = model.module()->named_parameters();
  std::set<std::string> given;
  torch::NoGradGuard no_grad;
  deferred.values([&](const std::string& name, const at::Tensor& value) {
    auto* param = params.find(name);
    if (!param || !given.insert(name).second)
      throw std::logic_error("materialise: a value for '" + name + "', which is no parameter or was given twice");
    param->copy_(value);
  });
  for (const auto& item : params)
    if (!given.count(item.key())) throw std::logic_error("materialise: no value for '" + item.key() + "'");
  return model;
}

}  // namespace lathe::models
