// A model's parameter values passed one whole tensor at a time.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lathe {

/// Takes the values of one parameter, by its full name. A value may be a view of a mapped file
/// or a tensor made for the call alone: the sink copies what it keeps, and may keep only a part
/// (a rank's shard).
using ValueSink = std::function<void(const std::string& name, const at::Tensor& value)>;
/// Calls its sink once for every parameter of the model it describes.
using ValueSource = std::function<void(const ValueSink& sink)>;

/// What a tensor that comes later is: what a file's header says of it before its data.
struct TensorSpec {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};

/// Tensors that come one at a time (a checkpoint written while its tensors are gathered a
/// block at a time): what each is, in order, and the source that hands them over in that order.
struct TensorStream {
  std::vector<TensorSpec> specs;
  ValueSource values;

  /// The tensors at hand, in their order.
  static TensorStream of(std::vector<std::pair<std::string, at::Tensor>> tensors);
  /// This stream's tensors, then `next`'s.
  TensorStream then(TensorStream next) const;
};

}  // namespace lathe
