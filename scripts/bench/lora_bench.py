#!/usr/bin/env python3
"""Fine-tuning a Llama-shaped model on prompt / completion pairs: full fine-tuning, LoRA and QLoRA in
lathe against transformers (full) and peft (LoRA) on the same model, data and batch, side by side
in one run; and lathe's sft with and without packing.

    .venv/bin/python scripts/bench/lora_bench.py [--rounds 2] [--steps 12] [--threads 2] [--out DIR]

The model: 8 layers, width 512, 8 heads (4 key/value), MLP 1408, a byte-level BPE vocabulary of
8192 trained on data/kjv (about 44M parameters), random weights saved by transformers (float32).
The data: pairs of 1-3 verses of the King James Bible as the prompt and the next 1-6 as the
completion (a realistic spread of lengths), cut to 256 tokens; the loss on the completion.
Batches of 4 rows, padded to the longest (packing: rows of 256 tokens). LoRA: rank 16, alpha 32,
on q, k, v, o, gate, up and down. QLoRA: the same on an int4 base (groups of 64, bfloat16 products).

Each side runs in its own process (launched here, alternating the sides within a round): lathe
through `lathe train` with a recipe written here; transformers / peft through a plain PyTorch loop
(AdamW, the same learning rate; the model's forward with labels). Reported per side: training
tokens per second over the steps after the first 4 (lathe: its metrics.jsonl window; the peers:
timed the same way), and peak resident memory (the child's ru_maxrss). Medians over the rounds.
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
SEQ, BATCH, WARM = 256, 4, 4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PEER = r"""
import json, sys, time, random, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
model_dir, pairs, mode, threads, steps, warm, seq, batch = sys.argv[1:9]
threads, steps, warm, seq, batch = int(threads), int(steps), int(warm), int(seq), int(batch)
torch.set_num_threads(threads)
torch.manual_seed(0)
tok = PreTrainedTokenizerFast(tokenizer_file=model_dir + "/tokenizer.json")
eos = tok.convert_tokens_to_ids("<|endoftext|>")
rows = []
for line in open(pairs):
    p = json.loads(line)
    prompt, full = tok.encode(p["prompt"]), tok.encode(p["prompt"] + p["completion"]) + [eos]
    ids = full[:seq]
    labels = [-100] * min(len(prompt), len(ids)) + ids[len(prompt):]
    if any(l != -100 for l in labels[1:]):
        rows.append((ids, labels))
random.Random(1).shuffle(rows)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
if mode == "peft":
    import peft
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                       target_modules=TARGETS, task_type="CAUSAL_LM"))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
tokens, t0 = 0, None
for step in range(steps):
    if step == warm:
        t0, tokens = time.perf_counter(), 0
    chunk = rows[(step * batch) % len(rows):][:batch]
    T = max(len(r[0]) for r in chunk)
    ids = torch.tensor([r[0] + [eos] * (T - len(r[0])) for r in chunk])
    labels = torch.tensor([r[1] + [-100] * (T - len(r[1])) for r in chunk])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (T - len(r[0])) for r in chunk])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tokens += int(mask.sum())
print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - t0)}))
""".replace("TARGETS", repr(TARGETS))


def prepare(out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM
    model_dir = os.path.join(out, "model")
    pairs = os.path.join(out, "pairs.jsonl")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        os.makedirs(model_dir, exist_ok=True)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train([os.path.join(ROOT, "data/kjv/kjv.txt")], trainer)
        tok.save(os.path.join(model_dir, "tokenizer.json"))
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"},
                  open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                          num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=SEQ,
                          rms_norm_eps=1e-5, tie_word_embeddings=False)
        LlamaForCausalLM(cfg).save_pretrained(model_dir)
    if not os.path.exists(pairs):
        verses = [l.strip() for l in open(os.path.join(ROOT, "data/kjv/kjv.txt")) if l.strip()]
        rng = random.Random(0)
        with open(pairs, "w") as f:
            for _ in range(2000):
                i = rng.randrange(len(verses) - 10)
                p, c = rng.randint(1, 3), rng.randint(1, 6)
                f.write(json.dumps({"prompt": " ".join(verses[i:i + p]) + "\n",
                                    "completion": " ".join(verses[i + p:i + p + c])}) + "\n")
    return model_dir, pairs


def lathe_recipe(out, model_dir, pairs, name, adapters, packing, steps, threads):
    run = os.path.join(out, "runs", name)
    path = os.path.join(out, name + ".yaml")
    with open(path, "w") as f:
        f.write(f"""pipeline: [train]
