// The ONNX graph builder.

#include "lathe/export/graph.hpp"

#include <cstring>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include "lathe/core/build_info.hpp"
#include "lathe/core/error.hpp"

namespace lathe::export_ {
namespace {

int32_t onnx_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return onnx::TensorProto::FLOAT;
    case at::kByte: return onnx::TensorProto::UINT8;
    case at::kChar: return onnx::TensorProto::INT8;
    case at::kInt: return onnx::TensorProto::INT32;
    case at::kLong: return onnx::TensorProto::INT64;
    case at::kBool: return onnx::TensorProto::BOOL;
    default: return -1;
  }
}

void set_type(onnx::ValueInfoProto& info, Elem type, const std::vector<Dim>& dims) {
  auto* tensor = info.mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(static_cast<int32_t>(type));
  auto* shape = tensor->mutable_shape();
  for (const auto& d : dims) {
    auto* dim = shape->add_dim();
    if (d.symbol.empty()) dim->set_dim_value(d.size);
    else dim->set_dim_param(d.symbol);
  }
}

}  // namespace

struct Graph::Impl {
  onnx::GraphProto graph;
  std::set<std::string> names;
  std::unordered_map<std::string, std::string> constants;  // value key -> initializer name
  std::set<std::string> domains;
  std::unordered_map<const void*, std::pair<at::Tensor, std::string>> weights;  // parameter -> name
};

Graph::Graph(std::string name, int64_t opset) : impl_(std::make_unique<Impl>()), opset_(opset) {
  impl_->graph.set_name(std::move(name));
}

Graph::~Graph() = default;

std::string Graph::unique(const std::string& hint) {
  std::string base = prefix_ + hint;
  std::string name = base;
  for (int i = 1; impl_->names.count(name); ++i) name = base + "_" + std::to_string(i);
  impl_->names.insert(name);
  return name;
}

std::string Graph::input(const std::string& name, Elem type, const std::vector<Dim>& dims) {
  if (!impl_->names.insert(name).second) throw std::logic_error("onnx: two inputs named " + name);
  auto* info = impl_->graph.add_input();
  info->set_name(name);
  set_type(*info, type, dims);
  return name;
}

void Graph::output(const std::string& value, const std::string& name, Elem type, const std::vector<Dim>& dims) {
  if (value != name) {
    if (!impl_->names.insert(name).second) throw std::logic_error("onnx: two values named " + name);
    auto* node = impl_->graph.add_node();
    node->set_op_type("Identity");
    node->set_name(name + "/Identity");
    node->add_input(value);
    node->add_output(name);
  }
  auto* info = impl_->graph.add_output();
  info->set_name(name);
  set_type(*info, type, dims);
}

std::string Graph::initializer(const std::string& name, const at::Tensor& tensor) {
  const auto t = tensor.detach().to(at::kCPU).contiguous();
  const std::string unique_name = unique(name);
  const auto type = onnx_type(t.scalar_type());
  if (type < 0)
    throw Error(fmt::format("onnx: {} is {}; the export writes float32 weights (convert the model to float32 first)",
                            unique_name, c10::toString(t.scalar_type())));
  auto* init = impl_->graph.add_initializer();
  init->set_name(unique_name);
  init->set_data_type(type);
  for (auto d : t.sizes()) init->add_dims(d);
  init->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
  return unique_name;
}

std::string Graph::weight(const std::string& name, const at::Tensor& parameter) {
  const void* key = parameter.unsafeGetTensorImpl();
  if (auto it = impl_->weights.find(key); it != impl_->weights.end()) return it->second.second;
  auto stored = initializer(name, parameter);
  impl_->weights.emplace(key, std::make_pair(parameter, stored));
  return stored;
}

std::string Graph::constant(const std::string& key, const at::Tensor& value) {
  if (auto it = impl_->constants.find(key); it != impl_->constants.end()) return it->second;
  const auto saved = std::exchange(prefix_, "");  // shared by every scope: named at the top
  auto name = initializer("const", value);
  prefix_ = saved;
  impl_->constants[key] = name;
  return name;
}

std::string Graph::ints(const std::vector<int64_t>& values) {
  return constant(fmt::format("ints:{}", fmt::join(values, ",")), at::tensor(values, at::kLong));
}

std::string Graph::int_scalar(int64_t value) {
  return constant(fmt::format("int:{}", value), at::scalar_tensor(value, at::kLong));
}

