// Tokenizers against Hugging Face `tokenizers` on the same vocabularies: byte-level BPE and
// WordPiece ids on an edge-case corpus plus real text; round trips; errors naming the file.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>

#include "lathe/core/error.hpp"
#include "lathe/tokenizer/trainer.hpp"
#include "lathe/tokenizer/bpe.hpp"
#include "lathe/tokenizer/wordpiece.hpp"
#include "lathe/recipe/paths.hpp"
#include "lathe/train/run_dir.hpp"
#include "support.hpp"

using namespace lathe::tokenizer;
using lathe::test::TempDir;

namespace {

const std::string kKjv = (lathe::test::source_dir() / "data/kjv/kjv.txt").string();

void python(const std::vector<std::string>& args) { lathe::test::run_reference("hf_tokenizers.py", args); }

nlohmann::json read_json(const std::filesystem::path& p) { return nlohmann::json::parse(std::ifstream(p)); }

/// A training corpus (the first 3000 verses of the default corpus) and the edge-case texts.
struct Reference {
  TempDir dir;
  std::filesystem::path corpus, texts;
  std::vector<std::string> items;
  Reference() {
    std::ifstream in(kKjv);
    REQUIRE(in);  // written by data/prepare_kjv.sh, which scripts/setup.sh runs
    std::string text, line;
    for (int i = 0; i < 3000 && std::getline(in, line); ++i) text += line + "\n";
    texts = dir.path() / "texts.json";
    python({"edge_corpus", texts.string(), kKjv});
    items = read_json(texts).get<std::vector<std::string>>();
    // The edge cases go into the training text too, so the vocabulary has merges for them
    // (contractions, CJK, emoji, odd whitespace) and a wrong split changes the ids.
    for (int copy = 0; copy < 3; ++copy)
      for (const auto& t : items) text += t + "\n";
    corpus = dir.write("corpus.txt", text);
  }
  /// Trains HF's byte-level BPE (or WordPiece, lowercase "1"/"0") on the corpus into a new
  /// directory `name` and returns that directory.
  std::filesystem::path train(const std::string& name, const std::string& vocab_size, const std::string& lowercase = "") {
    const auto out = dir.path() / name;
    std::filesystem::create_directories(out);
    if (lowercase.empty())
      python({"train_bpe", corpus.string(), out.string(), vocab_size});
    else
      python({"train_wordpiece", corpus.string(), out.string(), vocab_size, lowercase});
    return out;
  }
  /// HF's ids for every text.
  std::vector<std::vector<int32_t>> hf_ids(const std::filesystem::path& tokenizer, bool specials = false) {
    auto out = dir.path() / "ids.json";
    std::vector<std::string> args{"encode", tokenizer.string(), texts.string(), out.string()};
    if (specials) args.push_back("--specials");
    python(args);
    return read_json(out).get<std::vector<std::vector<int32_t>>>();
  }
};

/// The first 12000 verses of the default corpus as a training file, and up to 400 kB of the
/// verses after them as held-out text.
std::pair<std::filesystem::path, std::string> split_corpus(const TempDir& dir) {
  std::ifstream in(kKjv);
  REQUIRE(in);
  std::string train, held, line;
  for (int i = 0; std::getline(in, line); ++i) (i < 12000 ? train : held) += line + "\n";
  held.resize(std::min<std::size_t>(held.size(), 400000));
  return {dir.write("train.txt", train), held};
}

std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += (c < 0x20 || c == 0x7f) ? "\\x" + std::to_string(c) : std::string(1, static_cast<char>(c));
  return out;
}

