// tokenizer.ggml.* from a tokenizer.json (gguf_vocab.hpp), as convert_hf_to_gguf.py writes a
// byte-level BPE's.

#include "gguf_vocab.hpp"

#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"

namespace lathe::export_ {
namespace {

using nlohmann::json;

// llama_token_type.
constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

/// llama.cpp's pre-tokenizers (tokenizer.ggml.pre) and the split regex each one runs.
struct PreTokenizer {
  std::string_view name;
  std::string_view pattern;
};
constexpr PreTokenizer kPreTokenizers[] = {
    {"gpt-2", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"},
    {"gpt-2", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))"},
    {"llama-bpe",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"qwen2",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"gpt-4o",
     R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
};

class Reader {
 public:
  explicit Reader(std::filesystem::path path) : path_(std::move(path)) {
    std::ifstream in(path_);
    if (!in) throw Error("GGUF export: cannot read the tokenizer " + path_.string());
    try {
      root_ = json::parse(in);
    } catch (const json::exception& e) {
      fail(std::string("not JSON: ") + e.what());
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("GGUF export: {}: {}", path_.string(), what));
  }
  const json& root() const { return root_; }

  /// tokenizer.ggml.pre for the tokenizer's pre_tokenizer.
  std::string pre() const {
    const json p = root_.value("pre_tokenizer", json());
    // llama.cpp never puts a space before the text: a tokenizer that does would split the first word otherwise.
    const auto no_prefix_space = [&](const json& byte_level) {
      if (byte_level.value("add_prefix_space", false))
        fail("its ByteLevel pre-tokenizer adds a space before the text, which llama.cpp does not");
    };
    if (p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true)) {
      no_prefix_space(p);
      return "gpt-2";
    }
    if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers") &&
        p["pretokenizers"].size() == 2) {
      const auto& split = p["pretokenizers"][0];
      const auto& bytes = p["pretokenizers"][1];
      if (split.value("type", "") == "Split" && bytes.value("type", "") == "ByteLevel" &&
          !bytes.value("use_regex", true) && split.contains("pattern") && split["pattern"].contains("Regex") &&
          split.value("behavior", "Isolated") == "Isolated" && !split.value("invert", false)) {
        no_prefix_space(bytes);
        const auto pattern = split["pattern"]["Regex"].get<std::string>();
        for (const auto& known : kPreTokenizers)
          if (known.pattern == pattern) return std::string(known.name);
        fail("llama.cpp has no pre-tokenizer that splits text with the regex " + pattern +
             " (it knows GPT-2's, Llama 3's / cl100k, Qwen2's and GPT-4o's)");
      }
    }
    fail("llama.cpp reads byte-level BPE tokenizers whose pre_tokenizer is ByteLevel, or a Split by a regex it knows "
         "followed by ByteLevel; this one is " + p.dump());
  }

  /// Whether the post-processor puts a special token before (and after) the text, and which.
  void added_specials(std::string& first, std::string& last) const {
    const json post = root_.value("post_processor", json());
    std::vector<const json*> todo{&post};
    while (!todo.empty()) {
      const json& p = *todo.back();
      todo.pop_back();
      if (!p.is_object()) continue;
      if (p.value("type", "") == "Sequence" && p.contains("processors"))
        for (const auto& q : p["processors"]) todo.push_back(&q);
      if (p.value("type", "") != "TemplateProcessing" || !p.contains("single") || p["single"].empty()) continue;
      const auto& single = p["single"];
      if (single.front().contains("SpecialToken")) first = single.front()["SpecialToken"]["id"].get<std::string>();
      if (single.size() > 1 && single.back().contains("SpecialToken"))
        last = single.back()["SpecialToken"]["id"].get<std::string>();
    }
  }

 private:
  std::filesystem::path path_;
  json root_;
};

}  // namespace

void add_vocab(GgufFile& f, const GgufOptions& options, int64_t rows) {
  const Reader r(options.tokenizer_json);
  const auto& root = r.root();
  const auto& model = root.value("model", json());
  if (!model.is_object() || model.value("type", "") != "BPE")
    r.fail("GGUF export writes byte-level BPE tokenizers (tokenizer.ggml.model gpt2); this one's model is " +
           model.value("type", std::string("missing")));
  if (model.value("byte_fallback", false))
    r.fail("a BPE with byte_fallback is a SentencePiece-style tokenizer, which llama.cpp reads as tokenizer.ggml.model "
           "llama with scores lathe does not have");
  if (const auto& n = root.value("normalizer", json()); !n.is_null() && n.value("type", "") != "NFC")
    r.fail("llama.cpp applies no normalizer to byte-level BPE text; this tokenizer has " + n.dump());
  const auto pre = r.pre();

  std::vector<std::string> tokens(static_cast<std::size_t>(rows));
  std::vector<int32_t> types(static_cast<std::size_t>(rows), kUnused);
  std::map<std::string, int32_t> ids;
  const auto put = [&](int64_t id, const std::string& token, int32_t type) {
    if (id < 0 || id >= rows)
      r.fail(fmt::format("token {} has id {}, past the model's {} embedding rows", token, id, rows));
    tokens[id] = token;
    types[id] = type;
    ids[token] = static_cast<int32_t>(id);
  };
  const json vocab = model.value("vocab", json::object()), added = root.value("added_tokens", json::array());
  for (const auto& [token, id] : vocab.items()) put(id.get<int64_t>(), token, kNormal);
  for (const auto& t : added)
    put(t.at("id").get<int64_t>(), t.at("content").get<std::string>(), t.value("special", false) ? kControl : kUserDefined);
  for (int64_t i = 0; i < rows; ++i)
    if (types[i] == kUnused) tokens[i] = fmt::format("[PAD{}]", i);

  std::vector<std::string> merges;
  const json merge_list = model.value("merges", json::array());
  for (const auto& m : merge_list)
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());

  const auto id_of = [&](const std::string& token, const char* what) {
    const auto it = ids.find(token);
    if (it == ids.end()) r.fail(fmt::format("the {} token {} is not one of its tokens", what, token));
    return static_cast<uint32_t>(it->second);
  };
  std::string first, last;
  r.added_specials(first, last);
  if (options.eos_id < 0 || options.eos_id >= rows || types[options.eos_id] == kUnused)
    r.fail(fmt::format("the end-of-text token id {} is not one of its tokens", options.eos_id));
  const auto eos = static_cast<uint32_t>(options.eos_id);
  const auto bos = !options.bos_token.empty() ? id_of(options.bos_token, "beginning-of-text")
                   : !first.empty()           ? id_of(first, "first")
                                              : eos;
  f.set("tokenizer.ggml.model", std::string("gpt2"));
  f.set("tokenizer.ggml.pre", pre);
  f.set("tokenizer.ggml.tokens", std::move(tokens));
  f.set("tokenizer.ggml.token_type", std::move(types));
  f.set("tokenizer.ggml.merges", std::move(merges));
  f.set("tokenizer.ggml.bos_token_id", bos);
  f.set("tokenizer.ggml.eos_token_id", eos);
  f.set("tokenizer.ggml.add_bos_token", !first.empty());
  f.set("tokenizer.ggml.add_eos_token", !last.empty());
  if (!options.chat_template.empty()) f.set("tokenizer.chat_template", options.chat_template);
}

}  // namespace lathe::export_