std::string Graph::scalar(double value) {
  const float f = static_cast<float>(value);
  uint32_t bits = 0;
  std::memcpy(&bits, &f, sizeof bits);
  return constant(fmt::format("float:{}", bits), at::scalar_tensor(f, at::kFloat));
}

std::string Graph::op(const std::string& type, const std::vector<std::string>& inputs, const std::vector<Attr>& attrs,
                      const std::string& domain) {
  return ops(type, inputs, 1, attrs, domain)[0];
}

std::vector<std::string> Graph::ops(const std::string& type, const std::vector<std::string>& inputs, int outputs,
                                    const std::vector<Attr>& attrs, const std::string& domain) {
  auto* node = impl_->graph.add_node();
  node->set_op_type(type);
  node->set_name(unique(type));
  if (!domain.empty()) {
    node->set_domain(domain);
    impl_->domains.insert(domain);
  }
  for (const auto& in : inputs) node->add_input(in);
  std::vector<std::string> names;
  for (int i = 0; i < outputs; ++i) {
    names.push_back(unique(type + "_out" + (outputs > 1 ? std::to_string(i) : "")));
    node->add_output(names.back());
  }
  for (const auto& a : attrs) {
    auto* attr = node->add_attribute();
    attr->set_name(a.name);
    if (const auto* i = std::get_if<int64_t>(&a.value)) {
      attr->set_type(onnx::AttributeProto::INT);
      attr->set_i(*i);
    } else if (const auto* f = std::get_if<double>(&a.value)) {
      attr->set_type(onnx::AttributeProto::FLOAT);
      attr->set_f(static_cast<float>(*f));
    } else if (const auto* v = std::get_if<std::vector<int64_t>>(&a.value)) {
      attr->set_type(onnx::AttributeProto::INTS);
      for (auto x : *v) attr->add_ints(x);
    } else if (const auto* s = std::get_if<std::string>(&a.value)) {
      attr->set_type(onnx::AttributeProto::STRING);
      attr->set_s(*s);
    } else {
      const auto t = std::get<at::Tensor>(a.value).contiguous();
      attr->set_type(onnx::AttributeProto::TENSOR);
      auto* tp = attr->mutable_t();
      const auto type = onnx_type(t.scalar_type());
      if (type < 0) throw std::logic_error("onnx: a tensor attribute of an unsupported type");
      tp->set_data_type(type);
      for (auto d : t.sizes()) tp->add_dims(d);
      tp->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
    }
  }
  return names;
}

Graph::Scope::Scope(Graph& graph, const std::string& name) : graph_(graph), size_(graph.prefix_.size()) {
  graph_.prefix_ += name + "/";
}

Graph::Scope::~Scope() { graph_.prefix_.resize(size_); }

std::unique_ptr<onnx::ModelProto> Graph::finish(const std::map<std::string, std::string>& metadata) {
  auto model = std::make_unique<onnx::ModelProto>();
  model->set_ir_version(onnx::IR_VERSION);
  model->set_producer_name("lathe");
  model->set_producer_version(build::kVersion);
  auto* opset = model->add_opset_import();
  opset->set_domain("");
  opset->set_version(opset_);
  for (const auto& d : impl_->domains) {
    auto* extra = model->add_opset_import();
    extra->set_domain(d);
    extra->set_version(1);
  }
  for (const auto& [k, v] : metadata) {
    auto* prop = model->add_metadata_props();
    prop->set_key(k);
    prop->set_value(v);
  }
  *model->mutable_graph() = std::move(impl_->graph);
  impl_->graph = onnx::GraphProto();
  const auto& name = model->graph().name();
  try {
    onnx::checker::check_model(*model);
  } catch (const std::exception& e) {
    throw Error(fmt::format("onnx: the {} graph fails the ONNX checker: {}", name, e.what()));
  }
  try {
    // The full check: types of every node's inputs and outputs agree, and shapes infer
    // (errors thrown, not skipped).
    onnx::ShapeInferenceOptions options(/*check_type_val=*/true, /*strict_mode_val=*/1, /*data_prop_val=*/true);
    onnx::shape_inference::InferShapes(*model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    throw Error(fmt::format("onnx: shape inference fails on the {} graph: {}", name, e.what()));
  }
  return model;
}

int64_t max_opset() {
  return onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map().at(onnx::ONNX_DOMAIN).second;
}

}  // namespace lathe::export_
