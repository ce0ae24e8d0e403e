#!/usr/bin/env bash
# Quantization benchmark: forward latency of lathe in float32, bfloat16, int8 dynamic, int8 and
# int4 weight-only, and of PyTorch on the same weights in float32, through torch.ao's
# quantize_dynamic and through torchao's int8 dynamic config, side by side in one run, on
#   - a BERT-base-shaped encoder (12 x 768, 12 heads, d_ff 3072; random weights), batch 8 x 128;
#   - the default GPT (runs/gpt-tiny-kjv, trained first when missing), batch 8 x 128 and 1 x 128,
#     and batch 8 x 128 with the output head quantized too (gpt-b8-head; its tied head as a copy);
# then the sizes and the validation perplexity of the default GPT by the quantize stage
# (int8 dynamic; int4 g64 by round-to-nearest and by GPTQ; the default GPT's width, 192, takes
# groups of 64, not 128).
#
#   scripts/bench/quantize.sh [OUT_DIR]     (default /tmp/lathe-quantize-bench; about 12 minutes here)
#   REPS (forwards per variant, default 10) and ROUNDS (turns of lathe and PyTorch, default 3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lathe=build/lathe
bench=build/lathe_bench_quantize
py=${PYTHON:-.venv/bin/python}
out=${1:-/tmp/lathe-quantize-bench}
mkdir -p "$out"
reps=${REPS:-10}

# The BERT-base shape, random weights, written by transformers and read by both sides.
$py - "$out/bert-base" <<'PY'
import sys, torch
from transformers import BertConfig, BertForMaskedLM
torch.manual_seed(0)
BertForMaskedLM(BertConfig()).save_pretrained(sys.argv[1])
PY

run=runs/gpt-tiny-kjv
ls "$run"/checkpoints/step_* > /dev/null 2>&1 || $lathe run recipes/gpt/tiny_pretrain.yaml
ckpt=$(ls -d "$run"/checkpoints/step_* | tail -1)
$lathe export recipes/gpt/tiny_pretrain.yaml --force --set export.format=hf --set export.source=checkpoint \
  --set run.out_dir="$run" --set export.path="$out/gpt" > /dev/null

rounds=${ROUNDS:-3}
# lathe and PyTorch take turns, `rounds` times: this machine's speed drifts by tens of percent
# over minutes, and each side's figure is the median over its rounds.
measure() {  # name path part batch seq group [head]
  for _ in $(seq "$rounds"); do
    $bench --model "$2" --part "$3" --batch "$4" --seq "$5" --reps "$reps" --group "$6" ${7:+--head}
    $py scripts/bench/quantize_bench.py "$2" "$3" "$4" "$5" "$reps" ${7:+head}
  done > "$out/$1.jsonl"
}
measure bert-b8 "$out/bert-base" encoder 8 128 128
measure gpt-b8 "$out/gpt" lm 8 128 64
measure gpt-b1 "$out/gpt" lm 1 128 64
measure gpt-b8-head "$out/gpt" lm 8 128 64 head

for m in "int8_dynamic" "int4_weight_only --set quantize.algorithm=rtn" "int4_weight_only --set quantize.algorithm=gptq"; do
  name=$(echo "$m" | tr -c 'a-z0-9_\n' '_' | sed 's/__*/_/g')
  $lathe quantize recipes/gpt/tiny_quantize.yaml --force --set run.out_dir="$out/q" \
    --set tokenizer.path="$run/tokenizer.json" --set data.shard_dir="$run/shards" \
    --set quantize.source=checkpoint --set quantize.checkpoint="$ckpt" --set quantize.group_size=64 \
    --set quantize.method=$m > /dev/null
  cp "$out/q/quantize.json" "$out/stage_$name.json"
done

$py - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
import statistics
for name in ("bert-b8", "gpt-b8", "gpt-b1", "gpt-b8-head"):
    rows = {}
    for r in map(json.loads, open(f"{out}/{name}.jsonl")):
        rows.setdefault(r["variant"], []).append(r)
    rows = {v: {**rs[0], "ms": statistics.median(r["ms"] for r in rs)} if "ms" in rs[0] else rs[0]
            for v, rs in rows.items()}
    fp32 = rows["fp32"]["ms"]
    torch_int8 = min(rows[v]["ms"] for v in ("torch_ao_quantize_dynamic", "torchao_int8_dynamic") if "ms" in rows.get(v, {}))
    print(f"\n{name}: forward ms (median over rounds of medians), speedup over lathe fp32, over PyTorch's fastest "
          f"int8 path, Linear weights vs fp32")
    for v, r in rows.items():
        if "ms" not in r:
            print(f"  {v:<28} {r.get('error', '')}")
            continue
        size = f"{r['linear_bytes'] / rows['fp32']['linear_bytes']:.3f}x" if "linear_bytes" in r else ""
        print(f"  {v:<28} {r['ms']:>9.2f} {fp32 / r['ms']:>7.2f}x {torch_int8 / r['ms']:>7.2f}x {size:>8}")
print("\ndefault GPT, quantize stage: validation perplexity fp32 -> quantized, Linear weights ratio")
for f in sorted(glob.glob(f"{out}/stage_*.json")):
    r = json.load(open(f))
    b, a = r["before"]["metrics"]["perplexity"], r["after"]["metrics"]["perplexity"]
    print(f"  {r['scheme']:<48} {b:>8.3f} -> {a:>8.3f} ({100 * (a / b - 1):+.3f}%)  {r['linear_weights']['ratio']:.3f}x")
PY