run: {{out_dir: {run}, device: cpu, seed: 1, threads: {threads}}}
tokenizer: {{path: {model_dir}/tokenizer.json}}
data: {{train_files: [{pairs}], seq_len: {SEQ}, val_fraction: 0.002, packing: {str(packing).lower()}}}
optim: {{lr: 1.0e-4, weight_decay: 0.0}}
schedule: {{name: constant, warmup_steps: 0}}
train: {{task: sft, max_steps: {steps}, batch_size: {BATCH}, log_every: {WARM}, save_every: 0, eval_every: 0,
         eval_batches: 1, init_from: {model_dir}}}
adapters: {adapters}
""")
    return path, run


def measure(argv, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out, err = p.stdout.read(), p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv[:3])} failed:\n{out[-3000:]}\n{err[-3000:]}")
    return out, usage.ru_maxrss / 1e6, time.perf_counter() - t0  # GB (ru_maxrss is in KB)


def lathe_side(out, model_dir, pairs, name, adapters, packing, a, env):
    recipe, run = lathe_recipe(out, model_dir, pairs, name, adapters, packing, a.steps, a.threads)
    stdout, rss, _ = measure([LATHE, "train", recipe, "--force"], env)
    records = [j for j in map(json.loads, open(os.path.join(run, "metrics.jsonl"))) if j.get("split") == "train"]
    eff = ""
    for line in stdout.splitlines():
        if "% real tokens" in line:
            eff = line.split("tokens: ")[-1]
    return {"tokens_per_s": records[-1]["tokens_per_s"], "rss": rss, "note": eff}


def peer_side(model_dir, pairs, mode, a, env):
    stdout, rss, _ = measure([sys.executable, "-c", PEER, model_dir, pairs, mode, str(a.threads), str(a.steps),
                              str(WARM), str(SEQ), str(BATCH)], env)
    return {"tokens_per_s": json.loads(stdout.strip().splitlines()[-1])["tokens_per_s"], "rss": rss, "note": ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lathe-lora-bench")
    a = ap.parse_args()
    if a.steps <= WARM:
        sys.exit(f"--steps must exceed the {WARM} warm-up steps")
    os.makedirs(a.out, exist_ok=True)
    model_dir, pairs = prepare(a.out)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    lora = "{kind: lora, rank: 16, alpha: 32, targets: [head_block, neuron_block, residual_projection]}"
    qlora = lora.replace("kind: lora", "kind: qlora, base_method: int4_weight_only, base_group_size: 64")
    sides = {
        "lathe full": lambda: lathe_side(a.out, model_dir, pairs, "full", "{kind: none}", False, a, env),
        "transformers full": lambda: peer_side(model_dir, pairs, "full", a, env),
        "lathe lora": lambda: lathe_side(a.out, model_dir, pairs, "lora", lora, False, a, env),
        "peft lora": lambda: peer_side(model_dir, pairs, "peft", a, env),
        "lathe qlora": lambda: lathe_side(a.out, model_dir, pairs, "qlora", qlora, False, a, env),
        "lathe full packed": lambda: lathe_side(a.out, model_dir, pairs, "packed", "{kind: none}", True, a, env),
    }
    results = {k: [] for k in sides}
    for r in range(a.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for k in order:
            results[k].append(sides[k]())
            print(f"round {r + 1}: {k}: {results[k][-1]['tokens_per_s']:.0f} tokens/s, {results[k][-1]['rss']:.2f} GB",
                  flush=True)
    med = {k: {"tps": statistics.median(x["tokens_per_s"] for x in v), "rss": statistics.median(x["rss"] for x in v),
               "note": v[-1]["note"]} for k, v in results.items()}
    print(f"\n{a.threads} threads, seq {SEQ}, batch {BATCH}; medians of {a.rounds} rounds")
    print(f"{'side':20} {'tokens/s':>10} {'peak RSS GB':>12}")
    for k, m in med.items():
        print(f"{k:20} {m['tps']:10.0f} {m['rss']:12.2f}  {m['note']}")
    print(f"\nlathe / transformers, full fine-tuning: {med['lathe full']['tps'] / med['transformers full']['tps']:.2f}x "
          f"tokens/s, {med['lathe full']['rss'] / med['transformers full']['rss']:.2f}x peak memory")
    print(f"lathe / peft, LoRA: {med['lathe lora']['tps'] / med['peft lora']['tps']:.2f}x tokens/s, "
          f"{med['lathe lora']['rss'] / med['peft lora']['rss']:.2f}x peak memory")
    print(f"lathe QLoRA / lathe LoRA peak memory: {med['lathe qlora']['rss'] / med['lathe lora']['rss']:.2f}x")
    print(f"lathe packed / unpacked: {med['lathe full packed']['tps'] / med['lathe full']['tps']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
