// genai_config.json (lathe/export/genai.hpp).

#include "lathe/export/genai.hpp"

#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"

namespace lathe::export_ {

std::string genai_config(const models::AnyModel& model, const GenAiOptions& options) {
  if (model.arch() != models::Arch::Gpt)
    throw Error("ONNX Runtime GenAI runs decoders; this model is a " + model.kind_name());
  const auto& o = model.options();
  const auto eos = options.eos_id;
  using nlohmann::ordered_json;
  const ordered_json inputs{{"input_ids", "input_ids"},
                            {"attention_mask", "attention_mask"},
                            {"position_ids", "position_ids"},
                            {"past_key_names", "past_key_values.%d.key"},
                            {"past_value_names", "past_key_values.%d.value"}};
  const ordered_json outputs{{"logits", "logits"},
                             {"present_key_names", "present.%d.key"},
                             {"present_value_names", "present.%d.value"}};
  const ordered_json decoder{{"session_options", {{"log_id", "onnxruntime-genai"}, {"provider_options", ordered_json::array()}}},
                             {"filename", options.decoder_file},
                             {"head_size", o.head_dim()},
                             {"hidden_size", o.d_model},
                             {"inputs", inputs},
                             {"outputs", outputs},
                             {"num_attention_heads", o.n_head},
                             {"num_hidden_layers", o.n_layer},
                             {"num_key_value_heads", o.kv_heads()}};
  // GenAI's decoder-only pipeline (its "llama" type) runs any graph with these inputs and
  // outputs, GPT-2's included.
  const ordered_json config{
      {"model",
       {{"bos_token_id", options.bos_id >= 0 ? options.bos_id : eos},
        {"context_length", o.max_seq_len},
        {"decoder", decoder},
        {"eos_token_id", eos},
        {"pad_token_id", options.pad_id >= 0 ? options.pad_id : eos},
        {"type", "llama"},
        {"vocab_size", o.vocab_size}}},
      {"search",
       {{"diversity_penalty", 0.0},
        {"do_sample", false},
        {"early_stopping", true},
        {"length_penalty", 1.0},
        {"max_length", o.max_seq_len},
        {"min_length", 0},
        {"no_repeat_ngram_size", 0},
        {"num_beams", 1},
        {"num_return_sequences", 1},
        {"past_present_share_buffer", false},
        {"repetition_penalty", 1.0},
        {"temperature", 1.0},
        {"top_k", 1},
        {"top_p", 1.0}}}};
  return config.dump(2);
}

}  // namespace lathe::export_
