// Token shards, window samplers and data preparation.

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <functional>
#include <numeric>
#include <set>

#include "lathe/core/error.hpp"
#include "lathe/data/classification.hpp"
#include "lathe/data/collate.hpp"
#include "lathe/data/loader.hpp"
#include "lathe/data/prepare.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/data/shard.hpp"
#include "lathe/io/inputs.hpp"
#include "lathe/tokenizer/trainer.hpp"
#include "gpu.hpp"
#include "support.hpp"

using namespace lathe::data;
using lathe::test::error_of;
using lathe::test::TempDir;
namespace fs = std::filesystem;

namespace {


fs::path write_shard(const fs::path& path, const std::vector<int32_t>& tokens, uint32_t vocab, uint64_t fp = 42) {
  ShardWriter w(path, vocab, fp);
  w.append(tokens);
  w.finish();
  return path;
}

void patch(const fs::path& path, std::size_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("data: shards round-trip tokens in 16 and 32 bits", "[data][shard]") {
  TempDir dir;
  std::vector<int32_t> small{0, 1, 65535, 7, 300}, large{0, 65536, 99999, 5};
  Shard a(write_shard(dir.path() / "a.bin", small, 65536));
  CHECK(a.header().token_bytes == 2);
  CHECK(fs::file_size(dir.path() / "a.bin") == kShardHeaderBytes + 2 * small.size());
  Shard b(write_shard(dir.path() / "b.bin", large, 100000));
  CHECK(b.header().token_bytes == 4);
  for (std::size_t i = 0; i < small.size(); ++i) CHECK(a[i] == small[i]);
  std::vector<int32_t> out(large.size());
  b.read(0, large.size(), out.data());
  CHECK(out == large);
  CHECK(b.header().fingerprint == 42);
  CHECK(error_of([&] { write_shard(dir.path() / "c.bin", {5, 70000}, 1000); }).find("token id 70000 is outside") !=
        std::string::npos);
  CHECK(!fs::exists(dir.path() / "c.bin"));
  CHECK(!fs::exists(dir.path() / "c.bin.partial"));
}

TEST_CASE("data: corrupt shards are rejected with the file named", "[data][shard][errors]") {
  TempDir dir;
  const std::vector<int32_t> tokens(100, 3);
  auto make = [&](const std::string& name) { return write_shard(dir.path() / name, tokens, 1000); };

  auto magic = make("magic.bin");
  patch(magic, 0, "NOTTOKEN");
  CHECK(error_of([&] { Shard s(magic); }) == "shard '" + magic.string() + "': not a lathe token shard (bad magic)");

  auto version = make("version.bin");
  patch(version, 8, std::string("\x07\0\0\0", 4));
  CHECK(error_of([&] { Shard s(version); }) ==
        "shard '" + version.string() + "': format version 7, this lathe reads version 1; prepare the data again");

  auto truncated = make("truncated.bin");
  fs::resize_file(truncated, kShardHeaderBytes + 150);
  CHECK(error_of([&] { Shard s(truncated); }).starts_with("shard '" + truncated.string() + "': is truncated"));

  auto tiny = make("tiny.bin");
  fs::resize_file(tiny, 10);
  CHECK(error_of([&] { Shard s(tiny); }).find("shorter than its header") != std::string::npos);

  auto good = make("good.bin");
  Shard s(good);
  CHECK(error_of([&] { s.expect_tokenizer(43, 1000); }).find("was written by another tokenizer") != std::string::npos);
  CHECK(error_of([&] { s.expect_tokenizer(42, 1000); }) == "no error");
  CHECK(error_of([&] { Shard missing(dir.path() / "none.bin"); }).find("cannot open shard") != std::string::npos);
}

TEST_CASE("data: an unfinished shard leaves no file behind", "[data][shard]") {
  TempDir dir;
  {
    ShardWriter w(dir.path() / "x.bin", 100, 1);
    w.append(std::vector<int32_t>{1, 2, 3});
  }
  CHECK(fs::is_empty(dir.path()));
}

namespace {
/// A stream of `n` tokens, token i == i % 50000, split over three shards.
struct Stream {
  TempDir dir;
  std::unique_ptr<TokenStream> stream;
  explicit Stream(int32_t n) {
    std::vector<Shard> shards;
    int32_t at = 0;
    for (int k = 0; k < 3; ++k) {
      const int32_t len = k < 2 ? n / 3 : n - 2 * (n / 3);
      std::vector<int32_t> t(len);
      for (int32_t i = 0; i < len; ++i) t[i] = (at + i) % 50000;
      at += len;
      shards.emplace_back(write_shard(dir.path() / ("s" + std::to_string(k) + ".bin"), t, 50000));
    }
    stream = std::make_unique<TokenStream>(std::move(shards));
  }
};
}  // namespace

TEST_CASE("data: windows are read across shard boundaries", "[data][sampler]") {
  Stream s(1000);
  std::vector<int32_t> out(50);
  s.stream->read(320, 50, out.data());  // crosses the first boundary at 333
  for (int i = 0; i < 50; ++i) CHECK(out[i] == 320 + i);
}

TEST_CASE("data: the random sampler is deterministic, seed-dependent and resumes exactly", "[data][sampler]") {
  Stream s(5000);
  WindowSamplerOptions o;
  o.seq_len = 16;
  o.batch_size = 4;
  WindowSampler a(*s.stream, o), b(*s.stream, o);
  std::vector<int32_t> x, y;
  for (int i = 0; i < 5; ++i) {
    a.next(x);
    b.next(y);
    CHECK(x == y);
  }
  // rows are contiguous windows: token i+1 follows token i
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 16; ++i) CHECK(x[r * 17 + i + 1] == (x[r * 17 + i] + 1) % 50000);
  const auto saved = a.state();
  std::vector<std::vector<int32_t>> after(3);
  for (auto& batch : after) a.next(batch);
  WindowSampler resumed(*s.stream, o);
  resumed.restore(saved);
  for (const auto& batch : after) {
    resumed.next(y);
    CHECK(y == batch);
  }
  o.seed = 7;
  WindowSampler other(*s.stream, o);
  other.next(y);
  WindowSampler first(*s.stream, WindowSamplerOptions{16, 4});
  first.next(x);
  CHECK(x != y);
}

TEST_CASE("data: ranks read their slices of the global batch, disjoint, covering the epoch", "[data][sampler]") {
  Stream s(3 * 1000 + 1);
  const int world = 3;
  for (auto mode : {SamplerMode::Sequential, SamplerMode::Random}) {
    // One process with the whole global batch of 3 x 5 rows is the reference.
    WindowSamplerOptions whole;
    whole.seq_len = 10;
    whole.batch_size = 5 * world;
    whole.mode = mode;
    WindowSampler one(*s.stream, whole);
    std::vector<std::unique_ptr<WindowSampler>> ranks;
    for (int rank = 0; rank < world; ++rank) {
      WindowSamplerOptions o = whole;
      o.batch_size = 5;
      o.rank = rank;
      o.world_size = world;
      ranks.push_back(std::make_unique<WindowSampler>(*s.stream, o));
    }
    std::set<uint64_t> epoch;
    const uint64_t steps = ranks[0]->windows() / (5 * world);
    for (uint64_t step = 0; step < steps; ++step) {
      std::vector<uint64_t> joined;
      for (auto& w : ranks)
        for (auto start : w->next_starts()) joined.push_back(start);
      const auto expected = one.next_starts();
      CHECK(joined == expected);
      if (mode == SamplerMode::Sequential)
        for (auto start : joined) {
          CHECK(start % 10 == 0);
          CHECK(epoch.insert(start).second);  // no window twice within the epoch
        }
    }
    if (mode == SamplerMode::Sequential) CHECK(epoch.size() == 300);  // (3001 - 1) / 10 windows, all covered
  }
}

TEST_CASE("data: the sequential sampler reshuffles each epoch and resumes mid-epoch", "[data][sampler]") {
  Stream s(201);
  WindowSamplerOptions o;
  o.seq_len = 10;
  o.batch_size = 4;
  o.mode = SamplerMode::Sequential;
  WindowSampler w(*s.stream, o);
  std::vector<uint64_t> epoch0, epoch1;
  for (int b = 0; b < 5; ++b)
    for (auto x : w.next_starts()) epoch0.push_back(x);
  CHECK(w.state().epoch == 0);
  for (int b = 0; b < 5; ++b)
    for (auto x : w.next_starts()) epoch1.push_back(x);
  CHECK(w.state().epoch == 1);
  CHECK(epoch0 != epoch1);
  CHECK(std::set(epoch0.begin(), epoch0.end()) == std::set(epoch1.begin(), epoch1.end()));
  const auto saved = w.state();
  auto next = w.next_starts();
  WindowSampler resumed(*s.stream, o);
  resumed.restore(saved);
  CHECK(resumed.next_starts() == next);
}

TEST_CASE("data: a stream shorter than one window is an error", "[data][sampler][errors]") {
  Stream s(12);
  CHECK(error_of([&] { WindowSampler w(*s.stream, WindowSamplerOptions{16, 1}); })
            .find("fewer than one window of seq_len + 1 = 17") != std::string::npos);
}

TEST_CASE("data: prepare writes train/val shards with an end-of-text token after each document", "[data][prepare]") {
  TempDir dir;
  std::string text;
  for (int d = 0; d < 200; ++d) text += "Document number " + std::to_string(d) + " says hello.\nSecond line.\n\n\n";
  auto corpus = dir.write("corpus.txt", text);
  lathe::tokenizer::BpeTrainerOptions t;
  t.vocab_size = 300;
  auto tok = lathe::tokenizer::train_byte_bpe(std::vector<fs::path>{corpus}, t);
  const int32_t eot = tok.token_to_id("<|endoftext|>");

  PrepareOptions o;
  o.train_files = {corpus};
  o.val_fraction = 0.1;
  o.shard_dir = dir.path() / "shards";
  o.shard_tokens = 1500;
  auto rep = prepare_shards(tok, o);
  CHECK(rep.train_documents + rep.val_documents == 200);
  CHECK(rep.val_documents > 5);
  CHECK(rep.val_documents < 40);
  CHECK(rep.train_shards.size() > 1);  // rotated at 1500 tokens

  auto count_docs = [&](const std::string& split, std::string& decoded) {
    std::vector<Shard> shards;
    for (const auto& p : indexed_shards(o.shard_dir, split, tok)) shards.emplace_back(p);
    TokenStream stream(std::move(shards));
    std::vector<int32_t> ids(stream.size());
    stream.read(0, ids.size(), ids.data());
    decoded = tok.decode(ids);
    return std::count(ids.begin(), ids.end(), eot);
  };
  std::string train_text, val_text;
  CHECK(count_docs("train", train_text) == static_cast<long>(rep.train_documents));
  CHECK(count_docs("val", val_text) == static_cast<long>(rep.val_documents));
  CHECK(train_text.starts_with("Document number "));
  CHECK(val_text.starts_with("Document number "));
  CHECK(train_text.find("Second line.\n<|endoftext|>") != std::string::npos);

  // the same inputs and seed give the same split
  auto again = prepare_shards(tok, o);
  CHECK(again.val_documents == rep.val_documents);
  CHECK(again.train_tokens == rep.train_tokens);

  // another tokenizer cannot read these shards
  t.vocab_size = 280;
  auto other = lathe::tokenizer::train_byte_bpe(std::vector<fs::path>{corpus}, t);
  CHECK(error_of([&] { indexed_shards(o.shard_dir, "train", other); }).find("written by another tokenizer") !=
        std::string::npos);
}

TEST_CASE("data: JSONL documents and their errors", "[data][prepare][errors]") {
  TempDir dir;
  auto good = dir.write("a.jsonl", "{\"text\": \"first doc\"}\n\n{\"text\": \"second\\ndoc\"}\n");
  std::vector<std::string> docs;
  read_documents({good}, InputFormat::Auto, "text", [&](std::string&& d) { docs.push_back(d); });
  CHECK(docs == std::vector<std::string>{"first doc", "second\ndoc"});
  auto bad = dir.write("b.jsonl", "{\"text\": \"ok\"}\n{\"text\": 3}\n");
  CHECK(error_of([&] { read_documents({bad}, InputFormat::Auto, "text", [](std::string&&) {}); }) ==
        bad.string() + ":2: no string field 'text'");
  auto broken = dir.write("c.jsonl", "{\"text\": \"ok\"\n");
  CHECK(error_of([&] { read_documents({broken}, InputFormat::Auto, "text", [](std::string&&) {}); })
            .starts_with(broken.string() + ":1: invalid JSON"));
}

TEST_CASE("data: LM batches shift targets by one token", "[data][collate]") {
  std::vector<int32_t> rows{1, 2, 3, 4, 10, 11, 12, 13};
  auto b = make_lm_batch(rows, 2, 3);
  CHECK(b.input.sizes() == at::IntArrayRef({2, 3}));
  CHECK(b.input.scalar_type() == at::kLong);
  CHECK(b.input[1][0].item<int64_t>() == 10);
  CHECK(b.target[0][2].item<int64_t>() == 4);
  CHECK(b.target[1][0].item<int64_t>() == 11);
}

TEST_CASE("data: padding to the longest sequence with attention masks", "[data][collate]") {
  std::vector<std::vector<int32_t>> ids{{5, 6, 7}, {8}}, types{{0, 0, 1}, {0}};
  auto b = pad_batch(ids, 0, &types);
  CHECK(b.input_ids.sizes() == at::IntArrayRef({2, 3}));
  CHECK(b.input_ids[1][1].item<int64_t>() == 0);
  CHECK(b.attention_mask.sum().item<int64_t>() == 4);
  CHECK(b.token_type_ids[0][2].item<int64_t>() == 1);
}

TEST_CASE("data: MLM masking follows 15% / 80-10-10 and never touches special tokens", "[data][collate][mlm]") {
  const int32_t vocab = 1000, cls = 1, sep = 2, pad = 0, mask = 3;
  MlmOptions o;
  o.mask_id = mask;
  o.vocab_size = vocab;
  o.special_ids = {pad, cls, sep, mask};
  MlmCollator collate(o);
  std::vector<std::vector<int32_t>> ids;
  for (int b = 0; b < 64; ++b) {
    std::vector<int32_t> s{cls};
    for (int t = 0; t < 100 + b; ++t) s.push_back(10 + (b * 131 + t * 7) % 900);
    s.push_back(sep);
    ids.push_back(s);
  }
  int64_t candidates = 0, selected = 0, masked = 0, random = 0, kept = 0;
  for (uint64_t step = 0; step < 20; ++step) {
    auto batch = collate(ids, pad, step);
    auto in = batch.inputs.input_ids.accessor<int64_t, 2>();
    auto lab = batch.labels.accessor<int64_t, 2>();
    for (std::size_t b = 0; b < ids.size(); ++b)
      for (std::size_t t = 0; t < ids[b].size(); ++t) {
        const int32_t orig = ids[b][t];
        if (orig == cls || orig == sep) {
          REQUIRE(lab[b][t] == -100);  // specials are never selected
          REQUIRE(in[b][t] == orig);
          continue;
        }
        ++candidates;
        if (lab[b][t] == -100) {
          REQUIRE(in[b][t] == orig);
          continue;
        }
        REQUIRE(lab[b][t] == orig);
        ++selected;
        if (in[b][t] == mask) ++masked;
        else if (in[b][t] == orig) ++kept;
        else ++random;
      }
  }
  // ~200k candidates: binomial standard errors are ~0.1% of the rates checked here.
  const double p = static_cast<double>(selected) / candidates;
  INFO("selected " << p << ", masked " << double(masked) / selected << ", random " << double(random) / selected
                   << ", kept " << double(kept) / selected);
  CHECK(p == Approx(0.15).margin(0.005));
  CHECK(double(masked) / selected == Approx(0.8).margin(0.01));
  CHECK(double(random) / selected == Approx(0.1).margin(0.01));
  CHECK(double(kept) / selected == Approx(0.1).margin(0.01));
  // the same step masks the same way; another step differently
  CHECK(at::equal(collate(ids, pad, 3).inputs.input_ids, collate(ids, pad, 3).inputs.input_ids));
  CHECK(!at::equal(collate(ids, pad, 3).inputs.input_ids, collate(ids, pad, 4).inputs.input_ids));
}

TEST_CASE("data: whole-word masking selects all pieces of a word together", "[data][collate][mlm]") {
  const int32_t vocab = 100;
  MlmOptions o;
  o.mask_id = 3;
  o.vocab_size = vocab;
  o.special_ids = {0, 1, 2, 3};
  o.continuation.assign(vocab, false);
  for (int32_t id = 50; id < vocab; ++id) o.continuation[id] = true;  // ids >= 50 are "##" pieces
  MlmCollator collate(o);
  std::vector<std::vector<int32_t>> ids;
  for (int b = 0; b < 32; ++b) {
    std::vector<int32_t> s{1};
    for (int w = 0; w < 40; ++w) {
      s.push_back(10 + (w + b) % 40);
      for (int k = 0; k < (w % 3); ++k) s.push_back(50 + (w * 7 + k) % 50);
    }
    s.push_back(2);
    ids.push_back(s);
  }
  int64_t words = 0, selected_words = 0;
  for (uint64_t step = 0; step < 10; ++step) {
    auto batch = collate(ids, 0, step);
    auto lab = batch.labels.accessor<int64_t, 2>();
    for (std::size_t b = 0; b < ids.size(); ++b)
      for (std::size_t t = 1; t + 1 < ids[b].size(); ++t) {
        if (!o.continuation[ids[b][t]]) {
          ++words;
          selected_words += lab[b][t] != -100;
          continue;
        }
        REQUIRE((lab[b][t] != -100) == (lab[b][t - 1] != -100));  // a piece follows its word
      }
  }
  CHECK(double(selected_words) / words == Approx(0.15).margin(0.01));
}

TEST_CASE("data: the prefetching loader yields batches in step order and passes errors on", "[data][loader]") {
  Stream s(20000);
  WindowSamplerOptions o;
  o.seq_len = 32;
  o.batch_size = 8;
  WindowSampler sampler(*s.stream, o);
  PrefetchLoader<std::vector<int32_t>> loader(
      [&](uint64_t step) {
        std::vector<int32_t> rows;
        sampler.rows_for(step, rows);
        return rows;
      },
      /*workers=*/3, /*prefetch=*/4);
  WindowSampler serial(*s.stream, o);
  std::vector<int32_t> expected;
  for (int i = 0; i < 50; ++i) {
    serial.next(expected);
    CHECK(loader.next() == expected);
  }
  PrefetchLoader<int> failing([](uint64_t step) -> int {
    if (step == 2) throw lathe::Error("shard broke");
    return static_cast<int>(step);
  }, 2, 2);
  CHECK(failing.next() == 0);
  CHECK(failing.next() == 1);
  CHECK(error_of([&] { failing.next(); }) == "shard broke");
}

TEST_CASE("data: CSV examples read as Python's csv module reads them", "[data][classification][python]") {
  TempDir dir;
  auto csv = dir.write("train.csv",
                       "label,sentence,other\r\n"
                       "pos,\"Good, really \"\"good\"\" film\",x\r\n"
                       "neg,\"two\nlines\",y\n"
                       "pos,plain text,z\n"
                       "neutral,\"\",w\n");
  auto ours = read_examples(csv, "sentence", "", "label");
  auto py = lathe::test::run_python(
      "import csv, json, sys\n"
      "rows = list(csv.DictReader(open(sys.argv[1], newline='')))\n"
      "print(json.dumps([[r['sentence'], r['label']] for r in rows]))\n",
      {csv.string()});
  REQUIRE(py.code == 0);
  auto expected = nlohmann::json::parse(py.out);
  REQUIRE(ours.size() == expected.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    CHECK(ours[i].text == expected[i][0].get<std::string>());
    CHECK(ours[i].label == expected[i][1].get<std::string>());
  }
  CHECK(ours[1].line == 3);
  CHECK(ours[2].line == 5);  // the row after the two-line field
}

TEST_CASE("data: TSV and JSONL examples, label maps and their errors", "[data][classification][errors]") {
  TempDir dir;
  auto tsv = dir.write("d.tsv", "a\tb\tlabel\nfirst\tsecond\t1\nthird\tfourth\t0\n");
  auto ex = read_examples(tsv, "a", "b", "label");
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].text_pair == "second");
  LabelMap labels(ex);
  CHECK(labels.names() == std::vector<std::string>{"0", "1"});
  CHECK(labels.id(ex[0], tsv) == 1);

  auto jsonl = dir.write("d.jsonl", "{\"text\": \"hi\", \"label\": 2}\n{\"text\": \"yo\"}\n");
  CHECK(error_of([&] { read_examples(jsonl, "text", "", "label"); }) == jsonl.string() + ":2: missing field 'label'");
  CHECK(error_of([&] { read_examples(tsv, "sentence", "", "label"); }) == tsv.string() + ":1: no column 'sentence' in the header");
  auto ragged = dir.write("r.tsv", "a\tlabel\nx\n");
  CHECK(error_of([&] { read_examples(ragged, "a", "", "label"); }) == ragged.string() + ":2: 1 fields, the header has 2");
  Example unseen{"t", "", "7", 9};
  CHECK(error_of([&] { labels.id(unseen, tsv); }) == tsv.string() + ":9: label '7' does not occur in the training data");
  auto open_quote = dir.write("q.csv", "text,label\n\"never closed,1\n");
  CHECK(error_of([&] { read_examples(open_quote, "text", "", "label"); }) == open_quote.string() + ":2: unterminated quoted field");
}

