// Prepend: a string before the (non-empty) text.

#include "registry.hpp"
#include "text.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct PrependNormalizer final : Normalizer {
  std::string prefix;
  void normalize(TextPiece& p) const override { prepend(p, prefix); }
  ojson to_json() const override { return {{"type", "Prepend"}, {"prepend", prefix}}; }
};

}  // namespace

std::shared_ptr<const Normalizer> read_prepend_normalizer(const Node& n) {
  auto r = std::make_shared<PrependNormalizer>();
  n.at("prepend");
  r->prefix = n.string("prepend", "");
  return r;
}

}  // namespace lathe::tokenizer::detail
