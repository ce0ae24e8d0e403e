// What a task asks of a language model, as lm-evaluation-harness's LM interface asks it:
// log-likelihoods of continuations, rolling log-likelihoods of whole documents, and greedy
// generation up to stop strings; and its implementation over a lathe GPT and its tokenizer,
// tokenizing, truncating and windowing exactly as the harness's `hf` model does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

#include "lathe/models/gpt.hpp"
#include "lathe/tokenizer/tokenizer.hpp"

namespace lathe::eval {

/// A continuation scored after a context.
struct LoglikelihoodRequest {
  std::string context;
  std::string continuation;
};

/// Its summed log-probability (natural log) and whether greedy decoding gives every token of it.
struct Loglikelihood {
  double logprob = 0;
  bool greedy = false;
};

/// A greedy generation after `context`, cut at the first of `until`.
struct GenerationRequest {
  std::string context;
  std::vector<std::string> until;
  int64_t max_gen_toks = 256;
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;
  /// Scores groups of requests; the requests of a group (one document's choices) are scored
  /// together, sharing the work of the tokens their inputs have in common.
  virtual std::vector<std::vector<Loglikelihood>> loglikelihood(
      const std::vector<std::vector<LoglikelihoodRequest>>& groups) = 0;
  /// The log-likelihood of each whole text, over the harness's disjoint rolling windows of the
  /// model's context length, each conditioned on the token before it (the prefix token first).
  virtual std::vector<double> loglikelihood_rolling(const std::vector<std::string>& texts) = 0;
  /// Greedy continuations, decoded without special tokens and cut at the first stop string
  /// (the tokenizer's end-of-text token is one too).
  virtual std::vector<std::string> generate_until(const std::vector<GenerationRequest>& requests) = 0;
};

struct ScorerOptions {
  int64_t max_length = 0;   // context length the harness would use; 0: the model's max_seq_len
  int64_t batch_size = 16;  // rows per forward where requests are batched (rolling windows)
  /// The bos_token the tokenizer's tokenizer_config.json names ("" where it names none: the
  /// prefix token is then end-of-text, as transformers' bos_token_id is None); nullopt where
  /// there is no such file: the BOS the tokenizer's post-processor adds, else end-of-text.
  std::optional<std::string> bos_token;
};

/// ScorerOptions::bos_token read from the tokenizer_config.json beside `tokenizer_file`.
std::optional<std::string> configured_bos_token(const std::filesystem::path& tokenizer_file);

/// A lathe GPT as the harness's `hf` model (a causal LM with its tokenizer):
/// - text is encoded with the tokenizer's own special tokens (a BOS where its post-processor adds
///   one), except text that already starts with the prefix token's text;
/// - a context's trailing whitespace moves to the continuation; the continuation's tokens are
///   those of encode(context + continuation) after the first len(encode(context));
/// - an empty context becomes the prefix token: the BOS (ScorerOptions::bos_token), else
///   end-of-text;
/// - the input is (context + continuation)[-(max_length + 1):][:-1].
/// Log-probabilities are computed in float32 whatever the model's dtype. Evaluation runs in
/// eval mode without gradients; the model's training flag is restored.
class GptScorer final : public LanguageModel {
 public:
  GptScorer(models::Gpt model, const tokenizer::Tokenizer& tok, ScorerOptions options = {});

  std::vector<std::vector<Loglikelihood>> loglikelihood(
      const std::vector<std::vector<LoglikelihoodRequest>>& groups) override;
  std::vector<double> loglikelihood_rolling(const std::vector<std::string>& texts) override;
  std::vector<std::string> generate_until(const std::vector<GenerationRequest>& requests) override;

  /// The (context, continuation) token ids the harness would score for a request.
  std::pair<std::vector<int64_t>, std::vector<int64_t>> encode_pair(const std::string& context,
                                                                     const std::string& continuation) const;
  /// Text as the harness's tok_encode encodes it (default special tokens).
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  int64_t prefix_token() const { return prefix_token_; }
  int64_t max_length() const { return max_length_; }
  /// Forward passes run so far, and the positions they computed (for the benchmark's notes).
  int64_t forwards() const { return forwards_; }
  int64_t positions() const { return positions_; }

 private:
  struct TokenRequest {
    std::vector<int64_t> context, continuation;
  };
  models::Gpt model_;
  const tokenizer::Tokenizer& tok_;
  ScorerOptions options_;
  int64_t max_length_ = 0;
  int64_t prefix_token_ = -1;
  std::string prefix_text_;
  std::vector<int32_t> special_ids_;
  int64_t forwards_ = 0, positions_ = 0;

  std::vector<Loglikelihood> score_group(const std::vector<TokenRequest>& group);
  std::vector<Loglikelihood> score_rows(const std::vector<TokenRequest>& rows);
  TokenRequest tokens_of(const LoglikelihoodRequest& r) const;
  std::string decode_generated(const std::vector<int64_t>& ids) const;
};

}  // namespace lathe::eval
