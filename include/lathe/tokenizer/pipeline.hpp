// The parts of a Hugging Face tokenizer.json around its model: normalizer, pre-tokenizer,
// post-processor and decoder, read from and written to the file's JSON, each doing what the
// `tokenizers` component of the same name does. A component lathe does not implement is
// refused with the JSON path of the part (`pre_tokenizer.pretokenizers[1]: ...`).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/tokenizer/regex.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::tokenizer {

/// Text on its way through normalizers and pre-tokenizers: UTF-8 and, for each byte, the span
/// of the original text it came from (offsets survive replacements and insertions).
struct TextPiece {
  std::string text;
  std::vector<Offset> origin;  // origin.size() == text.size()

  /// `text` as found at byte `base` of the original.
  static TextPiece of(std::string_view text, std::size_t base);
  TextPiece slice(std::size_t begin, std::size_t end) const;
  /// The original span of text[begin, end).
  Offset span(std::size_t begin, std::size_t end) const { return {origin[begin].first, origin[end - 1].second}; }
};

/// HF's SplitDelimiterBehavior: what becomes of the matches when a piece is split.
enum class SplitBehavior : uint8_t { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(TextPiece& piece) const = 0;
  virtual nlohmann::ordered_json to_json() const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Splits the pieces further (and may change their text, as Metaspace does).
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;
  virtual nlohmann::ordered_json to_json() const = 0;
};

/// Token strings (vocabulary spellings, special tokens' contents) to text, as HF's decode_chain.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode(std::vector<std::string>& tokens) const = 0;
  virtual nlohmann::ordered_json to_json() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual PairEncoding process(const std::vector<int32_t>& first, const std::vector<int32_t>* second) const = 0;
  virtual nlohmann::ordered_json to_json() const = 0;
};

// ------------------------------------------------------------------------------ pre-tokenizers
// The two whose settings the BPE model reads (its byte-level mode and its fast paths).

/// ByteLevel: optional leading space, optional GPT-2 regex split; the byte-to-character map is
/// the BPE model's byte-level mode.
struct ByteLevelPreTokenizer final : PreTokenizer {
  bool add_prefix_space = false;
  bool use_regex = true;
  bool trim_offsets = true;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override;
  nlohmann::ordered_json to_json() const override;
};

struct SplitPreTokenizer final : PreTokenizer {
  std::shared_ptr<const Regex> pattern;
  bool pattern_is_string = false;  // {"String": ...} rather than {"Regex": ...}
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override;
  nlohmann::ordered_json to_json() const override;
};

struct SequencePreTokenizer final : PreTokenizer {
  std::vector<std::shared_ptr<const PreTokenizer>> steps;
  void pre_tokenize(std::vector<TextPiece>& pieces) const override;
  nlohmann::ordered_json to_json() const override;
};

/// The pipeline of one tokenizer; absent parts are null.
struct Pipeline {
  std::shared_ptr<const Normalizer> normalizer;
  std::shared_ptr<const PreTokenizer> pre_tokenizer;
  std::shared_ptr<const PostProcessor> post_processor;
  std::shared_ptr<const Decoder> decoder;

  /// GPT-2's: ByteLevel pre-tokenizer (regex on), post-processor and decoder.
  static Pipeline gpt2(bool add_prefix_space = false);
  /// A byte-level pipeline that splits with `pattern` first: Sequence[Split(Isolated),
  /// ByteLevel(use_regex false)], as Llama 3's tokenizer.json and tiktoken encodings.
  static Pipeline byte_level_split(const std::string& pattern, RegexDialect dialect = RegexDialect::Oniguruma);

  /// The ByteLevel pre-tokenizer when there is one (alone or last of a Sequence).
  const ByteLevelPreTokenizer* byte_level() const;
  /// The pattern when the pre-tokenizer is exactly what byte_level_split() makes (one Split,
  /// Isolated, not inverted, then ByteLevel without regex or prefix space); null otherwise.
  const Regex* split_pattern() const;

  /// Writes "normalizer", "pre_tokenizer", "post_processor" and "decoder" into `j`.
  void to_json(nlohmann::ordered_json& j) const;
};

/// The four parts of a pipeline, as a tokenizer.json names them.
enum class PipelinePart : uint8_t { Normalizer, PreTokenizer, PostProcessor, Decoder };

/// The "type" names of `part` that lathe reads and writes, in the order an error for an unknown
/// type lists them.
std::vector<std::string> supported_types(PipelinePart part);

/// Reads the pipeline of a tokenizer.json (`file` names it in errors). `token_id` resolves the
/// special tokens the post-processors name (-1 for an unknown token).
Pipeline parse_pipeline(const nlohmann::json& tokenizer_json, const std::string& file,
                        const std::function<int32_t(std::string_view)>& token_id);

/// The pre-tokenizer a trainer recipe names: "gpt2", "cl100k", "o200k", or a regex of its own
/// (Oniguruma dialect). Returns the byte-level pipeline that splits that way.
Pipeline pipeline_for_pre_tokenizer(const std::string& name_or_regex);

}  // namespace lathe::tokenizer
