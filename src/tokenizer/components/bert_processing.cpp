// BertProcessing: [CLS] A [SEP] (B [SEP]), type ids 0 then 1. RobertaProcessing: <s> A </s>
// (</s> B </s>), type ids all 0.

#include "registry.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct BertStylePostProcessor final : PostProcessor {
  bool roberta = false;
  std::pair<std::string, int32_t> sep, cls;
  bool trim_offsets = true, add_prefix_space = true;  // RoBERTa's offset settings, kept for the file
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    PairEncoding e;
    e.ids.push_back(cls.second);
    e.ids.insert(e.ids.end(), a.begin(), a.end());
    e.ids.push_back(sep.second);
    e.type_ids.assign(e.ids.size(), 0);
    if (b) {
      if (roberta) e.ids.push_back(sep.second);
      e.ids.insert(e.ids.end(), b->begin(), b->end());
      e.ids.push_back(sep.second);
      e.type_ids.resize(e.ids.size(), roberta ? 0 : 1);
    }
    return e;
  }
  ojson to_json() const override {
    ojson j = {{"type", roberta ? "RobertaProcessing" : "BertProcessing"},
               {"sep", {sep.first, sep.second}},
               {"cls", {cls.first, cls.second}}};
    if (roberta) {
      j["trim_offsets"] = trim_offsets;
      j["add_prefix_space"] = add_prefix_space;
    }
    return j;
  }
};

/// A [token, id] field whose id is the token's in the vocabulary.
std::pair<std::string, int32_t> read_token(const Node& n, const char* key) {
  const Node p = n.at(key);
  if (!p.j.is_array() || p.j.size() != 2 || !p.j[0].is_string() || !p.j[1].is_number_integer())
    p.fail("expected [token, id]");
  std::pair<std::string, int32_t> out{p.j[0].get<std::string>(), p.j[1].get<int32_t>()};
  if (n.token_id(out.first) != out.second)
    p.fail("'" + out.first + "' is not token " + std::to_string(out.second) + " of the vocabulary");
  return out;
}

std::shared_ptr<const PostProcessor> read_bert_style(const Node& n, bool roberta) {
  auto r = std::make_shared<BertStylePostProcessor>();
  r->roberta = roberta;
  r->sep = read_token(n, "sep");
  r->cls = read_token(n, "cls");
  r->trim_offsets = n.boolean("trim_offsets", true);
  r->add_prefix_space = n.boolean("add_prefix_space", true);
  return r;
}

}  // namespace

std::shared_ptr<const PostProcessor> read_bert_post_processor(const Node& n) { return read_bert_style(n, false); }

std::shared_ptr<const PostProcessor> read_roberta_post_processor(const Node& n) { return read_bert_style(n, true); }

}  // namespace lathe::tokenizer::detail
