#!/usr/bin/env bash
# ONNX export benchmark: ONNX Runtime (CPU) on lathe's export in float32 and int8, next to lathe's
# LibTorch forward of the same model and next to the ONNX file PyTorch's own exporter
# (torch.onnx.export) writes for the same Hugging Face model (its int8 by onnxruntime's
# quantize_dynamic, per-channel), side by side in one run, for GPT-2 124M and BERT-base (random
# weights), batch 1 and 8, sequence 128.
#
#   scripts/bench/onnx.sh [OUT_DIR]     (default /tmp/lathe-onnx-bench; about 20 minutes here)
#   REPS (runs per variant, default 5) and ROUNDS (turns of every side, default 3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bench=build/lathe_bench_onnx
py=${PYTHON:-.venv/bin/python}
out=${1:-/tmp/lathe-onnx-bench}
reps=${REPS:-5}
rounds=${ROUNDS:-3}
mkdir -p "$out"
: > "$out/times.jsonl"
for model in gpt2 bert; do
  dir="$out/$model"
  mkdir -p "$dir"
  $py scripts/bench/onnx_bench.py make "$model" "$dir"
  $bench --model "$dir/hf" --export "$dir"
  # Every side takes its turn in each round: this machine's speed drifts over minutes.
  for round in $(seq "$rounds"); do
    for batch in 1 8; do
      $bench --model "$dir/hf" --batch "$batch" --seq 128 --reps "$reps"
      $py scripts/bench/onnx_bench.py time "$dir" "$batch" 128 "$reps" "$round"
    done
  done | sed "s/^{/{\"model\": \"$model\", /" >> "$out/times.jsonl"
done
$py scripts/bench/onnx_bench.py report "$out"