template <class Encode>
void check_same_ids(const std::vector<std::string>& items, const std::vector<std::vector<int32_t>>& expected,
                    Encode&& encode) {
  REQUIRE(items.size() == expected.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    auto ids = encode(items[i]);
    if (ids != expected[i] && ++mismatches <= 5) {
      INFO("text " << i << ": '" << show(items[i]) << "'");
      CHECK(ids == expected[i]);
    }
  }
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("tokenizer: GPT-2 pre-tokenization splits like the regex", "[tokenizer]") {
  auto split = [](std::string_view s) {
    std::vector<std::string> out;
    pretokenize_gpt2(s, [&](std::size_t b, std::size_t e) { out.emplace_back(s.substr(b, e - b)); });
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(split("Hello world") == V{"Hello", " world"});
  CHECK(split("I'm don't we'll") == V{"I", "'m", " don", "'t", " we", "'ll"});
  CHECK(split("a  b") == V{"a", " ", " b"});
  CHECK(split("\n\nHello") == V{"\n", "\n", "Hello"});
  CHECK(split("x   ") == V{"x", "   "});
  CHECK(split("abc123!!") == V{"abc", "123", "!!"});
  CHECK(split(" ?! 42") == V{" ?!", " 42"});
}

TEST_CASE("tokenizer: byte-level BPE gives HF tokenizers' ids (tokenizer.json)", "[tokenizer][reference][python]") {
  Reference ref;
  const auto dir = ref.train("bpe", "2000");
  auto bpe = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  CHECK(bpe.vocab_size() == 2000);
  check_same_ids(ref.items, ref.hf_ids(dir / "tokenizer.json"), [&](const std::string& t) { return bpe.encode(t); });
}

TEST_CASE("tokenizer: add_prefix_space applies to each segment between special tokens, as HF", "[tokenizer][reference][python]") {
  Reference ref;
  const auto dir = ref.train("bpe", "2000");
  const auto prefixed = dir / "prefixed.json";
  python({"prefix_space", (dir / "tokenizer.json").string(), prefixed.string()});
  auto bpe = Bpe::from_tokenizer_json(prefixed);
  // The edge texts hold <|endoftext|> between, before and after other text.
  check_same_ids(ref.items, ref.hf_ids(prefixed), [&](const std::string& t) { return bpe.encode(t); });
  const std::string text = "<|endoftext|>And God said";
  const auto eot = bpe.token_to_id("<|endoftext|>");
  const auto ids = bpe.encode(text);
  REQUIRE(!ids.empty());
  CHECK(ids.front() == eot);  // not a prefixed space before the special token
}

TEST_CASE("tokenizer: byte-level BPE gives HF tokenizers' ids (vocab.json + merges.txt)", "[tokenizer][reference][python]") {
  Reference ref;
  const auto dir = ref.train("bpe", "1500");
  auto out = ref.dir.path() / "vm.json";
  python({"encode_vocab_merges", (dir / "vocab.json").string(), (dir / "merges.txt").string(), ref.texts.string(),
          out.string()});
  // HF's plain BPE model knows no added tokens: compare on texts without the special token.
  auto expected = read_json(out).get<std::vector<std::vector<int32_t>>>();
  std::vector<std::string> items;
  std::vector<std::vector<int32_t>> wanted;
  for (std::size_t i = 0; i < ref.items.size(); ++i)
    if (ref.items[i].find("<|endoftext|>") == std::string::npos) {
      items.push_back(ref.items[i]);
      wanted.push_back(expected[i]);
    }
  auto bpe = Bpe::from_vocab_merges(dir / "vocab.json", dir / "merges.txt");
  check_same_ids(items, wanted, [&](const std::string& t) { return bpe.encode(t); });
}

TEST_CASE("tokenizer: WordPiece gives HF tokenizers' ids, uncased and cased", "[tokenizer][reference][python]") {
  Reference ref;
  for (std::string lower : {"1", "0"}) {
    INFO("lowercase " << lower);
    const auto dir = ref.train("wp" + lower, "2000", lower);
    auto expected = ref.hf_ids(dir / "tokenizer.json", /*specials=*/true);
    auto wp = WordPiece::from_tokenizer_json(dir / "tokenizer.json");
    check_same_ids(ref.items, expected, [&](const std::string& t) { return wp.encode_with_specials(t).ids; });
    // vocab.txt with the same casing gives the same ids
    WordPieceOptions o;
    o.lowercase = lower == "1";
    auto from_txt = WordPiece::from_vocab_txt(dir / "vocab.txt", o);
    check_same_ids(ref.items, expected, [&](const std::string& t) { return from_txt.encode_with_specials(t).ids; });
  }
}

TEST_CASE("tokenizer: WordPiece decodes as HF's WordPiece decoder with and without cleanup", "[tokenizer][reference][python]") {
  Reference ref;
  const auto dir = ref.train("wp_cased", "2000", "0");
  auto decoded_by_hf = [&](const std::filesystem::path& tokenizer) {
    const auto out = ref.dir.path() / "decoded.json";
    python({"decode", tokenizer.string(), ref.texts.string(), out.string()});
    return read_json(out).get<std::vector<std::string>>();
  };
  auto check_decode = [&](const std::filesystem::path& tokenizer) {
    INFO(tokenizer.filename().string());
    const auto expected = decoded_by_hf(tokenizer);
    const auto wp = WordPiece::from_tokenizer_json(tokenizer);
    REQUIRE(expected.size() == ref.items.size());
    int mismatches = 0;
    for (std::size_t i = 0; i < ref.items.size(); ++i) {
      const auto got = wp.decode(wp.encode(ref.items[i]));
      if (got != expected[i] && ++mismatches <= 5) {
        INFO("text " << i << ": '" << show(ref.items[i]) << "'");
        CHECK(got == expected[i]);
      }
    }
    CHECK(mismatches == 0);
  };
  check_decode(dir / "tokenizer.json");  // cleanup: true, HF's default
  auto j = read_json(dir / "tokenizer.json");
  j["decoder"]["cleanup"] = false;
  check_decode(ref.dir.write("no_cleanup.json", j.dump()));
  j["decoder"] = nullptr;  // no decoder: HF joins the tokens with spaces
  check_decode(ref.dir.write("no_decoder.json", j.dump()));
  // What lathe writes decodes the same in HF.
  const auto saved = ref.dir.path() / "lathe_wp_cased.json";
  WordPiece::from_tokenizer_json(dir / "tokenizer.json").save(saved);
  check_decode(saved);
}

TEST_CASE("tokenizer: a tokenizer.json saved by lathe loads in HF tokenizers with the same ids",
          "[tokenizer][reference][python]") {
  Reference ref;
  const auto dir = ref.train("bpe", "1000");
  auto bpe = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  const auto saved = ref.dir.path() / "lathe_bpe.json";
  bpe.save(saved);
  check_same_ids(ref.items, ref.hf_ids(saved), [&](const std::string& t) { return bpe.encode(t); });

  const auto wdir = ref.train("wp", "1000", "1");
  auto wp = WordPiece::from_tokenizer_json(wdir / "tokenizer.json");
  const auto wsaved = ref.dir.path() / "lathe_wp.json";
  wp.save(wsaved);
  check_same_ids(ref.items, ref.hf_ids(wsaved, true), [&](const std::string& t) { return wp.encode_with_specials(t).ids; });
}

TEST_CASE("tokenizer: byte-level BPE decode(encode(x)) == x for any bytes", "[tokenizer]") {
  Reference ref;
  const auto dir = ref.train("bpe", "800");
  auto bpe = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  for (const auto& t : ref.items) CHECK(bpe.decode(bpe.encode(t)) == t);
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 64, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : "ab \n'1\xc3\xa9\xe2"[rng() % 10]);
    auto ids = bpe.encode(s);
    if (bpe.decode(ids) != s) FAIL("round trip failed for '" << show(s) << "'");
  }
  // a long run goes through the heap merge path and still matches the short path's result
  std::string long_word(5000, 'a');
  CHECK(bpe.decode(bpe.encode(long_word)) == long_word);
}

