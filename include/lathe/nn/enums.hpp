// The choices of the layers: which norm, which MLP activation, which position encoding.
#pragma once

#include "lathe/core/enum_table.hpp"

namespace lathe::nn {

using lathe::operator<<;

enum class NormKind { LayerNorm, RmsNorm };
enum class Activation { GeluTanh, Gelu, SwiGlu };
enum class Position { Learned, Rope };

}  // namespace lathe::nn

LATHE_ENUM_TABLE(lathe::nn::NormKind, {lathe::nn::NormKind::LayerNorm, "layernorm"}, {lathe::nn::NormKind::RmsNorm, "rmsnorm"});
LATHE_ENUM_TABLE(lathe::nn::Activation, {lathe::nn::Activation::GeluTanh, "gelu_tanh"},
                 {lathe::nn::Activation::Gelu, "gelu"}, {lathe::nn::Activation::SwiGlu, "swiglu"});
LATHE_ENUM_TABLE(lathe::nn::Position, {lathe::nn::Position::Learned, "learned"},
                 {lathe::nn::Position::Rope, "rope"});
