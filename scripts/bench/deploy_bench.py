#!/usr/bin/env python3
"""CPU generation in the runtimes lathe exports to: `lathe generate` vs llama.cpp (llama-cpp-python)
on lathe's GGUF files vs ONNX Runtime GenAI on lathe's ONNX folder, same weights, side by side in
one run.

    .venv/bin/python scripts/bench/deploy_bench.py [--layers 12 --width 768 --heads 12 --vocab 50257
        --prompt-tokens 128 --new 64 --rounds 3 --threads 1,2] [--llama] [--out DIR]

The model is GPT-2 124M's shape with random weights (seed 0) written by transformers
(generate_bench.py's make_model); --llama makes a Llama-shaped model instead (--layers/--width/
--heads, 4 key/value heads, SwiGLU MLP of 8/3 width rounded to 256). lathe exports it with
`lathe export` (format [onnx, gguf], gguf_type f32, bf16, q8_0, q4_0); its own int8 and int4
models come from its quantize stage (weight-only, RTN; int4 in groups of --int4-group, 32 unless
set) and run with bfloat16 activations. Pairs compared (same precision class):
  fp32:  lathe fp32            | llama.cpp F32  | GenAI on lathe's ONNX folder (fp32), its decoder
                                                  with GroupQueryAttention (onnx_attention:
                                                  group_query) and with standard ops
  bf16:  lathe --dtype bf16    | llama.cpp BF16
  int8:  lathe int8_weight_only| llama.cpp Q8_0
  int4:  lathe int4_weight_only| llama.cpp Q4_0
Each side is its own process; the prompt is the first --prompt-tokens tokens of the KJV text;
greedy, --new tokens, no stop token. Figures, each measured inside the process after loading:
  prompt tok/s = prompt tokens / (time to the first generated token),
  decode tok/s = (new tokens - 1) / (time from the first to the last).
Rounds alternate the sides; medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate_bench as gb  # noqa: E402

ROOT = gb.ROOT
LATHE = gb.LATHE

LLAMA_CHILD = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompt = json.loads(sys.argv[4])
llm = Llama(model_path=path, n_ctx=len(prompt) + new + 8, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
t0 = time.perf_counter()
stamps = []
for tok in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
    stamps.append(time.perf_counter())
    if len(stamps) == new:
        break
print(json.dumps({"first": stamps[0] - t0, "decode": (new - 1) / (stamps[-1] - stamps[0])}))
"""

GENAI_CHILD = r"""
import json, sys, time
import onnxruntime_genai as og
path, new = sys.argv[1], int(sys.argv[2])
prompt = json.loads(sys.argv[3])
model = og.Model(path)
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(prompt) + new, do_sample=False)
gen = og.Generator(model, params)
t0 = time.perf_counter()
gen.append_tokens(prompt)
stamps = []
while not gen.is_done():
    gen.generate_next_token()
    stamps.append(time.perf_counter())
print(json.dumps({"first": stamps[0] - t0, "decode": (len(stamps) - 1) / (stamps[-1] - stamps[0])}))
"""


