// ONNX nodes of the nn modules.

#include "lathe/export/modules.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/core/error.hpp"

namespace lathe::export_ {
namespace {

constexpr const char* kMicrosoft = "com.microsoft";

std::string add_bias(Graph& g, const std::string& y, const at::Tensor& bias) {
  if (!bias.defined()) return y;
  return g.op("Add", {y, g.weight("bias", bias)});
}

/// int8 codes (out, in), per-channel scales (out): the int32 product of the uint8 dynamic
/// activation codes and the weight codes, scaled by both scales.
std::string int8_dynamic(Graph& g, const nn::QuantizedWeight& q, const std::string& x) {
  const auto codes = g.initializer("weight_q_t", q.codes().t().contiguous());  // (in, out) int8
  const auto scales = g.initializer("weight_scale", q.scales().to(at::kFloat));  // (out)
  const auto xq = g.ops("DynamicQuantizeLinear", {x}, 3);  // codes, scale, zero point
  const auto product = g.op("MatMulInteger", {xq[0], codes, xq[2]});
  const auto as_float = g.op("Cast", {product}, {{"to", int64_t{1}}});
  const auto scale = g.op("Mul", {xq[1], scales});
  return g.op("Mul", {as_float, scale});
}

/// Per-channel int8 weights as com.microsoft MatMulNBits (8 bits, codes shifted by 128 to
/// uint8 with zero point 128, the channel's scale repeated over its blocks), float32 compute
/// (accuracy_level 1). DequantizeLinear + MatMul would be rewritten by ONNX Runtime's optimiser
/// into an 8-bit MatMulNBits that quantizes the activations (its default accuracy level 4), a
/// different function from the weight-only scheme's. The block is the largest power of two
/// from 16 to 256 that divides the inputs, else 16 with the last block padded by zero weights.
std::string int8_weight_only(Graph& g, const nn::QuantizedWeight& q, const std::string& x) {
  const int64_t out = q.out(), in = q.in();
  int64_t block = 16;
  for (int64_t b = 256; b > 16; b /= 2)
    if (in % b == 0) {
      block = b;
      break;
    }
  const int64_t blocks = (in + block - 1) / block;
  auto codes = at::full({out, blocks * block}, 128, at::kByte);
  codes.narrow(1, 0, in).copy_((q.codes().to(at::kShort) + 128).to(at::kByte));
  const std::vector<std::string> inputs{
      x, g.initializer("weight_q8", codes.view({out, blocks, block})),
      g.initializer("weight_scale", q.scales().to(at::kFloat).unsqueeze(1).expand({out, blocks}).reshape({-1})),
      g.initializer("weight_zero_point", at::full({out * blocks}, 128, at::kByte))};
  const std::vector<Attr> attrs{{"K", in}, {"N", out}, {"bits", int64_t{8}}, {"block_size", block},
                                {"accuracy_level", int64_t{1}}};
  return g.op("MatMulNBits", inputs, attrs, kMicrosoft);
}

/// MatMulNBits dequantizes (q - zero_point) * scale per block; lathe's int4 grid is
/// (q - 8) * scale + zero, so the float zero point is 8 - zero / scale.
std::string int4_weight_only(Graph& g, const nn::QuantizedWeight& q, const std::string& x) {
  const int64_t out = q.out(), in = q.in(), block = q.grid().group_size;
  if (in % block != 0)
    throw Error(fmt::format("onnx: an int4 layer of {} inputs is not a whole number of groups of {}", in, block));
  const int64_t blocks = in / block;
  const auto codes = q.codes().to(at::kByte).view({out, blocks, block / 2, 2});
  const auto packed = (codes.select(-1, 0) + codes.select(-1, 1) * 16).contiguous();  // low nibble first
  const auto scales = q.scales().to(at::kFloat).contiguous();                            // (out, blocks)
  auto zero_points = (8.0 - q.zeros().to(at::kFloat) / scales).to(at::kFloat);
  zero_points = at::where(scales == 0, at::full_like(zero_points, 8.0), zero_points).contiguous();
  const std::vector<std::string> inputs{x, g.initializer("weight_q4", packed),
                                        g.initializer("weight_scale", scales.view({-1})),
                                        g.initializer("weight_zero_point", zero_points.view({-1}))};
  const std::vector<Attr> attrs{{"K", in}, {"N", out}, {"bits", int64_t{4}}, {"block_size", block},
                                {"accuracy_level", int64_t{1}}};
  return g.op("MatMulNBits", inputs, attrs, kMicrosoft);
}

/// The ONNX form of each quantization scheme: its emitter, or none (the export then refuses
/// its layers, naming the scheme), and what the graph computes differently from lathe's kernel.
struct OnnxQuantRow {
  nn::QuantScheme scheme;
  std::string (*emit)(Graph& g, const nn::QuantizedWeight& q, const std::string& x);
  std::string_view note;  // "" where the graph computes what lathe does
};

constexpr std::array kOnnxQuant{
    OnnxQuantRow{nn::QuantScheme::Int8Dynamic, int8_dynamic,
                 "int8_dynamic layers quantize their input per tensor in ONNX (DynamicQuantizeLinear, asymmetric "
                 "uint8) where lathe quantizes per token"},
    OnnxQuantRow{nn::QuantScheme::Int8WeightOnly, int8_weight_only, ""},
    OnnxQuantRow{nn::QuantScheme::Int4WeightOnly, int4_weight_only, ""},
};
static_assert(nn::covers_every_scheme(kOnnxQuant),
              "src/export/modules.cpp: kOnnxQuant needs one row per nn::QuantScheme, in the order of its spelling "
              "table: give the new scheme its ONNX emitter, or nullptr to refuse its layers");

const OnnxQuantRow& onnx_quant(nn::QuantScheme scheme) {
  for (const auto& row : kOnnxQuant)
    if (row.scheme == scheme) return row;
  throw std::logic_error(fmt::format("src/export/modules.cpp: no ONNX row for {}", enum_name(scheme)));
}

/// "int8_dynamic, int8_weight_only, ...": the methods whose layers export.
std::string onnx_quant_methods() {
  std::string out;
  for (const auto& row : kOnnxQuant)
    if (row.emit) out += (out.empty() ? "" : ", ") + std::string(enum_name(row.scheme));
  return out;
}

/// Splits the last axis of x into `sizes`.
std::vector<std::string> split_last(Graph& g, const std::string& x, const std::vector<int64_t>& sizes) {
  return g.ops("Split", {x, g.ints(sizes)}, static_cast<int>(sizes.size()), {{"axis", int64_t{-1}}});
}

/// (B, T, heads * D) -> (B, heads, T, D)
std::string heads_first(Graph& g, const std::string& x, int64_t heads, int64_t d) {
  const auto r = g.op("Reshape", {x, g.ints({0, 0, heads, d})});
  return g.op("Transpose", {r}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
}

/// x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1) over the halves of the last axis.
std::string rotary(Graph& g, const std::string& x, int64_t d, const AttentionValues& ctx) {
  const auto halves = split_last(g, x, {d / 2, d / 2});
  const auto rotated = g.op("Concat", {g.op("Neg", {halves[1]}), halves[0]}, {{"axis", int64_t{-1}}});
  return g.op("Add", {g.op("Mul", {x, ctx.cos}), g.op("Mul", {rotated, ctx.sin})});
}

/// (B, kv, T, D) -> (B, kv * groups, T, D), each key/value head repeated for its query group.
std::string repeat_kv(Graph& g, const std::string& x, int64_t kv, int64_t groups, int64_t d) {
  if (groups == 1) return x;
  const auto u = g.op("Unsqueeze", {x, g.ints({2})});                 // (B, kv, 1, T, D)
  const auto e = g.op("Expand", {u, g.ints({1, 1, groups, 1, 1})});  // (B, kv, groups, T, D)
  return g.op("Reshape", {e, g.ints({0, kv * groups, -1, d})});
}

}  // namespace

std::string emit(Graph& g, nn::LinearImpl& linear, const std::string& x) {
  std::string y;
  if (const auto* q = linear.quantized()) {
    const auto& row = onnx_quant(q->grid().scheme);
    if (!row.emit)
      throw Error(fmt::format("onnx export: quantize.method {} has no ONNX emitter; export the float model, or "
                              "quantize with a method that has one ({})",
                              enum_name(row.scheme), onnx_quant_methods()));
    y = row.emit(g, *q, x);
  } else {
    y = g.op("MatMul", {x, g.initializer("weight_t", linear.weight.t().contiguous())});
  }
  return add_bias(g, y, linear.bias);
}

std::vector<std::string> quantized_notes(const std::vector<const nn::QuantizedWeight*>& layers) {
  std::vector<std::string> out;
  const auto has = [&](auto pred) { return std::any_of(layers.begin(), layers.end(), [&](auto* q) { return pred(*q); }); };
  if (has([](const nn::QuantizedWeight& q) { return q.activations() == nn::QuantActivations::BFloat16; }))
    out.emplace_back("layers quantized with bfloat16 activations compute in float32 in the ONNX graph");
  for (const auto& row : kOnnxQuant)
    if (!row.note.empty() && has([&](const nn::QuantizedWeight& q) { return q.grid().scheme == row.scheme; }))
      out.emplace_back(row.note);
  return out;
}

std::string emit_tied_head(Graph& g, const at::Tensor& table, const at::Tensor& bias, const std::string& x) {
  const auto t = g.op("Transpose", {g.weight("weight", table)}, {{"perm", std::vector<int64_t>{1, 0}}});
  return add_bias(g, g.op("MatMul", {x, t}), bias);
}

std::string emit(Graph& g, nn::NormImpl& norm, const std::string& x) {
  const auto& o = norm.options;
  const auto w = g.weight("weight", norm.weight);
  if (o.kind == nn::NormKind::LayerNorm) {
    std::vector<std::string> in{x, w};
    if (norm.bias.defined()) in.push_back(g.weight("bias", norm.bias));
    return g.op("LayerNormalization", in, {{"axis", int64_t{-1}}, {"epsilon", o.eps}});
  }
  // x / sqrt(mean(x^2) + eps) * weight, or * (1 + weight) for rmsnorm_offset
  const auto sq = g.op("Pow", {x, g.scalar(2.0)});
  // ReduceMean takes its axes as an attribute up to opset 17 and as an input from 18.
  const auto mean = g.opset() < 18
                        ? g.op("ReduceMean", {sq}, {{"axes", std::vector<int64_t>{-1}}, {"keepdims", int64_t{1}}})
                        : g.op("ReduceMean", {sq, g.ints({-1})}, {{"keepdims", int64_t{1}}});
  const auto root = g.op("Sqrt", {g.op("Add", {mean, g.scalar(o.eps)})});
  const auto scale = o.kind == nn::NormKind::RmsNormOffset ? g.op("Add", {w, g.scalar(1.0)}) : w;
  return g.op("Mul", {g.op("Div", {x, root}), scale});
}

std::string emit_gelu(Graph& g, nn::Activation activation, const std::string& h) {
  if (activation == nn::Activation::Gelu) {
    // 0.5 * x * (1 + erf(x / sqrt(2)))
    const auto erf = g.op("Erf", {g.op("Div", {h, g.scalar(std::sqrt(2.0))})});
    return g.op("Mul", {g.op("Mul", {h, g.op("Add", {erf, g.scalar(1.0)})}), g.scalar(0.5)});
  }
  if (activation == nn::Activation::GeluTanh) {
    // 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
    const auto cube = g.op("Mul", {g.op("Pow", {h, g.scalar(3.0)}), g.scalar(0.044715)});
    const auto inner = g.op("Mul", {g.op("Add", {h, cube}), g.scalar(std::sqrt(2.0 / M_PI))});
    const auto t = g.op("Add", {g.op("Tanh", {inner}), g.scalar(1.0)});
    return g.op("Mul", {g.op("Mul", {h, g.scalar(0.5)}), t});
  }
  throw std::logic_error("emit_gelu: not a GELU");
}

std::string emit(Graph& g, nn::MlpImpl& mlp, const std::string& x) {
  std::string h;
  {
    Graph::Scope s(g, "fc");
    h = emit(g, *mlp.fc, x);
  }
  if (nn::gated(mlp.options.activation)) {
    const int64_t d_ff = mlp.options.d_ff;
    const auto gate_up = split_last(g, h, {d_ff, d_ff});
    const auto act = mlp.options.activation == nn::Activation::SwiGlu
                         ? g.op("Mul", {gate_up[0], g.op("Sigmoid", {gate_up[0]})})
                         : emit_gelu(g, mlp.options.activation == nn::Activation::GeGlu ? nn::Activation::Gelu
                                                                                        : nn::Activation::GeluTanh,
                                     gate_up[0]);
    h = g.op("Mul", {act, gate_up[1]});
  } else {
    h = emit_gelu(g, mlp.options.activation, h);
  }
  Graph::Scope s(g, "proj");
  return emit(g, *mlp.proj, h);
}

namespace {

/// Attention as one com.microsoft GroupQueryAttention node over the packed q, k, v projections.
AttentionOutputs emit_group_query(Graph& g, nn::AttentionImpl& attn, const std::string& qkv,
                                  const AttentionValues& ctx) {
  const auto& o = attn.options;
  std::vector<std::string> in{qkv, "", "", ctx.past_key, ctx.past_value, ctx.seqlens_k, ctx.total_length};
  if (!ctx.cos_cache.empty()) in.insert(in.end(), {ctx.cos_cache, ctx.sin_cache});
  std::vector<Attr> attrs{{"num_heads", o.n_head},
                          {"kv_num_heads", o.kv_heads()},
                          {"do_rotary", int64_t{ctx.cos_cache.empty() ? 0 : 1}},
                          {"rotary_interleaved", int64_t{0}}};
  if (o.scale > 0) attrs.push_back({"scale", o.scale});
  if (o.softcap > 0) attrs.push_back({"softcap", o.softcap});
  const auto outs = g.ops("GroupQueryAttention", in, 3, attrs, kMicrosoft);
  AttentionOutputs out;
  out.present_key = outs[1];
  out.present_value = outs[2];
  Graph::Scope s(g, "proj");
  out.y = emit(g, *attn.proj, outs[0]);
  return out;
}

}  // namespace

AttentionOutputs emit(Graph& g, nn::AttentionImpl& attn, const std::string& x, const AttentionValues& ctx) {
  const auto& o = attn.options;
  const int64_t H = o.n_head, Hkv = o.kv_heads(), D = o.head_dim();
  std::string qkv;
  {
    Graph::Scope s(g, "qkv");
    qkv = emit(g, *attn.qkv, x);
  }
  if (!ctx.seqlens_k.empty()) return emit_group_query(g, attn, qkv, ctx);
  const auto parts = split_last(g, qkv, {H * D, Hkv * D, Hkv * D});
  auto q = heads_first(g, parts[0], H, D);  // (B, H, T, D)
  auto k = heads_first(g, parts[1], Hkv, D);
  auto v = heads_first(g, parts[2], Hkv, D);
  if (!ctx.cos.empty()) {
    q = rotary(g, q, D, ctx);
    k = rotary(g, k, D, ctx);
  }
  AttentionOutputs out;
  if (!ctx.past_key.empty()) {
    k = g.op("Concat", {ctx.past_key, k}, {{"axis", int64_t{2}}});  // (B, Hkv, P + T, D)
    v = g.op("Concat", {ctx.past_value, v}, {{"axis", int64_t{2}}});
    out.present_key = k;
    out.present_value = v;
  }
  k = repeat_kv(g, k, Hkv, H / Hkv, D);
  v = repeat_kv(g, v, Hkv, H / Hkv, D);
  const auto kt = g.op("Transpose", {k}, {{"perm", std::vector<int64_t>{0, 1, 3, 2}}});
  auto scores = o.scale > 0 ? g.op("Mul", {g.op("MatMul", {q, kt}), g.scalar(o.scale)})
                            : g.op("Div", {g.op("MatMul", {q, kt}), g.scalar(std::sqrt(static_cast<double>(D)))});
  if (o.softcap > 0)  // softcap * tanh(s / softcap), before the mask
    scores = g.op("Mul", {g.op("Tanh", {g.op("Div", {scores, g.scalar(o.softcap)})}), g.scalar(o.softcap)});
  if (!ctx.mask.empty()) scores = g.op("Add", {scores, ctx.mask});
  const auto probs = g.op("Softmax", {scores}, {{"axis", int64_t{-1}}});
  const auto y = g.op("Transpose", {g.op("MatMul", {probs, v})}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  const auto merged = g.op("Reshape", {y, g.ints({0, 0, H * D})});
  Graph::Scope s(g, "proj");
  out.y = emit(g, *attn.proj, merged);
  return out;
}

AttentionOutputs emit(Graph& g, nn::BlockImpl& block, const std::string& x, const AttentionValues& ctx) {
  auto norm = [&](nn::Norm& n, const char* name, const std::string& in) {
    Graph::Scope s(g, name);
    return emit(g, *n, in);
  };
  auto attention = [&](const std::string& in) {
    Graph::Scope s(g, "attn");
    return emit(g, *block.attn, in, ctx);
  };
  auto mlp = [&](const std::string& in) {
    Graph::Scope s(g, "mlp");
    return emit(g, *block.mlp, in);
  };
  if (block.options.sandwich_norm) {
    auto a = attention(norm(block.ln_1, "ln_1", x));
    const auto h = g.op("Add", {x, norm(block.post_ln_1, "post_ln_1", a.y)});
    a.y = g.op("Add", {h, norm(block.post_ln_2, "post_ln_2", mlp(norm(block.ln_2, "ln_2", h)))});
    return a;
  }
  if (block.options.pre_norm) {
    auto a = attention(norm(block.ln_1, "ln_1", x));
    const auto h = g.op("Add", {x, a.y});
    a.y = g.op("Add", {h, mlp(norm(block.ln_2, "ln_2", h))});
    return a;
  }
  auto a = attention(x);
  const auto h = norm(block.ln_1, "ln_1", g.op("Add", {x, a.y}));
  a.y = norm(block.ln_2, "ln_2", g.op("Add", {h, mlp(h)}));
  return a;
}

std::string emit(Graph& g, nn::EmbeddingImpl& embedding, const std::string& ids) {
  return g.op("Gather", {g.weight("weight", embedding.weight), ids}, {{"axis", int64_t{0}}});
}

}  // namespace lathe::export_
