"""Reference data for the sft tests (tests/test_sft.cpp), from transformers and tokenizers.

  tokenizer DIR CORPUS     a byte-level BPE (tokenizers) trained on CORPUS with the ChatML special
                           tokens, saved as DIR/tokenizer.json with DIR/tokenizer_config.json holding
                           a ChatML chat template whose assistant turns are {% generation %} blocks
                           and eos_token <|im_end|>
  conversations OUT N SEED N random conversations (system or not, 1-4 user / assistant turns) as
                           JSONL {"messages": [...]}
  masks DIR JSONL OUT      for each conversation of JSONL: transformers' apply_chat_template(tokenize=True,
                           return_dict=True, return_assistant_tokens_mask=True) with DIR's tokenizer and
                           template; OUT holds [{"ids": [...], "mask": [...]}, ...]
"""
import json
import random
import sys

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tokenizer(out_dir, corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([corpus], trainer)
    tok.save(f"{out_dir}/tokenizer.json")
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "chat_template": CHATML}, open(f"{out_dir}/tokenizer_config.json", "w"), indent=1)


WORDS = ["And", "the", "LORD", "said", "unto", "Moses", "light", "day", "night", "water", "earth", "é", "ﬁ",
         "\"quoted\"", "it's", "  spaced ", "new\nline", "42", "?", "!", "—", "日本"]


def conversations(out_file, n, seed):
    rng = random.Random(int(seed))
    with open(out_file, "w") as f:
        for _ in range(int(n)):
            msgs = []
            if rng.random() < 0.5:
                msgs.append({"role": "system", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))})
            for _ in range(rng.randint(1, 4)):
                for role in ("user", "assistant"):
                    msgs.append({"role": role, "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))})
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


def masks(tok_dir, jsonl, out_file):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = []
    for line in open(jsonl):
        msgs = json.loads(line)["messages"]
        r = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        out.append({"ids": list(r["input_ids"]), "mask": list(r["assistant_masks"])})
    json.dump(out, open(out_file, "w"))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "tokenizer":
        tokenizer(*sys.argv[2:4])
    elif cmd == "conversations":
        conversations(*sys.argv[2:5])
    elif cmd == "masks":
        masks(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown command {cmd}")
