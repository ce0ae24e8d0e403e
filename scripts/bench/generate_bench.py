#!/usr/bin/env python3
"""Text generation on the CPU: `lathe generate` vs transformers' `generate`, same weights, side by
side in one run.

    .venv/bin/python scripts/bench/generate_bench.py [--layers 12 --width 768 --heads 12
        --vocab 50257 --new 128 --rounds 3 --batch 8] [--dtypes fp32,bf16,int8] [--out DIR]

The model is GPT-2 124M's shape with random weights (seed 0), written by transformers
(`save_pretrained`, model.safetensors) into DIR/model with a byte-level BPE tokenizer trained by
HF `tokenizers` on data/kjv (its vocabulary is smaller than the model's: both sides are held to
the tokenizer's ids, lathe by its vocabulary limit, transformers by `suppress_tokens` on the
rest). Greedy, 128 new tokens, no stop token, batch 1.

Each side runs as its own process, launched by this script, which timestamps every chunk of its
stdout as it arrives (both print each token as it is chosen and flush):
  first token = launch to the first generated text (process start, imports, load, prompt);
  decode tok/s = (tokens - 1) / (last chunk - first chunk).
fp32 compares lathe fp32 with transformers fp32; bf16 compares lathe with --dtype bf16 (weights
and activations bfloat16) with transformers in bfloat16 (`torch_dtype=torch.bfloat16`) and the
ratio to transformers fp32 as well; int8 is lathe's int8 weight-only model (made by its quantize
stage from the same weights) decoded with --dtype bf16, against transformers fp32; "same text" says whether lathe printed the text of
transformers' greedy tokens. The batch line is lathe's own figures (its stderr): --batch prompts
at once (several --prompt: left padding, one forward per step for all), tokens/s over the whole
batched generation, against one prompt's decode tokens/s. Rounds alternate the peers; medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATHE = os.path.join(os.environ.get("LATHE_BUILD_DIR", os.path.join(ROOT, "build")), "lathe")
PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form"
PROMPTS = [
    PROMPT,
    "And God said, Let there be light",
    "The LORD is my shepherd; I shall not want.",
    "Blessed are the meek: for they shall inherit the earth.",
    "And it came to pass in those days, that there went out a decree",
    "Vanity of vanities, saith the preacher",
    "For God so loved the world",
    "Wisdom is the principal thing; therefore get wisdom",
]

HF_CHILD = r"""
import sys, json, time, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.generation.streamers import BaseStreamer
path, dtype, new, limit, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
prompts = [prompt]
torch.set_num_threads(int(sys.argv[6]))
tok = PreTrainedTokenizerFast(tokenizer_file=path + "/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
class Out(BaseStreamer):
    def __init__(self):
        self.first = True
    def put(self, value):
        if self.first:  # the prompt
            self.first = False
            return
        sys.stdout.write("t"); sys.stdout.flush()
    def end(self):
        pass
suppress = list(range(limit, model.config.vocab_size))
with torch.inference_mode():
    ids = torch.tensor([tok.encode(prompts[0])])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, suppress_tokens=suppress, streamer=Out(), pad_token_id=0)
    gen = [out[0, ids.shape[1]:].tolist()]
