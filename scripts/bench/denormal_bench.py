#!/usr/bin/env python3
"""Denormal floats on this CPU: what they cost, and what flushing them (lathe's default) costs.

    .venv/bin/python scripts/bench/denormal_bench.py

1. Kernels, PyTorch (the same ATen lathe runs): F.linear (2048 x 768 by 768 x 768, fp32) on normal
   inputs and on inputs of which 1% or all are denormal, once with IEEE denormals (PyTorch's
   default) and once with flush-to-zero / denormals-are-zero set before the thread pool starts
   (what lathe's main() does), each in a fresh process; the best of 5 after a warm-up.
2. lathe's training step (lathe_bench_train, GPT 2 x 128, seq 64, batch 8) with its default and
   with LATHE_KEEP_DENORMALS=1, alternating, 3 rounds, medians: flushing costs nothing on normal
   numbers.
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(os.environ.get("LATHE_BUILD_DIR", os.path.join(ROOT, "build")), "lathe_bench_train")


def kernel_child(flush):
    import torch
    import torch.nn.functional as F
    torch.set_flush_denormal(flush == "1")  # before any parallel work: the pool's threads inherit it
    torch.manual_seed(0)
    w = torch.randn(768, 768)
    normal = torch.randn(2048, 768)
    # Denormal values written through an integer view (a float computation would be flushed).
    bits = torch.randint(1, 1 << 22, (2048, 768), dtype=torch.int32)
    denormal = bits.view(torch.float32).clone()
    some = normal.clone()
    mask = torch.rand(2048, 768) < 0.01
    some[mask] = denormal[mask]

    def best(x):
        F.linear(x, w)
        t = float("inf")
        for _ in range(5):
            s = time.perf_counter()
            F.linear(x, w)
            t = min(t, time.perf_counter() - s)
        return t * 1000

    print(json.dumps({"normal": best(normal), "1% denormal": best(some), "all denormal": best(denormal)}))


def run_child(flush):
    r = subprocess.run([sys.executable, __file__, "--kernel-child", flush], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def lathe_step(keep):
    env = dict(os.environ, LATHE_KEEP_DENORMALS=keep)
    args = ["--layers", "2", "--width", "128", "--heads", "2", "--seq", "64", "--batch", "8", "--vocab", "2048",
            "--steps", "20", "--warmup", "3", "--mode", "train"]
    r = subprocess.run([BENCH, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--kernel-child":
        kernel_child(sys.argv[2])
        return
    ieee, flushed = run_child("0"), run_child("1")
    print("F.linear 2048x768 @ 768x768 fp32, ms (best of 5):")
    print(f"  {'inputs':14}{'IEEE denormals':>16}{'flushed':>10}{'ratio':>8}")
    for k in ieee:
        print(f"  {k:14}{ieee[k]:16.2f}{flushed[k]:10.2f}{ieee[k] / flushed[k]:7.1f}x")
    runs = {"flushed (default)": [], "LATHE_KEEP_DENORMALS=1": []}
    for _ in range(3):
        runs["flushed (default)"].append(lathe_step("0"))
        runs["LATHE_KEEP_DENORMALS=1"].append(lathe_step("1"))
    med = {k: sorted(v)[1] for k, v in runs.items()}
    print("lathe training step (GPT 2x128, seq 64, batch 8), tokens/s, median of 3:")
    for k, v in med.items():
        print(f"  {k:24}{v:9.0f}  ({', '.join(f'{x:.0f}' for x in runs[k])})")
    print(f"  flushed / kept: {med['flushed (default)'] / med['LATHE_KEEP_DENORMALS=1']:.3f}x")


if __name__ == "__main__":
    main()