TEST_CASE("tokenizer: offsets cover the text the ids came from", "[tokenizer]") {
  Reference ref;
  const auto dir = ref.train("bpe", "800");
  auto bpe = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  const std::string text = "In the beginning<|endoftext|>God created\n\nthe heaven.";
  std::vector<Offset> offsets;
  auto ids = bpe.encode(text, &offsets);
  REQUIRE(offsets.size() == ids.size());
  std::size_t at = 0;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    CHECK(offsets[k].first == at);
    CHECK(text.substr(offsets[k].first, offsets[k].second - offsets[k].first) ==
          bpe.decode(std::span<const int32_t>(&ids[k], 1)));
    at = offsets[k].second;
  }
  CHECK(at == text.size());
}

TEST_CASE("tokenizer: batch encoding on threads gives encode()'s ids", "[tokenizer]") {
  Reference ref;
  const auto dir = ref.train("bpe", "800");
  auto bpe = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  auto batch = bpe.encode_batch(ref.items, 4);
  REQUIRE(batch.size() == ref.items.size());
  for (std::size_t i = 0; i < ref.items.size(); ++i) CHECK(batch[i] == bpe.encode(ref.items[i]));
}

TEST_CASE("tokenizer: malformed files are reported with the file and line", "[tokenizer][errors]") {
  TempDir dir;
  const auto& msg = lathe::test::error_of;
  auto vocab = dir.write("vocab.json", "{\"a\": 0, \"b\": 1,\n \"ab\": }");
  CHECK(msg([&] { load_tokenizer(vocab); }).starts_with(vocab.string() + ":2: invalid JSON"));

  nlohmann::json v;
  for (int b = 0; b < 256; ++b) v[bytes_to_spelling(std::string(1, static_cast<char>(b)))] = b;
  v["ab"] = 256;
  auto good_vocab = dir.write("bpe/vocab.json", v.dump());
  dir.write("bpe/merges.txt", "#version: 0.2\na b\nab\n");
  CHECK(msg([&] { load_tokenizer(good_vocab); }) ==
        (dir.path() / "bpe/merges.txt").string() + ":3: expected two tokens separated by one space, got 'ab'");
  dir.write("bpe/merges.txt", "#version: 0.2\na z\n");
  CHECK(msg([&] { load_tokenizer(good_vocab); }) ==
        (dir.path() / "bpe/merges.txt").string() + ":2: 'a z' names a token that is not in vocab.json");
  std::filesystem::remove(dir.path() / "bpe/merges.txt");
  CHECK(msg([&] { load_tokenizer(good_vocab); }).find("needs merges.txt beside it") != std::string::npos);

  auto wp = dir.write("wp/vocab.txt", "[PAD]\n[UNK]\nthe\n\nend\n");
  CHECK(msg([&] { load_tokenizer(wp); }) == wp.string() + ":4: empty token");
  auto dup = dir.write("wp2/vocab.txt", "[UNK]\nthe\nthe\n");
  CHECK(msg([&] { load_tokenizer(dup); }) == dup.string() + ":3: token 'the' repeats line 2");
  auto no_unk = dir.write("wp3/vocab.txt", "the\n");
  CHECK(msg([&] { load_tokenizer(no_unk); }).find("no unknown token '[UNK]'") != std::string::npos);
  CHECK(msg([&] { load_tokenizer(dir.path() / "missing.json"); }).find("does not exist") != std::string::npos);
  auto bad_model = dir.write("tok.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  CHECK(msg([&] { load_tokenizer(bad_model); }).find("'Unigram' is not supported") != std::string::npos);
}

TEST_CASE("tokenizer: the BPE trainer learns HF BpeTrainer's vocabulary and merges", "[tokenizer][train][reference][python]") {
  Reference ref;
  const auto dir = ref.train("hf", "3000");
  BpeTrainerOptions o;
  o.vocab_size = 3000;
  o.threads = 2;
  auto ours = train_byte_bpe(std::vector<std::filesystem::path>{ref.corpus}, o);
  auto hf = Bpe::from_tokenizer_json(dir / "tokenizer.json");
  CHECK(ours.vocab_size() == hf.vocab_size());
  CHECK(ours.tokens() == hf.tokens());
  CHECK(ours.merges() == hf.merges());
  // and the saved result loads in HF with the same ids as ours
  const auto saved = ref.dir.path() / "trained.json";
  ours.save(saved);
  check_same_ids(ref.items, ref.hf_ids(saved), [&](const std::string& t) { return ours.encode(t); });
}

TEST_CASE("tokenizer: held-out compression of the trained BPE is within 1% of HF's", "[tokenizer][train][reference][python]") {
  TempDir dir;
  auto [train_file, held] = split_corpus(dir);
  auto held_file = dir.write("held.json", nlohmann::json(std::vector<std::string>{held}).dump());
  const auto hf_dir = dir.path() / "hf";
  std::filesystem::create_directories(hf_dir);
  python({"train_bpe", train_file.string(), hf_dir.string(), "4096"});
  auto out = dir.path() / "ids.json";
  python({"encode", (hf_dir / "tokenizer.json").string(), held_file.string(), out.string()});
  const auto hf_tokens = read_json(out)[0].size();

  BpeTrainerOptions o;
  o.vocab_size = 4096;
  auto ours = train_byte_bpe(std::vector<std::filesystem::path>{train_file}, o);
  const auto our_tokens = ours.encode(held).size();
  const double ratio = static_cast<double>(our_tokens) / static_cast<double>(hf_tokens);
  INFO("bytes/token: lathe " << static_cast<double>(held.size()) / our_tokens << ", HF "
                             << static_cast<double>(held.size()) / hf_tokens);
  CHECK(ratio == Approx(1.0).margin(0.01));
}

TEST_CASE("tokenizer: training reads JSONL and rejects an empty corpus", "[tokenizer][train][errors]") {
  TempDir dir;
  auto jsonl = dir.write("docs.jsonl", "{\"text\": \"hello world hello\"}\n\n{\"text\": \"world peace\"}\n");
  BpeTrainerOptions o;
  o.vocab_size = 300;
  o.min_frequency = 1;
  auto bpe = train_byte_bpe(std::vector<std::filesystem::path>{jsonl}, o);
  CHECK(bpe.token_to_id("hello") > 256);
  CHECK(bpe.token_to_id("Ġworld") > 256);

  auto empty = dir.write("empty.txt", "");
  auto message = [&](const std::vector<std::filesystem::path>& files) -> std::string {
    try {
      train_byte_bpe(files, o);
    } catch (const lathe::Error& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(message({empty}) == "cannot train a tokenizer on an empty corpus (" + empty.string() + ")");
  auto bad = dir.write("bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": 1}\n");
  CHECK(message({bad}) == bad.string() + ":2: no string field 'text'");
  CHECK(message({dir.path() / "nope.txt"}) == "cannot read '" + (dir.path() / "nope.txt").string() + "'");
}

TEST_CASE("tokenizer: WordPiece training matches HF WordPieceTrainer's vocabulary and compression",
          "[tokenizer][train][reference][python]") {
  TempDir dir;
  auto [train_file, held] = split_corpus(dir);
  auto held_file = dir.write("held.json", nlohmann::json(std::vector<std::string>{held}).dump());
  const auto hf_dir = dir.path() / "hf";
  std::filesystem::create_directories(hf_dir);
  python({"train_wordpiece", train_file.string(), hf_dir.string(), "3000", "1"});
  auto out = dir.path() / "ids.json";
  python({"encode", (hf_dir / "tokenizer.json").string(), held_file.string(), out.string()});
  const auto hf_tokens = read_json(out)[0].size();
  auto hf = WordPiece::from_tokenizer_json(hf_dir / "tokenizer.json");

  WordPieceTrainerOptions o;
  o.vocab_size = 3000;
  auto ours = train_wordpiece(std::vector<std::filesystem::path>{train_file}, o);
  CHECK(ours.vocab_size() == hf.vocab_size());
  // Same tokens, up to ties that HF breaks in hash-map order.
  int shared = 0;
  for (const auto& t : ours.tokens()) shared += hf.token_to_id(t) >= 0;
  INFO("tokens in both vocabularies: " << shared << " of " << ours.vocab_size());
  CHECK(shared >= ours.vocab_size() * 97 / 100);
  const auto our_tokens = ours.encode(held).size();
  INFO("tokens on held-out text: lathe " << our_tokens << ", HF " << hf_tokens);
  CHECK(static_cast<double>(our_tokens) / static_cast<double>(hf_tokens) == Approx(1.0).margin(0.01));
  // the saved vocabulary loads in HF and gives our ids
  const auto saved = dir.path() / "wp.json";
  ours.save(saved);
  auto texts = dir.write("texts.json", nlohmann::json(std::vector<std::string>{held.substr(0, 5000)}).dump());
  python({"encode", saved.string(), texts.string(), out.string()});
  CHECK(read_json(out)[0].get<std::vector<int32_t>>() == ours.encode(held.substr(0, 5000)));
}

TEST_CASE("tokenizer: a vocab.txt is cased as its vocabulary is, whoever loads it", "[tokenizer]") {
  TempDir dir;
  const std::string specials = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  auto uncased = dir.write("uncased/vocab.txt", specials + "the\ncat\n");
  auto cased = dir.write("cased/vocab.txt", specials + "The\nthe\ncat\n");
  // The recipe's default (tokenizer.lowercase false) and the CLI's default load it alike.
  lathe::recipe::Recipe r;
  for (const auto& options : {LoadOptions{}, lathe::train::tokenizer_load_options(r)}) {
    CHECK(load_tokenizer(uncased, options)->encode("The Cat") == std::vector<int32_t>{5, 6});
    CHECK(load_tokenizer(cased, options)->encode("The cat") == std::vector<int32_t>{5, 7});
    CHECK(load_tokenizer(cased, options)->encode("THE") == std::vector<int32_t>{1});
  }
  LoadOptions keep_case;  // --cased
  keep_case.lowercase = false;
  CHECK(load_tokenizer(uncased, keep_case)->encode("The") == std::vector<int32_t>{1});
}