TEST_CASE("data: classification batches carry [CLS] A [SEP] B [SEP], type ids and truncation", "[data][classification]") {
  TempDir dir;
  auto vocab = dir.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\n");
  auto tok = lathe::tokenizer::WordPiece::from_vocab_txt(vocab);
  std::vector<Example> batch{{"the cat sat", "on the mat", "yes", 2}, {"cat", "mat", "no", 3}};
  LabelMap labels(batch);
  auto b = collate_examples(batch, tok, labels, /*max_len=*/7, vocab, /*pad_id=*/0, /*pair=*/true);
  CHECK(b.inputs.input_ids.sizes() == at::IntArrayRef({2, 7}));
  // 4 text tokens fit the budget of 7 - 3: "the cat" + "on the" (longest trimmed first)
  std::vector<int64_t> row0(b.inputs.input_ids[0].data_ptr<int64_t>(), b.inputs.input_ids[0].data_ptr<int64_t>() + 7);
  CHECK(row0 == std::vector<int64_t>{2, 5, 6, 3, 8, 5, 3});
  std::vector<int64_t> types0(b.inputs.token_type_ids[0].data_ptr<int64_t>(), b.inputs.token_type_ids[0].data_ptr<int64_t>() + 7);
  CHECK(types0 == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1});
  CHECK(b.inputs.attention_mask[1].sum().item<int64_t>() == 5);
  CHECK(b.labels[0].item<int64_t>() == 1);  // "yes" sorts after "no"
}

