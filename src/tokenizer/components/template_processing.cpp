// TemplateProcessing: special tokens placed around the sequence(s) as the "single" and "pair"
// templates say, with the type id of each piece.

#include <algorithm>

#include "lathe/core/error.hpp"
#include "registry.hpp"

namespace lathe::tokenizer::detail {
namespace {

struct TemplatePiece {
  bool special = false;
  std::string id;  // "A"/"B" for sequences, the special token's name otherwise
  int32_t type_id = 0;
};

struct TemplatePostProcessor final : PostProcessor {
  std::vector<TemplatePiece> single, pair;
  std::vector<std::pair<std::string, std::vector<int32_t>>> specials;  // name -> ids, in file order
  ojson specials_json;

  const std::vector<int32_t>& special_ids(const std::string& name) const {
    for (const auto& [n, ids] : specials)
      if (n == name) return ids;
    throw Error("TemplateProcessing: special token '" + name + "' is not in special_tokens");
  }
  PairEncoding process(const std::vector<int32_t>& a, const std::vector<int32_t>* b) const override {
    PairEncoding e;
    for (const auto& p : b ? pair : single) {
      const std::vector<int32_t>& ids = p.special ? special_ids(p.id) : (p.id == "A" ? a : (b ? *b : a));
      e.ids.insert(e.ids.end(), ids.begin(), ids.end());
      e.type_ids.insert(e.type_ids.end(), ids.size(), p.type_id);
    }
    return e;
  }
  static ojson pieces_json(const std::vector<TemplatePiece>& ps) {
    ojson list = ojson::array();
    for (const auto& p : ps)
      list.push_back(p.special ? ojson{{"SpecialToken", {{"id", p.id}, {"type_id", p.type_id}}}}
                               : ojson{{"Sequence", {{"id", p.id}, {"type_id", p.type_id}}}});
    return list;
  }
  ojson to_json() const override {
    return {{"type", "TemplateProcessing"},
            {"single", pieces_json(single)},
            {"pair", pieces_json(pair)},
            {"special_tokens", specials_json}};
  }
};

std::vector<TemplatePiece> read_template(const Node& n, const char* key) {
  std::vector<TemplatePiece> out;
  if (!n.has(key)) return out;
  for (const auto& item : n.items(key)) {
    TemplatePiece p;
    const char* kind = item.j.contains("SpecialToken") ? "SpecialToken"
                       : item.j.contains("Sequence")   ? "Sequence"
                                                       : nullptr;
    if (!kind) item.fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    const Node body = item.at(kind);
    p.special = std::string(kind) == "SpecialToken";
    p.id = body.string("id", "");
    p.type_id = static_cast<int32_t>(body.integer("type_id", 0));
    if (!p.special && p.id != "A" && p.id != "B") body.fail("sequence id '" + p.id + "' is not A or B");
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

std::shared_ptr<const PostProcessor> read_template_post_processor(const Node& n) {
  auto r = std::make_shared<TemplatePostProcessor>();
  r->single = read_template(n, "single");
  r->pair = read_template(n, "pair");
  const Node st = n.at("special_tokens");
  if (!st.j.is_object()) st.fail("expected an object of token name -> {id, ids, tokens}");
  r->specials_json = ojson::object();
  for (auto it = st.j.begin(); it != st.j.end(); ++it) {
    const Node tok = st.child(it.value(), st.path + "." + it.key());
    std::vector<int32_t> ids;
    for (const auto& v : tok.at("ids").j) ids.push_back(v.get<int32_t>());
    r->specials.emplace_back(it.key(), ids);
    r->specials_json[it.key()] = it.value();
  }
  for (const auto* list : {&r->single, &r->pair})
    for (const auto& p : *list)
      if (p.special &&
          std::none_of(r->specials.begin(), r->specials.end(), [&](const auto& s) { return s.first == p.id; }))
        st.fail("the template names '" + p.id + "', which special_tokens does not define");
  return r;
}

}  // namespace lathe::tokenizer::detail
