#!/usr/bin/env python3
"""Data pipeline speed: `lathe data prepare` MB/s, and GPT window batches per second from shards
in lathe (mmap'd shards -> int64 (B, T) tensors) vs nanoGPT's loader (numpy memmap + torch.stack),
side by side on the same shards, single thread.

    .venv/bin/python scripts/bench/data_bench.py [--seq-len 1024] [--batch 16] [--steps 2000]
"""
import argparse
import os
import re
import subprocess
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATHE = os.path.join(ROOT, "build", "lathe")
BENCH = os.path.join(ROOT, "build", "lathe_bench_loader")
HEADER = 64


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = os.path.join(tmp, "r.yaml")
        with open(recipe, "w") as f:
            f.write(f"pipeline: [tokenizer, data]\nrun:\n  out_dir: {tmp}/run\n  threads: 1\n"
                    f"tokenizer:\n  vocab_size: 8192\n"
                    f"data:\n  train_files: [{ROOT}/data/kjv/kjv.txt]\n  val_fraction: 0.01\n")
        subprocess.run([LATHE, "tokenizer", "train", recipe], check=True, capture_output=True)
        out = subprocess.run([LATHE, "data", "prepare", recipe], check=True, capture_output=True, text=True).stdout
        print("lathe data prepare (1 thread):", out.strip())
        shard = os.path.join(tmp, "run", "shards", "train_000000.bin")

        r = subprocess.run([BENCH, shard, "--seq-len", str(a.seq_len), "--batch", str(a.batch), "--steps",
                            str(a.steps)], check=True, capture_output=True, text=True).stdout
        lathe_tps = float(re.search(r"tokens_per_s=([0-9.]+)", r).group(1))

        data = np.memmap(shard, dtype=np.uint16, mode="r", offset=HEADER)  # nanoGPT's get_batch
        t0 = time.perf_counter()
        for _ in range(a.steps):
            ix = torch.randint(len(data) - a.seq_len, (a.batch,))
            x = torch.stack([torch.from_numpy(data[i:i + a.seq_len].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + a.seq_len].astype(np.int64)) for i in ix])
        np_tps = a.steps * a.batch * a.seq_len / (time.perf_counter() - t0)
        print(f"window loader, B={a.batch} T={a.seq_len}, {a.steps} batches, single thread:")
        print(f"  lathe               {lathe_tps / 1e6:8.1f} M tokens/s")
        print(f"  numpy memmap (nanoGPT) {np_tps / 1e6:5.1f} M tokens/s")
        print(f"  ratio lathe / numpy: {lathe_tps / np_tps:.2f}x")


if __name__ == "__main__":
    main()