TEST_CASE("data: a pair task keeps its second segment when the first row's is empty", "[data][classification]") {
  // The layout follows the task (data.text_pair_field), not the first row of the batch.
  TempDir dir;
  auto vocab = dir.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\n");
  auto tok = lathe::tokenizer::WordPiece::from_vocab_txt(vocab);
  std::vector<Example> batch{{"cat", "", "no", 2}, {"the cat", "on the mat", "yes", 3}};
  LabelMap labels(batch);
  auto b = collate_examples(batch, tok, labels, /*max_len=*/16, vocab, /*pad_id=*/0, /*pair=*/true);
  auto row = [&](const at::Tensor& t, int64_t i, int64_t n) {
    return std::vector<int64_t>(t[i].data_ptr<int64_t>(), t[i].data_ptr<int64_t>() + n);
  };
  CHECK(row(b.inputs.input_ids, 0, 4) == std::vector<int64_t>{2, 6, 3, 3});  // [CLS] cat [SEP] [SEP]
  CHECK(row(b.inputs.token_type_ids, 0, 4) == std::vector<int64_t>{0, 0, 0, 1});
  CHECK(row(b.inputs.input_ids, 1, 8) == std::vector<int64_t>{2, 5, 6, 3, 8, 5, 9, 3});
  CHECK(row(b.inputs.token_type_ids, 1, 8) == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1});
  // A single-text task never adds a second segment.
  auto single = collate_examples({{"cat", "", "no", 2}}, tok, labels, 16, vocab, 0, /*pair=*/false);
  CHECK(single.inputs.input_ids.size(1) == 3);
}

