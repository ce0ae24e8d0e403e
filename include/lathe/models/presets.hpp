// Named model sizes. A preset only supplies numbers (and the architecture's activation and norm
// epsilon); `model.preset` in a recipe fills every model key the recipe does not set itself.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "lathe/models/options.hpp"

namespace lathe::models {

struct ModelPreset {
  std::string_view name;
  std::string_view description;
  Arch arch;
  int64_t n_layer;
  int64_t n_head;
  int64_t d_model;
  int64_t max_seq_len;
  int64_t vocab_size;  // 0: the tokenizer's
  nn::Activation activation;
  double norm_eps;
};

inline constexpr auto kModelPresets = std::to_array<ModelPreset>({
    {"gpt2-124m", "GPT-2 small", Arch::Gpt, 12, 12, 768, 1024, 50257, nn::Activation::GeluTanh, 1e-5},
    {"gpt2-355m", "GPT-2 medium", Arch::Gpt, 24, 16, 1024, 1024, 50257, nn::Activation::GeluTanh, 1e-5},
    {"gpt2-774m", "GPT-2 large", Arch::Gpt, 36, 20, 1280, 1024, 50257, nn::Activation::GeluTanh, 1e-5},
    {"gpt2-1.5b", "GPT-2 XL", Arch::Gpt, 48, 25, 1600, 1024, 50257, nn::Activation::GeluTanh, 1e-5},
    {"gpt-tiny", "2-layer GPT for tests and smoke runs", Arch::Gpt, 2, 2, 64, 256, 0,
     nn::Activation::GeluTanh, 1e-5},
    {"bert-base", "BERT base", Arch::Bert, 12, 12, 768, 512, 30522, nn::Activation::Gelu, 1e-12},
    {"bert-large", "BERT large", Arch::Bert, 24, 16, 1024, 512, 30522, nn::Activation::Gelu, 1e-12},
    {"bert-tiny", "2-layer BERT (L-2, H-128) for tests and smoke runs", Arch::Bert, 2, 2, 128, 512, 0,
     nn::Activation::Gelu, 1e-12},
});

/// The preset called `name`, or nullptr.
constexpr const ModelPreset* find_preset(std::string_view name) {
  for (const auto& p : kModelPresets)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace lathe::models
