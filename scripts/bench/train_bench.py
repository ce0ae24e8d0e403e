#!/usr/bin/env python3
"""GPT training-step speed and memory: lathe vs PyTorch eager (and torch.compile) on the same
shape, the same threads, side by side in one run.

    .venv/bin/python scripts/bench/train_bench.py [--layers 6 --width 384 --heads 6 --seq 256
                                                   --batch 8 --vocab 8192 --steps 10] [--no-compile]
                                                  [--bf16] [--device cuda --peak-tflops 989]

mode step  = forward + backward (the models issue's figure);
mode train = forward + backward + global-norm clipping + fused AdamW (the trainer issue's figure).
The PyTorch model below is a GPT-2 block stack written the usual way (nanoGPT style): fused QKV,
F.scaled_dot_product_attention(is_causal=True), tanh GELU, pre-LN, tied embedding.
Peak memory is the process's peak RSS; "delta" subtracts the RSS before the model was built.
GEMM share: the machine's own matrix-product rate is measured in the same run (F.linear at the
step's weight shapes: QKV, output projection, MLP in and out per layer and the vocabulary head,
batch * seq rows, in fp32 and, with --bf16, in bf16; the best of at least 3 repetitions per
shape, FLOP-weighted), and each peer's step is put against it as 6 * W * tokens/s, W being the
weights of those products (the training FLOPs of the step's linear layers; attention's score
products are left out of both).
On cuda: MFU = 6 * parameters * tokens/s over --peak-tflops (the GPU's dense peak for the dtype;
H200 bf16: 989), and PyTorch's peak GPU memory (torch.cuda.max_memory_allocated).
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(os.environ.get("LATHE_BUILD_DIR", os.path.join(ROOT, "build")), "lathe_bench_train")


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, seq, layers, d, h):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for b in self.blocks:
            x = b(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def linear_shapes(a):
    """(out, in) of every matrix product of a training step's linear layers, forward order."""
    d = a.width
    return [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)] * a.layers + [(a.vocab, d)]


def gemm_rate(a, dtype):
    """FLOP/s of F.linear over the step's weight shapes at batch * seq rows (best repetition per shape)."""
    rows = a.batch * a.seq
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    best = {}
    with torch.no_grad():
        for shape in set(linear_shapes(a)):
            x = torch.randn(rows, shape[1], dtype=dtype, device=a.device)
            w = torch.randn(*shape, dtype=dtype, device=a.device)
            for _ in range(2):
                F.linear(x, w)
            sync()
            times = []
            while len(times) < 3 or (len(times) < 50 and sum(times) < 0.25):
                t0 = time.perf_counter()
                F.linear(x, w)
                sync()
                times.append(time.perf_counter() - t0)
            best[shape] = min(times)
    flops = sum(2 * rows * o * i for o, i in linear_shapes(a))
    return flops / sum(best[s] for s in linear_shapes(a))