sys.stderr.write("TOKENS " + json.dumps(gen) + "\n")
"""


def timed_stream(cmd, env=None):
    """Runs cmd; returns (launch->first stdout byte, launch->last stdout byte, launch->exit, stdout, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = last = None
    chunks = []
    while True:
        b = os.read(p.stdout.fileno(), 65536)
        if not b:
            break
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        chunks.append(b)
    err = p.stderr.read().decode()
    p.wait()
    end = time.perf_counter()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{err}")
    return first - t0, last - t0, end - t0, b"".join(chunks).decode(errors="replace"), err


def make_model(a, out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    path = os.path.join(out, "model")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    os.makedirs(path, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # <|endoftext|> separates documents in lathe's shards (the int8 line); transformers' config
    # has no eos and lathe's greedy text is checked whole against transformers'.
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([os.path.join(ROOT, "data/kjv/kjv.txt")], trainer)
    tok.save(os.path.join(path, "tokenizer.json"))
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=a.layers, n_embd=a.width, n_head=a.heads, vocab_size=a.vocab, n_positions=1024,
                     bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def quantized(a, path):
    """The model's int8 weight-only form (bfloat16 activations) by lathe's quantize stage (RTN,
    per output channel; the tied output head stays float), made once."""
    out = os.path.join(a.out, "int8")
    model = os.path.join(out, "quantized", "model.safetensors")
    if not os.path.exists(model):
        subprocess.run([LATHE, "run", os.path.join(ROOT, "recipes/gpt/tiny_quantize.yaml"), "--force",
                        "--set", "pipeline=[data,quantize]", "--set", f"run.out_dir={out}",
                        "--set", f"tokenizer.path={path}/tokenizer.json", "--set", f"data.shard_dir={out}/shards",
                        "--set", "quantize.source=checkpoint", "--set", f"quantize.checkpoint={path}",
                        "--set", "quantize.method=int8_weight_only", "--set", "quantize.activations=bfloat16",
                        "--set", f"model.vocab_size={a.vocab}", "--set", "eval.batches=4"],
                       check=True, capture_output=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="prompts of the batched line (0: skip it)")
    ap.add_argument("--dtypes", default="fp32,bf16,int8")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/lathe-generate-bench")
    ap.add_argument("--json", default="", help="also write the medians to this file")
    a = ap.parse_args()
    path = make_model(a, a.out)
    with open(os.path.join(path, "tokenizer.json")) as f:
        limit = len(json.load(f)["model"]["vocab"])
    py = sys.executable
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))

    def lathe(dtype, prompts):
        model, dtype = (quantized(a, path), "bf16") if dtype == "int8" else (path, dtype)
        cmd = [LATHE, "generate", "--model", model, "--tokenizer", os.path.join(path, "tokenizer.json"), "--greedy",
               "--max-new-tokens", str(a.new), "--dtype", dtype]
        for p in prompts:
            cmd += ["--prompt", p]
        first, last, end, out, err = timed_stream(cmd, env)
        counts = [int(line.split()[0][1:]) for line in err.splitlines() if line.startswith("[") and "tokens" in line]
        batch = [float(line.split()[-2]) for line in err.splitlines() if line.startswith("batch of")]
        return first, last, end, sum(counts), out, batch[0] if batch else 0.0

    def hf(dtype, prompt):
        cmd = [py, "-c", HF_CHILD, path, dtype, str(a.new), str(limit), prompt, str(a.threads)]
        first, last, end, out, err = timed_stream(cmd, env)
        tokens = json.loads(err.split("TOKENS ", 1)[1].splitlines()[0])
        return first, last, end, sum(len(t) for t in tokens), tokens

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    results = {}
    print(f"GPT {a.layers}x{a.width} vocab {a.vocab} (tokenizer {limit}), greedy, {a.new} new tokens, "
          f"{a.threads} threads, {a.rounds} rounds (medians)")
    for dtype in a.dtypes.split(","):
        if dtype == "int8":
            continue  # below, against transformers fp32
        rows = {"lathe": [], "transformers": []}
        same = True
        for _ in range(a.rounds):
            f, l, e, n, out, _ = lathe(dtype, [PROMPT])
            rows["lathe"].append((f, (n - 1) / (l - f), e))
            f, l, e, n, toks = hf(dtype, PROMPT)
            rows["transformers"].append((f, (n - 1) / (l - f), e))
            same = same and out.rstrip("\n") == PROMPT + tok.decode(toks[0])
        med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
        results[dtype] = med
        for k, (f, tps, e) in med.items():
            print(f"  {dtype:5s} {k:13s} first token {f:6.2f} s   decode {tps:7.1f} tok/s   total {e:6.2f} s")
        print(f"  {dtype:5s} lathe / transformers: decode {med['lathe'][1] / med['transformers'][1]:.2f}x, "
              f"first token {med['transformers'][0] / med['lathe'][0]:.2f}x sooner; same text: {same}")
    if "bf16" in results and "fp32" in results:
        print(f"  lathe bf16 / transformers fp32 decode: "
              f"{results['bf16']['lathe'][1] / results['fp32']['transformers'][1]:.2f}x")
    if "int8" in a.dtypes.split(","):
        runs = []
        for _ in range(a.rounds):
            f, l, e, n, _, _ = lathe("int8", [PROMPT])
            runs.append((f, (n - 1) / (l - f), e))
        f, tps, e = [statistics.median(x[i] for x in runs) for i in range(3)]
        results["int8"] = {"lathe": [f, tps, e]}
        print(f"  int8  lathe         first token {f:6.2f} s   decode {tps:7.1f} tok/s   total {e:6.2f} s"
              f"   (int8 weight-only blocks, bf16 activations and head)")
        if "fp32" in results:
            print(f"  lathe int8 / transformers fp32 decode: {tps / results['fp32']['transformers'][1]:.2f}x")
    if a.batch > 1:
        # lathe's own figures (stderr): one prompt's decode tokens/s, and the batch's tokens over
        # the whole batched generation (its prompt pass included).
        for dtype in [d for d in a.dtypes.split(",") if d != "int8"]:
            one, many = [], []
            for _ in range(a.rounds):
                f, l, e, n, _, _ = lathe(dtype, [PROMPT])
                one.append((n - 1) / (l - f))
                many.append(lathe(dtype, PROMPTS[: a.batch])[5])
            o, m = statistics.median(one), statistics.median(many)
            print(f"  {dtype:5s} lathe batch of {a.batch}: {m:.1f} tok/s vs one prompt {o:.1f} tok/s: {m / o:.2f}x")
            results[f"batch_{dtype}"] = {"batch_tok_s": m, "one_tok_s": o}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
