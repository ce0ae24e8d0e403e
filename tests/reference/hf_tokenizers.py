"""Reference side of the tokenizer tests: Hugging Face `tokenizers` trains, loads and encodes.

    hf_tokenizers.py edge_corpus OUT.json [REAL_TEXT]      generated edge cases (+ real lines)
    hf_tokenizers.py train_bpe CORPUS OUTDIR VOCAB_SIZE    tokenizer.json + vocab.json/merges.txt
    hf_tokenizers.py train_wordpiece CORPUS OUTDIR VOCAB_SIZE LOWERCASE(0/1)
    hf_tokenizers.py encode TOKENIZER TEXTS.json OUT.json [--specials]
    hf_tokenizers.py decode TOKENIZER TEXTS.json OUT.json  decode(encode(text).ids) per text, its decoder as the file says
    hf_tokenizers.py encode_vocab_merges VOCAB MERGES TEXTS.json OUT.json
    hf_tokenizers.py prefix_space TOKENIZER OUT.json       the same tokenizer with ByteLevel(add_prefix_space=True)
"""
import json
import random
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers


def edge_corpus(out, real_text=None):
    rng = random.Random(1234)
    pieces = [
        "hello", "World", "HELLO", "don't", "I'M", "we'll", "they're", "you've", "she'd", "it's", "'s", "'S",
        "''", "'ll'", "rock'n'roll", "123", "3.14159", "1,000,000", "٣٤٥", "Ⅻ", "½", "²",
        "!!!", "...", "?!", "(x)", "[MASK]", "<|endoftext|>", "<|endoftext", "endoftext|>", "#", "@user", "e-mail",
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u0085", "\u2009", " \t\n ",
        "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "日本語", "中文字符", "한국어", "ひらがな", "Ελληνικά", "русский",
        "עברית", "العربية", "हिन्दी", "ภาษาไทย", "café", "cafe\u0301", "naïve", "Ångström", "İstanbul", "ß",
        "ﬁ", "Ｆｕｌｌ", "\u200b", "\u200d", "\ufeff", "\x00", "\x07", "\x1b[0m", "\x7f", "\ufffd", "a\u0308\u0301",
        "x" * 120, "ab" * 40, "0" * 30, "-" * 25, " " * 17, "\n" * 5,
    ]
    texts = ["", " ", "a", " a", "a ", "  leading", "trailing  ", "\n\nHello", "Hello\n\n", "x  y", "x \n y"]
    for _ in range(400):
        n = rng.randint(1, 12)
        parts = []
        for _ in range(n):
            parts.append(rng.choice(pieces))
            r = rng.random()
            if r < 0.5:
                parts.append(" ")
            elif r < 0.6:
                parts.append(rng.choice(["\n", "  ", "\t", ""]))
        texts.append("".join(parts))
    if real_text:
        with open(real_text, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f]
        texts += lines[:300]
        texts.append("\n".join(lines[300:400]))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)


def train_bpe(corpus, outdir, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([corpus], trainer)
    tok.save(f"{outdir}/tokenizer.json")
    tok.model.save(outdir)


def train_wordpiece(corpus, outdir, vocab_size, lowercase):
    lowercase = lowercase == "1"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=int(vocab_size), special_tokens=specials, show_progress=False)
    tok.train([corpus], trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    tok.save(f"{outdir}/tokenizer.json")
    tok.model.save(outdir)


def encode(tokenizer, texts, out, specials=False):
    tok = Tokenizer.from_file(tokenizer)
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    ids = [tok.encode(t, add_special_tokens=specials).ids for t in items]
    with open(out, "w") as f:
        json.dump(ids, f)


def decode(tokenizer, texts, out):
    tok = Tokenizer.from_file(tokenizer)
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    decoded = [tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False) for t in items]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(decoded, f, ensure_ascii=False)


def encode_vocab_merges(vocab, merges, texts, out):
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    with open(out, "w") as f:
        json.dump([tok.encode(t).ids for t in items], f)


def prefix_space(tokenizer, out):
    tok = Tokenizer.from_file(tokenizer)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.save(out)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "encode":
        encode(args[0], args[1], args[2], "--specials" in args[3:])
    else:
        {"edge_corpus": edge_corpus, "train_bpe": train_bpe, "train_wordpiece": train_wordpiece,
         "decode": decode, "encode_vocab_merges": encode_vocab_merges, "prefix_space": prefix_space}[cmd](*args)
