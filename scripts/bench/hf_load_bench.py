#!/usr/bin/env python3
"""Loading a sharded bfloat16 Hugging Face checkpoint: `lathe generate --model DIR` vs transformers'
`AutoModelForCausalLM.from_pretrained`, same directory, side by side in one run.

    .venv/bin/python scripts/bench/hf_load_bench.py [--preset llama-1b | --preset llama-250m]
        [--shard 2GB] [--rounds 3] [--threads 2] [--out DIR]

The checkpoint is Llama 3.2 1B's shape (1.24B parameters: 16 layers, width 2048, 32 heads, 8
key/value heads, MLP 8192, vocabulary 128256, tied head, llama3 rope scaling) with random normal
weights, written by transformers in bfloat16 (`save_pretrained(max_shard_size=--shard)`) into
DIR/model, with a byte-level BPE tokenizer trained by HF `tokenizers` on data/kjv. llama-250m is
the same family at about 250M parameters (a 500 MB checkpoint).

Each side is its own process, launched by this script, doing what a user does to get a model's
first token: load the directory and greedily generate one token from a short prompt, in
bfloat16 (lathe `--dtype bf16`; transformers `dtype=torch.bfloat16`). Reported per side: wall
time from launch to exit, and peak resident memory (the child's ru_maxrss from wait4), also as a
multiple of the checkpoint's bytes on disk. The same is measured for a 1-layer model of the same
kind (width 64, the tokenizer's 8192 tokens): that process's peak is the side's baseline (its
libraries, tokenizer and runtime). Peak minus baseline, as a multiple of the checkpoint's bytes,
compares the two sides only roughly: a peak is the most a process held at any moment, and the
baseline's may come at another moment than the model's. tests/test_models.cpp measures lathe's
own cost of loading in-process ("a 500 MB bfloat16 checkpoint ..."). Rounds alternate the peers;
medians.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATHE = os.path.join(os.environ.get("LATHE_BUILD_DIR", os.path.join(ROOT, "build")), "lathe")
PROMPT = "In the beginning God created the heaven"

PRESETS = {
    "llama-1b": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256),
    "llama-250m": dict(num_hidden_layers=8, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                       intermediate_size=4096, vocab_size=128256),
    # The baseline: the same process with a model of no size.
    "llama-tiny": dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, vocab_size=8192),
}

HF_CHILD = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
path, threads, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
tok = PreTrainedTokenizerFast(tokenizer_file=path + "/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
ids = torch.tensor([tok.encode(prompt)])
with torch.no_grad():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                         pad_token_id=0)
print(tok.decode(out[0]))
"""


def make_model(a, out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    path = os.path.join(out, "model")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(path, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([os.path.join(ROOT, "data/kjv/kjv.txt")], trainer)
    tok.save(os.path.join(path, "tokenizer.json"))
    cfg = LlamaConfig(**PRESETS[a.preset], max_position_embeddings=131072, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.tie_weights()  # to_empty gave the head a tensor of its own: the checkpoint holds one table
    model.save_pretrained(path, max_shard_size=a.shard)
    return path


def measured(cmd, env=None):
    """Wall seconds and peak RSS (bytes) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # wait4 reaps the child itself and gives its own rusage (not the sum over all children).
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{err.decode(errors='replace')}")
    return wall, usage.ru_maxrss * 1024, out.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama-1b")
    ap.add_argument("--shard", default="2GB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/lathe-hf-load-bench")
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_only:
        make_model(a, os.path.join(a.out, a.preset))
        return
    # Made by a child process: a child's peak RSS counts what it shared with this process before
    # its exec, so this process never holds the model.
    subprocess.run([sys.executable, __file__, "--make-only", "--preset", a.preset, "--shard", a.shard, "--out", a.out],
                   check=True)
    subprocess.run([sys.executable, __file__, "--make-only", "--preset", "llama-tiny", "--shard", a.shard, "--out",
                    a.out], check=True)
    path = os.path.join(a.out, a.preset, "model")
    tiny = os.path.join(a.out, "llama-tiny", "model")
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    disk = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    print(f"checkpoint: {path}: {len(files)} safetensors file(s), {disk / 1e9:.2f} GB bfloat16")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))

    def commands(model):
        lathe = [LATHE, "generate", "--model", model, "--tokenizer", os.path.join(model, "tokenizer.json"), "--prompt",
                 PROMPT, "--max-new-tokens", "1", "--greedy", "--dtype", "bf16", "--set", f"run.threads={a.threads}"]
        return {"lathe": lathe, "transformers": [sys.executable, "-c", HF_CHILD, model, str(a.threads), PROMPT]}

    big, small = commands(path), commands(tiny)
    results = {"lathe": [], "transformers": []}
    baseline = {"lathe": [], "transformers": []}
    for r in range(a.rounds):
        order = ["lathe", "transformers"]
        if r % 2:
            order.reverse()
        for name in order:
            wall, rss, text = measured(big[name], env)
            results[name].append((wall, rss))
            base = measured(small[name], env)[1]
            baseline[name].append(base)
            print(f"  round {r + 1} {name}: {wall:.2f} s, peak RSS {rss / 1e9:.2f} GB (baseline {base / 1e9:.2f} GB), "
                  f"text {text.strip()!r}")
    print(f"\n{a.preset}, {a.threads} threads, medians of {a.rounds}:")
    print(f"{'':14} {'load + 1 token':>15} {'peak RSS':>10} {'x checkpoint':>13} {'baseline':>10} "
          f"{'(peak - baseline) x checkpoint':>31}")
    med = {}
    for name, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        rss = statistics.median(m for _, m in rows)
        base = statistics.median(baseline[name])
        med[name] = (wall, rss, rss - base)
        print(f"{name:14} {wall:13.2f} s {rss / 1e9:8.2f} GB {rss / disk:12.2f}x {base / 1e9:8.2f} GB "
              f"{(rss - base) / disk:30.2f}x")
    print(f"lathe / transformers: time {med['lathe'][0] / med['transformers'][0]:.2f}x, "
          f"peak memory {med['lathe'][1] / med['transformers'][1]:.2f}x, "
          f"peak over baseline {med['lathe'][2] / med['transformers'][2]:.2f}x")


if __name__ == "__main__":
    main()