def make_llama(a, out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = os.path.join(out, "model")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    gb.make_model(argparse.Namespace(layers=1, width=64, heads=1, vocab=a.vocab), out)  # the tokenizer
    os.remove(os.path.join(path, "model.safetensors"))
    torch.manual_seed(0)
    ff = (a.width * 8 // 3 + 255) // 256 * 256
    cfg = LlamaConfig(hidden_size=a.width, intermediate_size=ff, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=4, vocab_size=a.vocab,
                      max_position_embeddings=2048, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def lathe_quantized(a, path, method, group=32):
    out = os.path.join(a.out, method if group == 32 else f"{method}-g{group}")
    model = os.path.join(out, "quantized", "model.safetensors")
    if not os.path.exists(model):
        subprocess.run([LATHE, "run", os.path.join(ROOT, "recipes/gpt/tiny_quantize.yaml"), "--force",
                        "--set", "pipeline=[data,quantize]", "--set", f"run.out_dir={out}",
                        "--set", f"tokenizer.path={path}/tokenizer.json", "--set", f"data.shard_dir={out}/shards",
                        "--set", "quantize.source=checkpoint", "--set", f"quantize.checkpoint={path}",
                        "--set", f"quantize.method={method}", "--set", f"quantize.group_size={group}",
                        "--set", "quantize.activations=bfloat16", "--set", f"model.vocab_size={a.vocab}",
                        "--set", "eval.batches=2"],
                       check=True, capture_output=True)
    return model


def export(a, path, name="export", formats="[onnx, gguf]", attention="group_query"):
    out = os.path.join(a.out, name)
    if os.path.exists(os.path.join(out, "tokenizer.json")):
        return out
    recipe = os.path.join(a.out, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"pipeline: [export]\nrun: {{out_dir: {a.out}/run-{name}, device: cpu}}\n"
                f"tokenizer: {{path: {path}/tokenizer.json}}\n"
                f"export: {{format: {formats}, checkpoint: {path}, path: {out}, onnx_attention: {attention}, "
                f"gguf_type: [f32, bf16, q8_0, q4_0]}}\n")
    subprocess.run([LATHE, "run", recipe], check=True, capture_output=True)
    return out


def run_lathe(model, tokenizer, dtype, prompt_text, new, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [LATHE, "generate", "--model", model, "--tokenizer", tokenizer, "--greedy", "--max-new-tokens", str(new),
           "--dtype", dtype, "--prompt", prompt_text]
    err = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", check=True).stderr
    line = next(l for l in err.splitlines() if "first text after" in l)
    # "[N tokens, length] first text after F s, then D tokens/s"
    first = float(line.split("first text after ")[1].split(" s")[0])
    decode = float(line.split("then ")[1].split(" tokens/s")[0])
    return {"first": first, "decode": decode}


def run_child(code, args, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code] + args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def genai_dir(folder, threads):
    """A copy of the GenAI folder's config with the session's thread count (the rest linked)."""
    d = f"{folder}-genai-{threads}"
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(folder):
        if name != "genai_config.json" and not os.path.exists(os.path.join(d, name)):
            os.symlink(os.path.join(folder, name), os.path.join(d, name))
    cfg = json.load(open(os.path.join(folder, "genai_config.json")))
    cfg["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    cfg["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    json.dump(cfg, open(os.path.join(d, "genai_config.json"), "w"))
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--llama", action="store_true")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--precisions", default="fp32,bf16,int8,int4")
    ap.add_argument("--int4-group", type=int, default=32,
                    help="lathe's int4 group size: 32 as Q4_0's blocks; 128 (quantize.group_size's "
                         "default) reads the same bytes per weight as Q4_0 (0.5625)")
    ap.add_argument("--out", default="/tmp/lathe-deploy-bench")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    path = make_llama(a, a.out) if a.llama else gb.make_model(a, a.out)
    tokenizer = os.path.join(path, "tokenizer.json")
    folder = export(a, path)  # GGUF files and the ONNX folder with GroupQueryAttention
    standard = export(a, path, "export-standard", "[onnx]", "standard")  # ONNX ops only
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer)
    text = open(os.path.join(ROOT, "data/kjv/kjv.txt")).read(20000)
    ids = tok.encode(text).ids[: a.prompt_tokens]
    prompt_text = tok.decode(ids)
    ids = tok.encode(prompt_text).ids  # what lathe encodes the text to
    shape = "Llama" if a.llama else "GPT-2"
    print(f"{shape} {a.layers}x{a.width}, vocab {a.vocab}, prompt {len(ids)} tokens, {a.new} new, greedy; "
          f"{a.rounds} rounds, medians; inside each process after loading")
    sides = {
        "fp32": [("lathe fp32", lambda t: run_lathe(path, tokenizer, "fp32", prompt_text, a.new, t)),
                 ("llama.cpp F32", lambda t: run_child(LLAMA_CHILD, [f"{folder}/model-F32.gguf", str(t), str(a.new),
                                                                     json.dumps(ids)], t)),
                 ("GenAI fp32 GQA", lambda t: run_child(GENAI_CHILD, [genai_dir(folder, t), str(a.new),
                                                                    json.dumps(ids)], t)),
                 ("GenAI fp32 ops", lambda t: run_child(GENAI_CHILD, [genai_dir(standard, t), str(a.new),
                                                                    json.dumps(ids)], t))],
        "bf16": [("lathe bf16", lambda t: run_lathe(path, tokenizer, "bf16", prompt_text, a.new, t)),
                 ("llama.cpp BF16", lambda t: run_child(LLAMA_CHILD, [f"{folder}/model-BF16.gguf", str(t), str(a.new),
                                                                      json.dumps(ids)], t))],
        "int8": [("lathe int8", lambda t: run_lathe(lathe_quantized(a, path, "int8_weight_only"), tokenizer, "bf16",
                                                    prompt_text, a.new, t)),
                 ("llama.cpp Q8_0", lambda t: run_child(LLAMA_CHILD, [f"{folder}/model-Q8_0.gguf", str(t), str(a.new),
                                                                      json.dumps(ids)], t))],
        "int4": [("lathe int4", lambda t: run_lathe(lathe_quantized(a, path, "int4_weight_only", a.int4_group), tokenizer, "bf16",
                                                    prompt_text, a.new, t)),
                 ("llama.cpp Q4_0", lambda t: run_child(LLAMA_CHILD, [f"{folder}/model-Q4_0.gguf", str(t), str(a.new),
                                                                      json.dumps(ids)], t))],
    }
    for threads in [int(t) for t in a.threads.split(",")]:
        for precision in a.precisions.split(","):
            rows = {name: [] for name, _ in sides[precision]}
            for _ in range(a.rounds):
                for name, fn in sides[precision]:
                    rows[name].append(fn(threads))
            med = {n: (statistics.median(r["first"] for r in v), statistics.median(r["decode"] for r in v))
                   for n, v in rows.items()}
            base_first, base_decode = next(iter(med.values()))
            for name, (first, decode) in med.items():
                ratio = "" if name.startswith("lathe") else \
                    f"   lathe/this: decode {base_decode / decode:.2f}x, first token {first / base_first:.2f}x sooner"
                print(f"  {threads}t {precision:5s} {name:16s} prompt {len(ids) / first:7.1f} tok/s (first token "
                      f"{first * 1000:7.1f} ms)   decode {decode:6.1f} tok/s{ratio}")


if __name__ == "__main__":
    main()
