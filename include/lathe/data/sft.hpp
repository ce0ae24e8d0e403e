// Supervised fine-tuning examples: JSONL conversations rendered with a chat template, or prompt /
// completion pairs, tokenized with the tokens the loss is taken on marked; rows of one example
// (padded) or of several (packed, best-fit decreasing); and the batches made of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

namespace lathe::tokenizer {
class Tokenizer;
class ChatTemplate;
}  // namespace lathe::tokenizer

namespace lathe::data {

/// Which tokens of an example are targets of the loss.
enum class SftLoss {
  Assistant,   // every assistant turn (conversations), the completion (pairs)
  Completion,  // the last assistant turn (conversations), the completion (pairs)
  All,         // every token after the first
};

/// One example: its tokens and, for each, whether the loss predicts it.
struct SftExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> scored;  // scored[t]: token t is a target (predicted from tokens 0 .. t-1)
  std::string origin;           // "file:line", for messages
  bool truncated = false;
};

struct SftOptions {
  SftLoss loss_on = SftLoss::Assistant;
  /// Longer examples keep their first max_tokens tokens (and are counted as truncated).
  int64_t max_tokens = 0;
  /// Renders {"messages": [...]}: required for conversations.
  const tokenizer::ChatTemplate* chat_template = nullptr;
  /// What the template sees besides the messages (bos_token, eos_token, ...); ordered as
  /// Python's dicts are, so a template that prints one prints its keys in the file's order.
  nlohmann::ordered_json template_context = nlohmann::ordered_json::object();
  /// Appended to a prompt / completion pair (and scored with the completion); -1: nothing.
  int32_t eos_id = -1;
};

/// What reading the examples found, for the run's notes.
struct SftStats {
  int64_t examples = 0;   // kept
  int64_t truncated = 0;  // kept, cut to max_tokens
  int64_t unscored = 0;   // left out: no target within max_tokens tokens
  int64_t tokens = 0;     // of the kept examples
  int64_t scored = 0;     // targets among them
};

/// What a chat template sees of a tokenizer, as transformers passes its special tokens:
/// bos_token, eos_token, unk_token, pad_token, ... from tokenizer_config.json beside
/// `tokenizer_file`, and eos_token from the tokenizer where the file names none.
nlohmann::ordered_json chat_template_context(const std::filesystem::path& tokenizer_file,
                                             const tokenizer::Tokenizer& tok);

/// Reads a JSONL file: each line {"messages": [{"role", "content"}, ...]} (rendered with the chat
/// template; the assistant spans are those its {% generation %} blocks mark, else those found by
/// rendering each prefix of the conversation) or {"prompt": "...", "completion": "..."}. Errors
/// name the file and line.
std::vector<SftExample> read_sft_examples(const std::filesystem::path& path, const tokenizer::Tokenizer& tok,
                                          const SftOptions& options, SftStats& stats);

/// Rows of examples (indices into `lengths`), each holding at most `capacity` tokens: best-fit
/// decreasing (the longest example first, into the fullest row it fits). Every length must be at
/// most `capacity`. Deterministic.
std::vector<std::vector<std::size_t>> pack_examples(const std::vector<int64_t>& lengths, int64_t capacity);

/// A preference pair: the prompt followed by the chosen completion, and by the rejected one, each
/// with its completion's tokens scored.
struct PreferencePair {
  SftExample chosen, rejected;
};

/// Reads JSONL preference pairs: {"prompt": "...", "chosen": "...", "rejected": "..."} (each
/// completion followed by eos_id, as prompt / completion pairs are) or {"prompt": [messages],
/// "chosen": [messages], "rejected": [messages]} (the prompt's messages followed by each
/// completion's, rendered with the chat template, the completion's assistant turns scored).
/// Rows are cut to max_tokens as read_sft_examples cuts them; a pair either of whose rows then has nothing
/// to score is left out. `stats` counts pairs (examples, truncated: a row of the pair cut,
/// unscored) and the tokens of both rows. Errors name the file and line.
std::vector<PreferencePair> read_preference_pairs(const std::filesystem::path& path, const tokenizer::Tokenizer& tok,
                                                  const SftOptions& options, SftStats& stats);

struct SftBatch {
  at::Tensor input_ids;  // (B, T) int64, pad_id after each row's examples
  at::Tensor targets;    // (B, T) int64: the next token of the same example where it is scored, else -100
  at::Tensor segments;   // (B, T) int64: the example of each position within its row (padding: its own);
                         // undefined unless `packed`
  int64_t tokens = 0;    // real tokens
};

/// Rows of `length` tokens (0: the longest row's) from `rows` (each a list of examples).
SftBatch collate_sft(const std::vector<std::vector<const SftExample*>>& rows, int64_t length, int32_t pad_id,
                     bool packed);

}  // namespace lathe::data
