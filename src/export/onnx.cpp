// ONNX graphs of GPT and BERT, and writing them.

#include "lathe/export/onnx.hpp"

#include <array>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "lathe/core/enum_table.hpp"
#include "lathe/core/error.hpp"
#include "lathe/export/graph.hpp"
#include "lathe/export/modules.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"
#include "lathe/nn/rotary.hpp"

namespace lathe::export_ {
namespace fs = std::filesystem;
namespace {

constexpr double kLowest = std::numeric_limits<float>::lowest();

struct Axes {
  Dim batch;
  explicit Axes(const OnnxOptions& o) : batch(o.dynamic_axes ? Dim("batch_size") : Dim(int64_t{1})) {}
};

std::string shape_dim(Graph& g, const std::string& x, int64_t axis) {
  return g.op("Gather", {g.op("Shape", {x}), g.int_scalar(axis)}, {{"axis", int64_t{0}}});
}

/// The additive causal + padding mask (B, 1, T, P + T): query i (absolute position P + i) sees
/// key j when j <= P + i, j > P + i - `window` (window > 0) and key j is real, and always itself
/// (as lathe's attention does).
std::string causal_mask(Graph& g, const std::string& ids, const std::string& attention_mask, int64_t window) {
  Graph::Scope s(g, "mask");
  const auto t = shape_dim(g, ids, 1);
  const auto total = shape_dim(g, attention_mask, 1);
  const auto past = g.op("Sub", {total, t});
  const auto keys = g.op("Unsqueeze", {g.op("Range", {g.int_scalar(0), total, g.int_scalar(1)}), g.ints({0})});
  const auto queries = g.op("Unsqueeze", {g.op("Range", {past, total, g.int_scalar(1)}), g.ints({1})});
  auto causal = g.op("LessOrEqual", {keys, queries});  // (T, P + T)
  if (window > 0)
    causal = g.op("And", {causal, g.op("Greater", {keys, g.op("Sub", {queries, g.int_scalar(window)})})});
  const auto self = g.op("Equal", {keys, queries});
  const auto real = g.op("Unsqueeze", {g.op("Cast", {attention_mask}, {{"to", int64_t{9}}}), g.ints({1, 2})});
  const auto keep = g.op("Or", {g.op("And", {real, causal}), self});  // (B, 1, T, P + T)
  return g.op("Where", {keep, g.scalar(0.0), g.scalar(kLowest)});
}

/// (1 - mask) * lowest as (B, 1, 1, T): padding keys are never attended to.
std::string padding_mask(Graph& g, const std::string& attention_mask) {
  Graph::Scope s(g, "mask");
  const auto m = g.op("Cast", {attention_mask}, {{"to", int64_t{1}}});
  const auto add = g.op("Mul", {g.op("Sub", {g.scalar(1.0), m}), g.scalar(kLowest)});
  return g.op("Unsqueeze", {add, g.ints({1, 2})});
}

std::map<std::string, std::string> metadata(const models::AnyModel& model, const OnnxOptions& o) {
  auto m = o.metadata;
  m["lathe.kind"] = model.kind_name();
  // A classifier's outputs mean nothing without their names: as transformers' config.json has them.
  if (!model.labels.empty()) {
    nlohmann::json id2label = nlohmann::json::object();
    for (std::size_t i = 0; i < model.labels.size(); ++i) id2label[std::to_string(i)] = model.labels[i];
    m["id2label"] = id2label.dump();
  }
  return m;
}

/// Why a GPT of options `o` cannot have the GroupQueryAttention graph (a sliding window; heads
/// whose width is not a multiple of 8, or of 16 with rotary, as ONNX Runtime's kernel needs);
/// empty when it can.
std::string group_query_problem(const models::ModelOptions& o) {
  if (o.sliding_window > 0 && o.sliding_window < o.max_seq_len)
    return fmt::format("this model attends within a sliding window of {} tokens, which lathe writes with standard "
                       "ops only",
                       o.sliding_window);
  if (o.head_dim() % 8 != 0)
    return fmt::format("ONNX Runtime's GroupQueryAttention takes heads whose width is a multiple of 8; this model's "
                       "is {}",
                       o.head_dim());
  if (o.position == nn::Position::Rope && o.head_dim() % 16 != 0)
    return fmt::format("ONNX Runtime's GroupQueryAttention rotates heads whose width is a multiple of 16; this "
                       "model's is {}",
                       o.head_dim());
  return {};
}

/// GroupQueryAttention's inputs: each row's last real position (its real tokens first) and the
/// total length from the attention mask, and the rotary tables of every position.
void group_query_inputs(Graph& g, const models::ModelOptions& opt, const std::string& attention_mask,
                        AttentionValues& ctx) {
  if (const auto problem = group_query_problem(opt); !problem.empty())
    throw Error("export.onnx_attention: group_query: " + problem + " (onnx_attention: standard writes it)");
  Graph::Scope s(g, "group_query");
  const auto real = g.op("ReduceSum", {attention_mask, g.ints({1})}, {{"keepdims", int64_t{0}}});
  ctx.seqlens_k = g.op("Cast", {g.op("Sub", {real, g.int_scalar(1)})}, {{"to", int64_t{6}}});
  ctx.total_length = g.op("Cast", {shape_dim(g, attention_mask, 1)}, {{"to", int64_t{6}}});
  if (opt.position == nn::Position::Learned) return;
  const auto inv_freq = nn::rotary_inv_freq(opt.head_dim(), opt.rotary()).to(at::kFloat);
  const auto angles = at::outer(at::arange(opt.max_seq_len, at::kFloat), inv_freq);  // (max_seq_len, d / 2)
  ctx.cos_cache = g.initializer("cos_cache", angles.cos());
  ctx.sin_cache = g.initializer("sin_cache", angles.sin());
}

OnnxGraph gpt_graph(models::GptImpl& gpt, const OnnxOptions& o, bool with_past,
                    const std::map<std::string, std::string>& meta) {
  const auto& opt = gpt.options;
  const Axes axes(o);
  const int64_t kv = opt.kv_heads(), d = opt.head_dim();
  Graph g(with_past ? "gpt_decoder_with_past" : "gpt", o.opset);
  const char* total = with_past ? "total_sequence_length" : "sequence_length";
  const auto ids = g.input("input_ids", Elem::Int64, {axes.batch, "sequence_length"});
  const auto attention_mask = g.input("attention_mask", Elem::Int64, {axes.batch, total});
  const auto position_ids = g.input("position_ids", Elem::Int64, {axes.batch, "sequence_length"});
  std::vector<std::pair<std::string, std::string>> past;
  if (with_past)
    for (int64_t i = 0; i < opt.n_layer; ++i) {
      const std::vector<Dim> dims{axes.batch, kv, "past_sequence_length", d};
      auto key = g.input(fmt::format("past_key_values.{}.key", i), Elem::Float, dims);
      past.emplace_back(key, g.input(fmt::format("past_key_values.{}.value", i), Elem::Float, dims));
    }

  AttentionValues ctx;
  const bool fused = with_past && o.attention == OnnxAttention::GroupQuery;
  if (fused) group_query_inputs(g, opt, attention_mask, ctx);
  // The windowed layers' mask, and the others' where some layers have no window (Gemma 2).
  const auto windowed_mask = fused ? std::string() : causal_mask(g, ids, attention_mask, opt.sliding_window);
  const auto full_mask = !fused && opt.sliding_window > 0 && opt.sliding_window_pattern > 0
                             ? causal_mask(g, ids, attention_mask, 0)
                             : windowed_mask;
  std::string x;
  {
    Graph::Scope s(g, "wte");
    x = emit(g, *gpt.wte, ids);
    if (opt.scale_embeddings) x = g.op("Mul", {x, g.scalar(std::sqrt(static_cast<double>(opt.d_model)))});
  }
  if (gpt.wpe) {
    Graph::Scope s(g, "wpe");
    x = g.op("Add", {x, emit(g, *gpt.wpe, position_ids)});
  } else if (!fused) {
    Graph::Scope s(g, "rotary");
    const auto inv_freq = g.initializer("inv_freq", nn::rotary_inv_freq(d, opt.rotary()));
    const auto pos = g.op("Unsqueeze", {g.op("Cast", {position_ids}, {{"to", int64_t{1}}}), g.ints({-1})});
    const auto freqs = g.op("Mul", {pos, inv_freq});  // (B, T, d / 2)
    const auto emb = g.op("Unsqueeze", {g.op("Concat", {freqs, freqs}, {{"axis", int64_t{-1}}}), g.ints({1})});
    ctx.cos = g.op("Cos", {emb});  // (B, 1, T, d)
    ctx.sin = g.op("Sin", {emb});
  }
  std::vector<std::pair<std::string, std::string>> present;
  for (std::size_t i = 0; i < gpt.blocks->size(); ++i) {
    Graph::Scope s(g, fmt::format("blocks.{}", i));
    if (with_past) std::tie(ctx.past_key, ctx.past_value) = past[i];
    ctx.mask = opt.layer_window(static_cast<int64_t>(i)) > 0 ? windowed_mask : full_mask;
    auto out = emit(g, *gpt.blocks[i]->as<nn::Block>(), x, ctx);
    x = out.y;
    present.emplace_back(out.present_key, out.present_value);
  }
  {
    Graph::Scope s(g, "ln_f");
    x = emit(g, *gpt.ln_f, x);
  }
  std::string logits;
  {
    Graph::Scope s(g, gpt.lm_head ? "lm_head" : "wte");
    logits = gpt.lm_head ? emit(g, *gpt.lm_head, x) : emit_tied_head(g, gpt.wte->weight, {}, x);
  }
  if (opt.logit_softcap > 0)
    logits = g.op("Mul", {g.op("Tanh", {g.op("Div", {logits, g.scalar(opt.logit_softcap)})}),
                          g.scalar(opt.logit_softcap)});
  g.output(logits, "logits", Elem::Float, {axes.batch, "sequence_length", opt.vocab_size});
  if (with_past)
    for (int64_t i = 0; i < opt.n_layer; ++i) {
      const std::vector<Dim> dims{axes.batch, kv, "total_sequence_length", d};
      g.output(present[i].first, fmt::format("present.{}.key", i), Elem::Float, dims);
      g.output(present[i].second, fmt::format("present.{}.value", i), Elem::Float, dims);
    }
  return {with_past ? "decoder_with_past_model.onnx" : "model.onnx", std::shared_ptr<onnx::ModelProto>(g.finish(meta))};
}

/// The encoder: embeddings, norm, layers -> (B, T, d_model).
std::string bert_encoder(Graph& g, models::BertModelImpl& bert, const std::string& ids, const std::string& mask,
                         const std::string& types) {
  std::string x;
  {
    Graph::Scope s(g, "bert");
    std::string words, positions, segments;
    {
      Graph::Scope e(g, "word_embeddings");
      words = emit(g, *bert.word_embeddings, ids);
    }
    {
      Graph::Scope e(g, "position_embeddings");
      const auto range = g.op("Range", {g.int_scalar(0), shape_dim(g, ids, 1), g.int_scalar(1)});
      positions = emit(g, *bert.position_embeddings, range);  // (T, C), broadcast over the batch
    }
    {
      Graph::Scope e(g, "token_type_embeddings");
      segments = emit(g, *bert.token_type_embeddings, types);
    }
    x = g.op("Add", {g.op("Add", {words, positions}), segments});
    {
      Graph::Scope e(g, "embeddings_norm");
      x = emit(g, *bert.embeddings_norm, x);
    }
  }
  AttentionValues ctx;
  ctx.mask = padding_mask(g, mask);
  for (std::size_t i = 0; i < bert.layers->size(); ++i) {
    Graph::Scope s(g, fmt::format("bert/layers.{}", i));
    x = emit(g, *bert.layers[i]->as<nn::Block>(), x, ctx).y;
  }
  return x;
}

/// The masked-LM head: the logits of every position, (B, T, vocab_size).
void mlm_logits(Graph& g, const models::AnyModel& model, const std::string& hidden, const Axes& axes) {
  auto mlm_holder = model.as<models::BertForMaskedLM>();
  auto& mlm = *mlm_holder;
  const auto& opt = mlm.bert->options;
  std::string h;
  {
    Graph::Scope s(g, "mlm_dense");
    h = emit(g, *mlm.mlm_dense, hidden);
  }
  h = emit_gelu(g, opt.activation, h);
  {
    Graph::Scope s(g, "mlm_norm");
    h = emit(g, *mlm.mlm_norm, h);
  }
  Graph::Scope s(g, "mlm_decoder");
  g.output(emit_tied_head(g, mlm.bert->word_embeddings->weight, mlm.mlm_bias, h), "logits", Elem::Float,
           {axes.batch, "sequence_length", opt.vocab_size});
}

/// The classification head on the pooled first token: (B, num_labels).
void classifier_logits(Graph& g, const models::AnyModel& model, const std::string& hidden, const Axes& axes) {
  auto cls_holder = model.as<models::BertForSequenceClassification>();
  auto& cls = *cls_holder;
  std::string pooled;
  {
    Graph::Scope s(g, "bert/pooler");
    const auto first = g.op("Gather", {hidden, g.int_scalar(0)}, {{"axis", int64_t{1}}});  // (B, C)
    pooled = g.op("Tanh", {emit(g, *cls.bert->pooler, first)});
  }
  Graph::Scope s(g, "classifier");
  g.output(emit(g, *cls.classifier, pooled), "logits", Elem::Float, {axes.batch, cls.bert->options.num_labels});
}

using HeadEmitter = void (*)(Graph&, const models::AnyModel&, const std::string& hidden, const Axes&);

OnnxGraph bert_graph(const models::AnyModel& model, models::BertModel bert, const OnnxOptions& o, HeadEmitter head) {
  const Axes axes(o);
  Graph g(model.kind_name(), o.opset);
  const std::vector<Dim> dims{axes.batch, "sequence_length"};
  const auto ids = g.input("input_ids", Elem::Int64, dims);
  const auto mask = g.input("attention_mask", Elem::Int64, dims);
  const auto types = g.input("token_type_ids", Elem::Int64, dims);
  const auto hidden = bert_encoder(g, *bert, ids, mask, types);
  head(g, model, hidden, axes);
  g.output(hidden, "last_hidden_state", Elem::Float, {axes.batch, "sequence_length", bert->options.d_model});
  return {"model.onnx", std::shared_ptr<onnx::ModelProto>(g.finish(metadata(model, o)))};
}

/// The sentence embedding of options.pooling (and .normalize) over the real tokens, (B, C).
std::string sentence_embedding(Graph& g, const std::string& hidden, const std::string& mask, const OnnxOptions& o) {
  Graph::Scope s(g, "pooling");
  std::string e;
  if (o.pooling == Pooling::Cls) {
    e = g.op("Gather", {hidden, g.int_scalar(0)}, {{"axis", int64_t{1}}});
  } else {  // sentence-transformers' mean: sum(h * mask) / max(sum(mask), 1e-9)
    const auto m = g.op("Unsqueeze", {g.op("Cast", {mask}, {{"to", int64_t{1}}}), g.ints({-1})});  // (B, T, 1)
    const auto sum = g.op("ReduceSum", {g.op("Mul", {hidden, m}), g.ints({1})}, {{"keepdims", int64_t{0}}});
    const auto count = g.op("ReduceSum", {m, g.ints({1})}, {{"keepdims", int64_t{0}}});  // (B, 1)
    e = g.op("Div", {sum, g.op("Max", {count, g.scalar(1e-9)})});
  }
  if (!o.normalize) return e;
  // torch.nn.functional.normalize: x / max(||x||_2, 1e-12)
  const auto norm = g.op("Sqrt", {g.op("ReduceSum", {g.op("Mul", {e, e}), g.ints({1})}, {{"keepdims", int64_t{1}}})});
  return g.op("Div", {e, g.op("Max", {norm, g.scalar(1e-12)})});
}

/// A BERT without a head: last_hidden_state, pooler_output where it has a pooler, and
/// sentence_embedding when options.pooling asks for one.
std::vector<OnnxGraph> encoder_graphs(const models::AnyModel& model, const OnnxOptions& o) {
  auto bert = model.as<models::BertModel>();
  const Axes axes(o);
  Graph g(model.kind_name(), o.opset);
  const std::vector<Dim> dims{axes.batch, "sequence_length"};
  const auto ids = g.input("input_ids", Elem::Int64, dims);
  const auto mask = g.input("attention_mask", Elem::Int64, dims);
  const auto types = g.input("token_type_ids", Elem::Int64, dims);
  const auto hidden = bert_encoder(g, *bert, ids, mask, types);
  const auto d = bert->options.d_model;
  g.output(hidden, "last_hidden_state", Elem::Float, {axes.batch, "sequence_length", d});
  if (bert->pooler) {
    Graph::Scope s(g, "bert/pooler");
    const auto first = g.op("Gather", {hidden, g.int_scalar(0)}, {{"axis", int64_t{1}}});
    g.output(g.op("Tanh", {emit(g, *bert->pooler, first)}), "pooler_output", Elem::Float, {axes.batch, d});
  }
  if (o.pooling != Pooling::None)
    g.output(sentence_embedding(g, hidden, mask, o), "sentence_embedding", Elem::Float, {axes.batch, d});
  return {{"model.onnx", std::shared_ptr<onnx::ModelProto>(g.finish(metadata(model, o)))}};
}

std::vector<OnnxGraph> gpt_graphs(const models::AnyModel& model, const OnnxOptions& o) {
  auto gpt = model.as<models::Gpt>();
  return {gpt_graph(*gpt, o, /*with_past=*/false, metadata(model, o)),
          gpt_graph(*gpt, o, /*with_past=*/true, metadata(model, o))};
}
std::vector<OnnxGraph> mlm_graphs(const models::AnyModel& model, const OnnxOptions& o) {
  return {bert_graph(model, model.as<models::BertForMaskedLM>()->bert, o, mlm_logits)};
}
std::vector<OnnxGraph> classifier_graphs(const models::AnyModel& model, const OnnxOptions& o) {
  return {bert_graph(model, model.as<models::BertForSequenceClassification>()->bert, o, classifier_logits)};
}

/// The graphs of each model kind: a row per kind, in ModelKind's spelling order (a new kind does
/// not build until it has its row).
struct OnnxKind {
  models::ModelKind kind;
  std::vector<OnnxGraph> (*graphs)(const models::AnyModel&, const OnnxOptions&);
};
constexpr std::array kOnnxKinds{
    OnnxKind{models::ModelKind::Gpt, gpt_graphs},
    OnnxKind{models::ModelKind::BertMaskedLm, mlm_graphs},
    OnnxKind{models::ModelKind::BertClassifier, classifier_graphs},
    OnnxKind{models::ModelKind::BertEncoder, encoder_graphs},
};
static_assert(models::covers_every_kind(kOnnxKinds),
              "src/export/onnx.cpp: kOnnxKinds needs one row per models::ModelKind, in the order of its spelling "
              "table (include/lathe/models/kind.hpp): say which graphs export the new kind");

int64_t weight_bytes(const onnx::ModelProto& m) {
  int64_t n = 0;
  for (const auto& t : m.graph().initializer()) n += static_cast<int64_t>(t.raw_data().size());
  return n;
}

}  // namespace

namespace {

/// What the ONNX graphs do with each model option: a row per option, in models::visit's order
/// (a new option does not build until it has its row). `computed` says whether the graphs
/// compute the model's value of the option; a value they do not is refused naming the key,
/// never dropped from the graph.
struct OnnxOption {
  std::string_view key;
  bool (*computed)(const models::ModelOptions&);
};
constexpr bool every_value(const models::ModelOptions&) { return true; }
constexpr std::array kOnnxOptions{
    OnnxOption{"n_layer", every_value},
    OnnxOption{"n_head", every_value},
    OnnxOption{"n_kv_head", every_value},  // key/value heads repeated to the query heads
    OnnxOption{"d_model", every_value},
    OnnxOption{"head_dim", every_value},
    OnnxOption{"d_ff", every_value},
    OnnxOption{"max_seq_len", every_value},  // the learned position table's rows; rope has no limit
    OnnxOption{"vocab_size", every_value},
    OnnxOption{"dropout", every_value},       // inference graphs: dropout is the identity
    OnnxOption{"attn_dropout", every_value},  // likewise
    OnnxOption{"bias", every_value},
    OnnxOption{"qkv_bias", every_value},  // the projection's bias, as any bias
    OnnxOption{"norm", every_value},  // LayerNormalization; RMSNorm as its operators (offset: Add 1)
    OnnxOption{"norm_eps", every_value},
    OnnxOption{"activation", every_value},  // emit_gelu; gated: SiLU as Sigmoid * Mul, or emit_gelu
    OnnxOption{"position", every_value},    // learned: a Gather; rope: rotated halves from inv_freq
    OnnxOption{"rope_theta", every_value},
    OnnxOption{"rope_scaling", every_value},  // all in the inv_freq initializer
    OnnxOption{"rope_factor", every_value},
    OnnxOption{"rope_low_freq_factor", every_value},
    OnnxOption{"rope_high_freq_factor", every_value},
    OnnxOption{"rope_original_max_seq_len", every_value},
    OnnxOption{"sliding_window", every_value},  // in the causal mask
    OnnxOption{"sliding_window_pattern", every_value},  // a second mask without the window
    OnnxOption{"attn_scale_dim", every_value},          // the scores' Mul
    OnnxOption{"attn_softcap", every_value},            // Div, Tanh, Mul before the mask
    OnnxOption{"logit_softcap", every_value},           // likewise on the logits
    OnnxOption{"sandwich_norm", every_value},           // the blocks' post_ln_1 and post_ln_2
    OnnxOption{"tie_embeddings", every_value},
    OnnxOption{"scale_embeddings", every_value},  // a Mul after the Gather
    OnnxOption{"init_std", every_value},  // training only
    OnnxOption{"type_vocab_size", every_value},
    OnnxOption{"num_labels", every_value},
    OnnxOption{"pad_token_id", every_value},  // training only (the row that gets no gradient)
    OnnxOption{"pooler", every_value},        // bert_encoder: pooler_output when it has one
};
static_assert(models::covers_every_option(kOnnxOptions),
              "src/export/onnx.cpp: kOnnxOptions needs a row for every model option, in models::visit's order: a "
              "model option was added, removed or renamed; say whether the ONNX graphs compute each of its values");

/// Throws naming the first option whose value the graphs do not compute.
void check_options_computed(const models::ModelOptions& o) {
  for (const auto& row : kOnnxOptions)
    if (!row.computed(o))
      throw Error(fmt::format("onnx export: model.{} = {} is not computed by lathe's ONNX graphs; export this model "
                              "to Hugging Face format (export.format: hf) or to lathe's model file instead",
                              row.key, models::option_value(o, row.key)));
}

}  // namespace

std::vector<models::OptionProblem> OnnxOptions::problems() const {
  std::vector<models::OptionProblem> out;
  if (opset < 17 || opset > max_opset())
    out.push_back({{"opset"}, fmt::format("{} is outside 17 (LayerNormalization) .. {} (the newest this build's onnx "
                                          "library checks)",
                                          opset, max_opset())});
  return out;
}

OnnxExport export_onnx(const models::AnyModel& model, const OnnxOptions& options) {
  if (const auto p = options.problems(); !p.empty())
    throw Error("onnx export: " + p.front().keys.front() + ": " + p.front().message);
  check_options_computed(model.options());
  at::NoGradGuard no_grad;
  OnnxExport out;
  std::vector<const nn::QuantizedWeight*> quantized;
  for (const auto& [path, linear] : nn::linear_layers(*model.module()))
    if (const auto* q = linear->quantized()) quantized.push_back(q);
  for (auto& note : quantized_notes(quantized)) out.notes.push_back(std::move(note));
  for (const auto& row : kOnnxKinds)
    if (row.kind == model.kind())
      for (auto& graph : row.graphs(model, options)) out.graphs.push_back(std::move(graph));
  return out;
}

std::vector<fs::path> write_onnx(const OnnxExport& exported, const fs::path& dir, int64_t external_data_bytes) {
  std::vector<fs::path> written;
  fs::create_directories(dir);
  // Every name is checked before the first file is written: a foreign one leaves the directory as it was.
  for (const auto& graph : exported.graphs) {
    io::check_claimable(dir / graph.file);
    if (weight_bytes(*graph.model) > external_data_bytes) io::check_claimable(dir / (graph.file + ".data"));
  }
  for (const auto& graph : exported.graphs) {
    const auto file = dir / graph.file;
    const auto data_file = fs::path(file.string() + ".data");
    io::claim(file);
    if (weight_bytes(*graph.model) <= external_data_bytes) {
      io::write_file_atomic(file, graph.model->SerializeAsString());
      io::remove_owned(data_file);
      written.push_back(file);
      continue;
    }
    // External data: every initializer of 1 KiB or more moves to <file>.data at a 64-byte
    // aligned offset; the graph keeps its location, offset and length.
    io::claim(data_file);
    onnx::ModelProto copy = *graph.model;
    std::string data;
    for (auto& t : *copy.mutable_graph()->mutable_initializer()) {
      if (t.raw_data().size() < 1024) continue;
      data.resize((data.size() + 63) / 64 * 64, '\0');
      const auto offset = data.size();
      data += t.raw_data();
      t.clear_raw_data();
      t.set_data_location(onnx::TensorProto::EXTERNAL);
      auto add = [&](const std::string& key, const std::string& value) {
        auto* entry = t.add_external_data();
        entry->set_key(key);
        entry->set_value(value);
      };
      add("location", data_file.filename().string());
      add("offset", std::to_string(offset));
      add("length", std::to_string(data.size() - offset));
    }
    io::write_file_atomic(data_file, data);
    io::write_file_atomic(file, copy.SerializeAsString());
    written.push_back(data_file);
    written.push_back(file);
  }
  return written;
}

}  // namespace lathe::export_
