// A small builder of ONNX graphs on the `onnx` protobuf classes: named inputs with symbolic
// dimensions, initializers from tensors, nodes with attributes, scoped value names, and the
// finished model checked by the ONNX checker and ONNX shape inference before anyone writes it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

namespace onnx {
class ModelProto;
}

namespace lathe::export_ {

/// One dimension of a graph input or output: a size, or a symbol ("batch_size") that ONNX
/// Runtime binds at run time.
struct Dim {
  Dim(int64_t size) : size(size) {}  // NOLINT: sizes and symbols read the same in a shape list
  Dim(const char* symbol) : symbol(symbol) {}  // NOLINT
  Dim(std::string symbol) : symbol(std::move(symbol)) {}  // NOLINT
  int64_t size = -1;
  std::string symbol;
};

/// A node attribute: int, float, ints, string or a tensor.
struct Attr {
  std::string name;
  std::variant<int64_t, double, std::vector<int64_t>, std::string, at::Tensor> value;
};

/// Element types of graph inputs and outputs (TensorProto::DataType).
enum class Elem : int32_t { Float = 1, Uint8 = 2, Int8 = 3, Int32 = 6, Int64 = 7, Bool = 9 };

class Graph {
 public:
  /// `opset`: the default domain's version the nodes are written for.
  Graph(std::string name, int64_t opset);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  int64_t opset() const { return opset_; }

  /// Declares a graph input; returns its name.
  std::string input(const std::string& name, Elem type, const std::vector<Dim>& dims);
  /// Makes `value` a graph output called `name` (through an Identity when the names differ).
  void output(const std::string& value, const std::string& name, Elem type, const std::vector<Dim>& dims);

  /// A weight: `tensor` (contiguous copy, any of float32 / int8 / uint8 / int32 / int64 / bool)
  /// stored under `name` (made unique in the graph); returns the name.
  std::string initializer(const std::string& name, const at::Tensor& tensor);
  /// A model parameter stored once however often it is asked for (a tied embedding table).
  std::string weight(const std::string& name, const at::Tensor& parameter);
  /// Small constants, shared when the same value is asked for twice.
  std::string ints(const std::vector<int64_t>& values);    // 1-D int64
  std::string int_scalar(int64_t value);                   // 0-D int64
  std::string scalar(double value);                        // 0-D float32

  /// Adds a node of `type` with one output; returns the output's name.
  std::string op(const std::string& type, const std::vector<std::string>& inputs, const std::vector<Attr>& attrs = {},
                 const std::string& domain = "");
  /// Adds a node with `outputs` outputs; returns their names.
  std::vector<std::string> ops(const std::string& type, const std::vector<std::string>& inputs, int outputs,
                               const std::vector<Attr>& attrs = {}, const std::string& domain = "");

  /// Names of values and nodes made while a Scope lives carry its prefix ("blocks.0.attn/").
  class Scope {
   public:
    Scope(Graph& graph, const std::string& name);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Graph& graph_;
    std::size_t size_;
  };

  /// The model: IR version of the linked onnx library, the opsets used (plus com.microsoft
  /// when a node of that domain is present), producer lathe, `metadata` as metadata_props.
  /// Throws lathe::Error with the checker's or shape inference's message when the graph is not
  /// valid ONNX.
  std::unique_ptr<onnx::ModelProto> finish(const std::map<std::string, std::string>& metadata);

 private:
  std::string unique(const std::string& hint);
  std::string constant(const std::string& key, const at::Tensor& value);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t opset_;
  std::string prefix_;
};

/// The highest opset of the default domain the linked onnx library knows (its checker checks
/// nodes against that version's schemas).
int64_t max_opset();

}  // namespace lathe::export_
