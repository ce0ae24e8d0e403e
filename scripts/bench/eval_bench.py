#!/usr/bin/env python3
"""A 4-choice task on the GPT-2 124M shape: lathe's task scoring against lm-evaluation-harness's `hf`
model, on the same model directory, task file and CPU threads, side by side in one run.

    .venv/bin/python scripts/bench/eval_bench.py [--docs 60] [--rounds 2] [--threads 2] [--out DIR]

The model: GPT-2 124M's shape (12 layers, width 768, 12 heads, 1024 positions, vocabulary 50257) with
random weights, saved by transformers (float32), and a byte-level BPE tokenizer trained on data/kjv.
The task: HellaSwag's shape from the King James Bible, a context of three verses and four candidate
next verses (the true one and three from elsewhere), scored by acc and acc_norm, 0-shot.

Each side runs in its own process, the sides alternating within a round: lathe as
`lathe eval --checkpoint DIR --task FILE`, the harness as lm_eval.simple_evaluate(model="hf",
batch_size=1 and 8). Reported per side: wall seconds of the whole command (model load included)
and examples per second; medians over the rounds. Both sides must agree on every acc figure.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATHE = os.path.join(os.environ.get("LATHE_BUILD_DIR", os.path.join(ROOT, "build")), "lathe")

HARNESS = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
os.environ["HF_DATASETS_OFFLINE"] = "1"; os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(int(sys.argv[3]))
import lm_eval
from lm_eval.tasks import TaskManager
model_dir, task_dir, threads, batch, out = sys.argv[1:6]
res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["kjv_bench"],
                              task_manager=TaskManager(include_path=task_dir), device="cpu", batch_size=int(batch),
                              bootstrap_iters=0)
json.dump(res["results"]["kjv_bench"], open(out, "w"), default=str)
"""


def verses():
    out = []
    with open(os.path.join(ROOT, "data/kjv/kjv.txt"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(line.strip())
    return out


def prepare(out, n_docs):
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    vs = verses()
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(vs, trainers.BpeTrainer(vocab_size=50257, special_tokens=["<|endoftext|>"],
                                                    show_progress=False,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(os.path.join(out, "model", "tokenizer.json"))
    with open(os.path.join(out, "model", "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}, f)
    torch.manual_seed(0)
    eos = tok.token_to_id("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                  bos_token_id=eos, eos_token_id=eos)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(os.path.join(out, "model"))
    rng = random.Random(5)
    docs = []
    for i in range(n_docs):
        k = 40 + i * 211 % (len(vs) - 60)
        gold = rng.randrange(4)
        endings = [vs[(k + 3 + 997 * (j + 1)) % len(vs)] for j in range(3)]
        endings.insert(gold, vs[k + 3])
        docs.append({"ctx": " ".join(vs[k:k + 3]), "endings": endings, "label": gold})
    with open(os.path.join(out, "docs.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    os.makedirs(os.path.join(out, "tasks"), exist_ok=True)
    task = {"task": "kjv_bench", "output_type": "multiple_choice", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": os.path.join(out, "docs.jsonl")}}, "test_split": "test",
            "doc_to_text": "{{ctx}}", "doc_to_choice": "endings", "doc_to_target": "label",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    with open(os.path.join(out, "tasks", "kjv_bench.yaml"), "w") as f:
        json.dump(task, f, indent=1)


def run_lathe(out, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run([LATHE, "eval", "--checkpoint", os.path.join(out, "model"), "--task",
                        os.path.join(out, "tasks", "kjv_bench.yaml"), "--format", "json"],
                       env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("lathe eval failed:\n" + p.stderr)
    m = json.loads(p.stdout)["tasks"]["kjv_bench"]["metrics"]
    return wall, {"acc": m["acc,none"], "acc_norm": m["acc_norm,none"]}


def run_harness(out, threads, batch):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_DATASETS_CACHE=os.path.join(out, "datasets_cache"))
    result = os.path.join(out, f"harness_{batch}.json")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", HARNESS, os.path.join(out, "model"), os.path.join(out, "tasks"),
                        str(threads), str(batch), result], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("lm_eval failed:\n" + p.stderr[-3000:])
    r = json.load(open(result))
    return wall, {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lathe_eval_bench")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.out, "tasks", "kjv_bench.yaml")):
        prepare(a.out, a.docs)
    sides = {"lathe": lambda: run_lathe(a.out, a.threads),
             "lm-eval hf, batch 1": lambda: run_harness(a.out, a.threads, 1),
             "lm-eval hf, batch 8": lambda: run_harness(a.out, a.threads, 8)}
    walls = {k: [] for k in sides}
    scores = {}
    for rnd in range(a.rounds):
        order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
        for name in order:
            wall, score = sides[name]()
            walls[name].append(wall)
            scores[name] = score
            print(f"round {rnd + 1}: {name}: {wall:.1f} s, {score}", flush=True)
    ref = scores["lm-eval hf, batch 1"]
    for name, s in scores.items():
        if s != ref:
            sys.exit(f"the sides disagree: {name} {s} against {ref}")
    print(f"\n{a.docs} documents x 4 choices, GPT-2 124M shape, {a.threads} threads, medians of {a.rounds} rounds")
    print(f"{'side':<22} {'wall s':>8} {'examples/s':>11}")
    med = {k: statistics.median(v) for k, v in walls.items()}
    for name in sides:
        print(f"{name:<22} {med[name]:>8.1f} {a.docs / med[name]:>11.2f}")
    for peer in ("lm-eval hf, batch 1", "lm-eval hf, batch 8"):
        print(f"lathe / {peer}: {med[peer] / med['lathe']:.2f}x examples/s")
    print(f"acc {ref['acc']:.4f}, acc_norm {ref['acc_norm']:.4f} on every side")


if __name__ == "__main__":
    main()
