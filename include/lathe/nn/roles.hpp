// Parameter roles: what a parameter is, recorded by the layer that registers it.
//
// Weight decay, initialisation, FLOP counts, and pruning and quantization selection ask the
// role, never the name. Every lathe layer registers its parameters through
// `ParameterRoles::add`; `roles_of(model)` lists every parameter of a model with its role and
// refuses a model that holds a parameter no layer gave a role.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "lathe/core/enum_table.hpp"

namespace lathe::nn {

using lathe::operator<<;

enum class Role {
  Embedding,           // a lookup table (tokens, positions, segments): rows are indexed, not multiplied
  Matrix,              // a dense projection with no further structure (BERT's pooler, MLM transform)
  HeadBlock,           // attention's fused QKV projection: its rows are whole heads (query, then key, value)
  NeuronBlock,         // the MLP's input projection: its rows are hidden neurons (SwiGLU: gate rows, then up)
  ResidualProjection,  // a projection back into the residual stream (attention output, MLP output): its
                       // columns are heads or neurons
  Norm,                // a norm's scale
  Bias,                // an additive bias, of any layer
  OutputHead,          // the final projection to the vocabulary or the classes
  Adapter,             // a low-rank adapter's A or B (nn/lora.hpp): trained while the layer it adapts is frozen
};

/// True for the roles that are matrices multiplied in the forward pass (not tables, scales or
/// biases).
constexpr bool is_matrix(Role r) {
  return r == Role::Matrix || r == Role::HeadBlock || r == Role::NeuronBlock || r == Role::ResidualProjection ||
         r == Role::OutputHead;
}

/// Mixed into every lathe layer that registers parameters of its own.
class ParameterRoles {
 public:
  virtual ~ParameterRoles() = default;
  /// This layer's own parameters (not its children's), by their local name.
  const std::vector<std::pair<std::string, Role>>& own_roles() const { return roles_; }

 protected:
  /// Registers `tensor` as parameter `name` of `self` with `role`; returns the parameter.
  torch::Tensor add(torch::nn::Module& self, const std::string& name, torch::Tensor tensor, Role role) {
    auto& p = self.register_parameter(name, std::move(tensor));
    roles_.emplace_back(name, role);
    return p;
  }

 private:
  std::vector<std::pair<std::string, Role>> roles_;
};

struct RoledParameter {
  std::string name;  // the full name, as named_parameters() gives it
  torch::Tensor tensor;
  Role role;
};

/// Every parameter of `model` with its role, in named_parameters() order. Throws
/// std::logic_error naming a parameter registered without a role.
std::vector<RoledParameter> roles_of(const torch::nn::Module& model);

/// Whether one of `patterns` names `p`: a role's spelling ("embedding", "output_head", ...) or
/// a path pattern over parameter names with `*` and `?` wildcards, which also names every
/// parameter below a module it matches ("lm_head", "blocks.*.mlp"). What pruning and
/// quantization leave alone is chosen this way (`skip_modules`).
bool selected(const RoledParameter& p, const std::vector<std::string>& patterns);

}  // namespace lathe::nn

LATHE_ENUM_TABLE(lathe::nn::Role, {lathe::nn::Role::Embedding, "embedding"}, {lathe::nn::Role::Matrix, "matrix"},
                 {lathe::nn::Role::HeadBlock, "head_block"}, {lathe::nn::Role::NeuronBlock, "neuron_block"},
                 {lathe::nn::Role::ResidualProjection, "residual_projection"}, {lathe::nn::Role::Norm, "norm"},
                 {lathe::nn::Role::Bias, "bias"}, {lathe::nn::Role::OutputHead, "output_head"},
                 {lathe::nn::Role::Adapter, "adapter"});