def python_run(a, mode, compiled, bf16):
    base = rss_mb()
    torch.manual_seed(0)
    model = GPT(a.vocab, a.seq, a.layers, a.width, a.heads).to(a.device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compiled else model
    x = torch.randint(0, a.vocab, (a.batch, a.seq)).to(a.device)
    y = torch.randint(0, a.vocab, (a.batch, a.seq)).to(a.device)
    seconds = 0.0
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(x)
            loss = F.cross_entropy(logits.reshape(-1, a.vocab).float(), y.reshape(-1))
        loss.backward()
        if mode == "train":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        opt.zero_grad()  # set_to_none, PyTorch's default and lathe's behaviour
        loss.item()
        if s >= a.warmup:
            seconds += time.perf_counter() - t0
    out = {"tokens_per_s": a.batch * a.seq * a.steps / seconds, "step_ms": 1000 * seconds / a.steps,
           "peak_rss_mb": rss_mb(), "delta_rss_mb": rss_mb() - base,
           "params": sum(p.numel() for p in model.parameters())}
    if a.device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(layers=6, width=384, heads=6, seq=256, batch=8, vocab=8192, steps=10, warmup=3).items():
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each peer; medians are compared")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="cuda: the GPU's peak for MFU")
    ap.add_argument("--json", default="", help="also write the medians to this file")
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:  # one PyTorch measurement in a fresh process (clean peak RSS)
        mode, compiled = a.child.split(":")
        print(json.dumps(python_run(a, mode, compiled == "1", a.bf16)))
        return
    shape = [f"--{k}" for k in ("layers", "width", "heads", "seq", "batch", "vocab", "steps", "warmup")]
    args = []
    for flag in shape:
        args += [flag, str(getattr(a, flag[2:]))]
    if a.bf16:
        args.append("--bf16")
    args += ["--device", a.device]
    print(f"GPT {a.layers} layers, width {a.width}, {a.heads} heads, seq {a.seq}, batch {a.batch}, vocab {a.vocab}; "
          f"{a.device if a.device == 'cuda' else str(torch.get_num_threads()) + ' threads'}, "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}, {a.steps} timed steps")
    print(f"{a.rounds} alternating round(s) per peer; the median run is shown (shared CPUs are noisy)")
    rates = {"fp32": gemm_rate(a, torch.float32)}
    if a.bf16:
        rates["bf16"] = gemm_rate(a, torch.bfloat16)
    step_rate = rates["bf16" if a.bf16 else "fp32"]
    linear_weights = sum(o * i for o, i in linear_shapes(a))
    print("GEMM rate here (F.linear at the step's shapes, %d rows): " % (a.batch * a.seq) +
          ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()) +
          f"; GEMM share = 6 * {linear_weights / 1e6:.1f}M linear weights * tok/s over the "
          f"{'bf16' if a.bf16 else 'fp32'} rate")
    peers = ["lathe"] + (["lathe graphs"] if a.device == "cuda" else []) + ["PyTorch eager"] + \
        ([] if a.no_compile else ["torch.compile"])
    results = {}
    for mode in ("step", "train"):
        runs = {p: [] for p in peers}
        for _ in range(a.rounds):
            for peer in peers:
                if peer.startswith("lathe"):  # "lathe graphs": train.cuda_graphs' captured micro-step
                    cmd = [BENCH, *args, "--mode", mode] + (["--cuda-graphs"] if peer == "lathe graphs" else [])
                else:
                    cmd = [sys.executable, __file__, *args, "--child", f"{mode}:{int(peer == 'torch.compile')}"]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"  {peer}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr else '?'})")
                    continue
                runs[peer].append(json.loads(out.stdout.strip().splitlines()[-1]))
        median = {p: sorted(r, key=lambda x: x["tokens_per_s"])[len(r) // 2] for p, r in runs.items() if r}
        print(f"\nmode {mode} ({'forward + backward' if mode == 'step' else 'forward + backward + clip + AdamW'}):")
        for name, r in median.items():
            ratio = median["lathe"]["tokens_per_s"] / r["tokens_per_s"]
            spread = ", ".join(f"{x['tokens_per_s']:.0f}" for x in runs[name])
            mfu = ""
            if a.peak_tflops > 0:
                r["mfu"] = 6 * r["params"] * r["tokens_per_s"] / (a.peak_tflops * 1e12)
                mfu = f"  MFU {100 * r['mfu']:.1f}%"
            r["gemm_share"] = 6 * linear_weights * r["tokens_per_s"] / step_rate
            mfu += f"  GEMM share {100 * r['gemm_share']:.0f}%"
            gpu = f"  peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""
            print(f"  {name:14s} {r['tokens_per_s']:7.0f} tok/s ({spread})  {r['step_ms']:7.1f} ms/step  peak RSS "
                  f"{r['peak_rss_mb']:7.1f} MB (+{r['delta_rss_mb']:.1f}){gpu}{mfu}  lathe/this {ratio:.3f}x")
        results[mode] = median
    results["gemm_rate_flops"] = rates
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
