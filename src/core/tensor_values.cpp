// Tensor streams.

#include "lathe/core/tensor_values.hpp"

namespace lathe {

TensorStream TensorStream::of(std::vector<std::pair<std::string, at::Tensor>> tensors) {
  TensorStream s;
  for (const auto& [name, t] : tensors) s.specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  s.values = [tensors = std::move(tensors)](const ValueSink& sink) {
    for (const auto& [name, t] : tensors) sink(name, t);
  };
  return s;
}

TensorStream TensorStream::then(TensorStream next) const {
  TensorStream s;
  s.specs = specs;
  s.specs.insert(s.specs.end(), next.specs.begin(), next.specs.end());
  s.values = [first = values, second = std::move(next.values)](const ValueSink& sink) {
    if (first) first(sink);
    if (second) second(sink);
  };
  return s;
}

}  // namespace lathe
