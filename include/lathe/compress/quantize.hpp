// Post-training quantization of a model's Linear layers: round-to-nearest, or GPTQ (Frantar et
// al. 2022) calibrated on batches of the run's own data.
//
// What is quantized is asked of the parameter roles (lathe/nn/roles.hpp): every Linear whose
// weight is a matrix (matrix, head_block, neuron_block, residual_projection, output_head) unless
// `skip_modules` names its role or path. Embeddings are tables, not products, and stay float; a
// GPT's output head tied to its token embedding is quantized as a copy of it (`lm_head`) when
// output_head is not skipped. The stored form and the kernels are lathe/nn/quantized.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/compress/prune.hpp"
#include "lathe/core/schema.hpp"
#include "lathe/models/options.hpp"
#include "lathe/models/store.hpp"
#include "lathe/nn/quantized.hpp"

namespace lathe::compress {

/// rtn: each weight rounded to the nearest point of its grid; gptq: column by column with the
/// rounding error of each column compensated on the columns not yet quantized (needs
/// calibration batches).
enum class QuantAlgorithm { Rtn, Gptq };
/// Compute dtype of weight-only layers. auto: bfloat16 for int4 (ATen's fast int4 kernel takes
/// bfloat16), float32 for int8.
enum class QuantCompute { Auto, Float32, BFloat16 };

struct QuantizeOptions {
  nn::QuantScheme method = nn::QuantScheme::Int8Dynamic;
  QuantAlgorithm algorithm = QuantAlgorithm::Rtn;
  int64_t group_size = 128;          // int4: inputs per group (32, 64, 128 or 256)
  QuantCompute activations = QuantCompute::Auto;  // weight-only schemes: dtype of the product
  int64_t calibration_batches = 8;   // gptq: training batches that give each layer's Hessian
  double damp = 0.01;                // gptq: share of the mean Hessian diagonal added to it
  int64_t block_size = 128;          // gptq: columns per lazy batch update
  std::vector<std::string> skip_modules{"output_head"};  // roles or path patterns left float

  nn::QuantActivations resolved_activations() const;
  nn::QuantGrid grid() const { return {method, group_size}; }
  /// Problems spanning keys, each with the keys involved (without the "quantize." prefix).
  std::vector<models::OptionProblem> problems() const;
};

template <class V>
void visit(V& v, QuantizeOptions& c) {
  v.field("method", c.method, "int8_dynamic (int8 weights and per-token int8 activations on integer kernels), "
                              "int8_weight_only (per output channel) or int4_weight_only (per group of inputs).");
  v.field("algorithm", c.algorithm, "rtn (round to nearest) or gptq (error-compensating, calibrated on "
                                    "calibration_batches of training data).");
  v.field("group_size", c.group_size, "int4_weight_only: inputs per quantization group (32, 64, 128 or 256).",
          between(32, 256));
  v.field("activations", c.activations, "Weight-only schemes: compute dtype of the product, float32 or bfloat16; "
                                        "auto: bfloat16 for int4, float32 for int8.");
  v.field("calibration_batches", c.calibration_batches, "gptq: training batches that give each layer's Hessian.",
          at_least(1));
  v.field("damp", c.damp, "gptq: dampening, the share of the mean Hessian diagonal added to its diagonal.",
          in_open_closed(0.0, 1.0));
  v.field("block_size", c.block_size, "gptq: columns per lazy batch update.", at_least(1));
  v.field("skip_modules", c.skip_modules, "What stays in floating point: parameter roles (output_head, matrix, "
                                          "...) or module path patterns (lm_head, blocks.0.*, pooler).");
}

/// The Linear layers `options` quantize, by module path, in forward order.
std::vector<std::pair<std::string, nn::LinearImpl*>> quantizable(const models::AnyModel& model,
                                                                  const std::vector<std::string>& skip);

/// GPTQ of one weight (out, in) with the Hessian `hessian` (in, in) = 2/n sum x x^T of its
/// inputs: columns quantized in order on `grid`, each one's error spread over the columns after
/// it through the upper Cholesky factor of the inverse Hessian, in lazy blocks of
/// `block_size` columns; `damp` times the mean diagonal added first; columns whose inputs were
/// always zero are zeroed. int4 groups take their scale and zero from the weights as updated
/// when the group's first column is reached.
nn::QuantizedWeight gptq(const at::Tensor& weight, const at::Tensor& hessian, nn::QuantGrid grid,
                         nn::QuantActivations activations, double damp = 0.01, int64_t block_size = 128);

/// What quantize_model did to one layer.
struct QuantizedLayer {
  std::string name;
  int64_t float_bytes = 0;    // the float32 weight
  int64_t quantized_bytes = 0;
  double weight_error = 0;             // ||W - Q|| / ||W|| (Frobenius)
  std::optional<double> output_error;  // gptq: ||(W - Q) X|| / ||W X|| over the calibration inputs X
};

/// Quantizes `model` in place. GPTQ goes layer by layer in forward order, each layer's Hessian
/// taken from the calibration batches run through the model as quantized so far. Throws
/// Error naming the layer for a model that is already quantized or a layer the scheme cannot
/// take (int4 groups that do not tile its inputs).
std::vector<QuantizedLayer> quantize_model(models::AnyModel& model, const QuantizeOptions& options,
                                           const Calibration* calibration = nullptr);

}  // namespace lathe::compress

LATHE_ENUM_TABLE(lathe::compress::QuantAlgorithm, {lathe::compress::QuantAlgorithm::Rtn, "rtn"},
                 {lathe::compress::QuantAlgorithm::Gptq, "gptq"});
LATHE_ENUM_TABLE(lathe::compress::QuantCompute, {lathe::compress::QuantCompute::Auto, "auto"},
                 {lathe::compress::QuantCompute::Float32, "float32"},
                 {lathe::compress::QuantCompute::BFloat16, "bfloat16"});
