// Models built without materialising them: the parameters on the meta device (no memory) and a
// source of their values, one whole tensor at a time, so that a rank that keeps only its shard
// of each parameter (FSDP) never holds the whole model, at start-up as in training.
#pragma once

#include <filesystem>
#include <optional>

#include "lathe/models/store.hpp"
#include "lathe/nn/init.hpp"

namespace lathe::models {

struct DeferredModel {
  AnyModel model;         // its parameters on the meta device, or views nothing else holds
  nn::ValueSource values;  // every parameter's values, by name
};

/// A `kind` model of `options` on the meta device; its values are the ones make_model(kind,
/// options) draws from the same generator state (each drawn into a CPU tensor of its own).
DeferredModel deferred_model(ModelKind kind, ModelOptions options);

/// The model `path` holds (what load_model reads, as `want` with `num_labels`), its values read
/// when the source runs: a Hugging Face directory of a kind that opens one (ModelKindTraits::
/// open_hf) a tensor at a time from the mapped files; a lathe model file or checkpoint mapped, its
/// parameters views of the file (pages read only where a sink reads them). Everything load_model
/// refuses is refused here, before a value flows.
DeferredModel open_model(const std::filesystem::path& path, std::optional<ModelKind> want, int64_t num_labels);

/// The values of `model`'s parameters as they are now (the tensors, not copies: the source
/// keeps them alive, whatever later becomes of the parameters).
nn::ValueSource parameter_values(const AnyModel& model);

/// The deferred model materialised: every parameter allocated on `device` and given its value
/// (what one process trains). Throws std::logic_error naming a parameter the source never gave
/// or a value the model has no parameter for.
AnyModel materialise(const DeferredModel& deferred, const at::Device& device = at::kCPU);

}  // namespace lathe::models
