// Fuse: the tokens joined into one.

#include "registry.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct FuseDecoder final : Decoder {
  void decode(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
  ojson to_json() const override { return {{"type", "Fuse"}}; }
};

}  // namespace

std::shared_ptr<const Decoder> read_fuse_decoder(const Node&) { return std::make_shared<FuseDecoder>(); }

}  // namespace lathe::tokenizer::detail
