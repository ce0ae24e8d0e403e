// The choices of the layers: which norm, which MLP activation, which position encoding.
#pragma once

#include "lathe/core/enum_table.hpp"

namespace lathe::nn {

using lathe::operator<<;

/// rmsnorm_offset: RMSNorm whose weight is the offset of the scale from one, x / rms(x) * (1 + w),
/// its weight starting at zero (Gemma).
enum class NormKind { LayerNorm, RmsNorm, RmsNormOffset };
/// The gated ones (swiglu, geglu, geglu_tanh) compute act(gate) * up from one projection of
/// 2 d_ff rows, gate rows first: SwiGLU (Llama) and GeGLU (Gemma: exact or tanh GELU).
enum class Activation { GeluTanh, Gelu, SwiGlu, GeGlu, GeGluTanh };
constexpr bool gated(Activation a) {
  return a == Activation::SwiGlu || a == Activation::GeGlu || a == Activation::GeGluTanh;
}
enum class Position { Learned, Rope };
/// How rotary frequencies are stretched for contexts longer than the pretraining one: not
/// (none), all divided by a factor (linear), or Llama 3's wavelength-dependent mix (llama3).
enum class RopeScaling { None, Linear, Llama3 };

}  // namespace lathe::nn

LATHE_ENUM_TABLE(lathe::nn::NormKind, {lathe::nn::NormKind::LayerNorm, "layernorm"}, {lathe::nn::NormKind::RmsNorm, "rmsnorm"},
                 {lathe::nn::NormKind::RmsNormOffset, "rmsnorm_offset"});
LATHE_ENUM_TABLE(lathe::nn::Activation, {lathe::nn::Activation::GeluTanh, "gelu_tanh"},
                 {lathe::nn::Activation::Gelu, "gelu"}, {lathe::nn::Activation::SwiGlu, "swiglu"},
                 {lathe::nn::Activation::GeGlu, "geglu"}, {lathe::nn::Activation::GeGluTanh, "geglu_tanh"});
LATHE_ENUM_TABLE(lathe::nn::Position, {lathe::nn::Position::Learned, "learned"},
                 {lathe::nn::Position::Rope, "rope"});
LATHE_ENUM_TABLE(lathe::nn::RopeScaling, {lathe::nn::RopeScaling::None, "none"},
                 {lathe::nn::RopeScaling::Linear, "linear"}, {lathe::nn::RopeScaling::Llama3, "llama3"});
