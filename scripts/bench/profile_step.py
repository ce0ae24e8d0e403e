#!/usr/bin/env python3
"""Where a training step's time goes, op by op: lathe and PyTorch eager side by side.

    .venv/bin/python scripts/bench/profile_step.py [--layers 6 --width 384 --heads 6 --seq 256
                                                    --batch 8 --vocab 8192 --steps 5] [--bf16] [--top 25]

lathe: lathe_bench_train --profile records the timed steps (forward, backward, clipping, fused
AdamW) with LibTorch's profiler; PyTorch: the same GPT shape and step (scripts/bench/train_bench.py's
model) under torch.profiler. Both are reduced to the self time of each aten op per step (time
in the op minus the ops it calls), on all threads, and printed as one table, largest first.
Profiling adds overhead to both sides alike; compare the columns, not with train_bench's tok/s.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_bench import BENCH, GPT  # noqa: E402  (the same model as the speed benchmark)


def lathe_profile(a, trace):
    args = [BENCH, "--layers", str(a.layers), "--width", str(a.width), "--heads", str(a.heads), "--seq", str(a.seq),
            "--batch", str(a.batch), "--vocab", str(a.vocab), "--steps", str(a.steps), "--warmup", "2",
            "--mode", "train", "--profile", trace] + (["--bf16"] if a.bf16 else [])
    subprocess.run(args, check=True, capture_output=True)
    with open(trace) as f:
        events = [e for e in json.load(f) if e.get("ph") == "X"]
    # Self time: an event's duration minus its direct children's, per thread.
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    stats = collections.defaultdict(lambda: [0, 0.0])  # name -> [calls, self us]
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        def close(item):
            stats[item[1]][1] += max(0.0, item[3] - item[2])
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                close(stack.pop())
            if stack:
                stack[-1][2] += e["dur"]
            stats[e["name"]][0] += 1
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
        while stack:
            close(stack.pop())
    return {k: (c / a.steps, us / 1000 / a.steps) for k, (c, us) in stats.items()}


def torch_profile(a):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = GPT(a.vocab, a.seq, a.layers, a.width, a.heads)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), fused=True)
    x = torch.randint(0, a.vocab, (a.batch, a.seq))
    y = torch.randint(0, a.vocab, (a.batch, a.seq))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(model(x).reshape(-1, a.vocab).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        loss.item()

    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], acc_events=True) as prof:
        for _ in range(a.steps):
            step()
    return {e.key: (e.count / a.steps, e.self_cpu_time_total / 1000 / a.steps) for e in prof.key_averages()}


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(layers=6, width=384, heads=6, seq=256, batch=8, vocab=8192, steps=5, top=25).items():
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = lathe_profile(a, os.path.join(tmp, "trace.json"))
    theirs = torch_profile(a)
    print(f"GPT {a.layers}x{a.width}, {a.heads} heads, seq {a.seq}, batch {a.batch}, vocab {a.vocab}, "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}; train step (clip + fused AdamW); self time per step")
    print(f"{'op':50}{'lathe calls':>12}{'lathe ms':>10}{'torch calls':>12}{'torch ms':>10}{'lathe/torch':>12}")
    names = sorted(set(ours) | set(theirs), key=lambda n: -max(ours.get(n, (0, 0))[1], theirs.get(n, (0, 0))[1]))
    for n in names[: a.top]:
        oc, om = ours.get(n, (0, 0.0))
        tc, tm = theirs.get(n, (0, 0.0))
        ratio = f"{om / tm:.2f}x" if tm > 0 and om > 0 else "-"
        print(f"{n[:49]:50}{oc:12.0f}{om:10.2f}{tc:12.0f}{tm:10.2f}{ratio:>12}")
    total_o = sum(m for _, m in ours.values())
    total_t = sum(m for _, m in theirs.values())
    print(f"{'all ops (sum of self times)':50}{'':12}{total_o:10.2f}{'':12}{total_t:10.2f}{total_o / total_t:11.2f}x")


if __name__ == "__main__":
    main()
