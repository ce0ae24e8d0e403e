// A quantized GPT's Hugging Face directory in the compressed-tensors layout (the
// `compressed-tensors` package's, which transformers reads through it): the quantized layers'
// tensors stored as integers with their float32 scales, and config.json's quantization_config.
// vLLM's own kernels take other forms for weight-only schemes (packed, integer zero points); it
// is not checked here.
//
//   int8_weight_only, int8_dynamic -> format int-quantized: <layer>.weight int8 (out, in) and
//       <layer>.weight_scale (out, 1); weights {num_bits 8, type int, symmetric, strategy
//       channel}; int8_dynamic adds input_activations {num_bits 8, symmetric, strategy token,
//       dynamic}. lathe's codes and scales as they are: the same weights.
//   int4_weight_only -> format int-quantized: <layer>.weight int8 (out, in) holding q = c - 8 in
//       [-8, 7], .weight_scale and .weight_zero_point (out, in / group) float32; weights {num_bits
//       4, type int, asymmetric, strategy group, group_size, zp_dtype float32}. lathe's
//       w = (c - 8) * scale + zero is compressed-tensors' (q - zp) * scale with the float zero
//       point zp = -zero / scale: the same values (up to the storage dtype). The codes take a byte
//       each: compressed-tensors' packed form holds integer zero points only, which lathe's grid
//       does not have (and its asymmetric packed form does not load in transformers 5.24).
//
// Layers lathe left float go to quantization_config.ignore. The families whose linear layers
// transformers holds as nn.Linear qualify (Llama and its kin); GPT-2's Conv1D layers do not
// (the caller writes float values instead).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/models/store.hpp"
#include "lathe/nn/quantized.hpp"

namespace lathe::export_ {

/// Whether `model`'s quantized layers can be written in the compressed-tensors layout (a GPT
/// family stored as nn.Linear, one scheme for every quantized layer); empty when they can, else
/// why not.
std::string compressed_tensors_problem(const models::AnyModel& model);

/// The quantized layers of `model` by module path (copies, kept while the model is dequantized).
std::map<std::string, nn::QuantizedWeight> quantized_weights(const models::AnyModel& model);

/// Rewrites the Hugging Face directory `dir` that save_hf wrote for `model` (its quantized
/// layers dequantized) into the compressed-tensors layout of `layers`: the files listed in
/// `files` (model.safetensors or shards and their index, config.json) are rewritten in place.
/// Returns notes (the layout, and int4's requantization error).
std::vector<std::string> write_compressed_tensors(const models::AnyModel& model,
                                                  const std::map<std::string, nn::QuantizedWeight>& layers,
                                                  const std::filesystem::path& dir);

}  // namespace lathe::export_