TEST_CASE("data: a text file without blank lines is one document per line", "[data][prepare]") {
  TempDir dir;
  std::string text;
  for (int d = 0; d < 200; ++d) text += "Line " + std::to_string(d) + " of a corpus without paragraphs.\n";
  auto corpus = dir.write("lines.txt", text);
  std::vector<std::string> docs;
  read_documents({corpus}, InputFormat::Auto, "text", [&](std::string&& d) { docs.push_back(d); });
  REQUIRE(docs.size() == 200);
  CHECK(docs[7] == "Line 7 of a corpus without paragraphs.\n");
  // With a blank line anywhere, blank lines separate documents as before.
  auto paragraphs = dir.write("para.txt", "a\nb\n\nc\n");
  docs.clear();
  read_documents({paragraphs}, InputFormat::Auto, "text", [&](std::string&& d) { docs.push_back(d); });
  CHECK(docs == std::vector<std::string>{"a\nb\n", "c\n"});
}

TEST_CASE("data: a CSV file with a UTF-8 byte-order mark reads its first column", "[data][classification]") {
  TempDir dir;
  auto csv = dir.write("bom.csv", "\xEF\xBB\xBFtext,label\nhello,1\n");
  auto ex = read_examples(csv, "text", "", "label");
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].text == "hello");
  CHECK(ex[0].label == "1");
}

TEST_CASE("data: a directory of inputs skips hidden files and backups and refuses binary files", "[data][inputs]") {
  TempDir dir;
  dir.write("corpus/a.txt", "text\n");
  dir.write("corpus/.notes.txt", "hidden\n");
  dir.write("corpus/a.txt~", "backup\n");
  dir.write("corpus/#a.txt#", "autosave\n");
  dir.write("corpus/.git/objects/x", "git\n");
  dir.write("corpus/sub/b.txt", "more\n");
  const auto root = (dir.path() / "corpus").string();
  CHECK(lathe::io::expand_inputs({root}) ==
        std::vector<fs::path>{dir.path() / "corpus/a.txt", dir.path() / "corpus/sub/b.txt"});
  const auto bin = dir.write("corpus/sub/model.bin", std::string("\x01\x00\x02", 3));
  CHECK(error_of([&] { lathe::io::expand_inputs({root}); }) ==
        "input '" + bin.string() + "' (in the directory '" + root +
            "') holds NUL bytes: not a text or JSONL file; move it out, or name the files with a glob");
}
