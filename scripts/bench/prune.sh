#!/usr/bin/env bash
# Structured pruning benchmark: 25% of the attention heads and 25% of the MLP neurons removed,
# then a short fine-tune, on the default GPT and on a BERT-base-shaped encoder. For each model
# the prune stage times the unpruned and the pruned forward pass in turns in one process
# (a validation batch: GPT 16 x 128 tokens, BERT 8 x 128) and evaluates both on the
# validation split; this script prints the two side by side with the ratios.
#
#   scripts/bench/prune.sh [OUT_DIR]     (default /tmp/lathe-prune-bench; about 6 minutes here)
#
# The GPT is the default run's (runs/gpt-tiny-kjv, trained first when missing). The BERT-base
# shape (12 x 768, 12 heads, d_ff 3072) is trained for a few steps only: its latency is the
# figure, its perplexity is not meaningful.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lathe=build/lathe
out=${1:-/tmp/lathe-prune-bench}
prune=(--set prune.method=structured --set prune.heads=0.25 --set prune.neurons=0.25)

run=runs/gpt-tiny-kjv
ls "$run"/checkpoints/step_* > /dev/null 2>&1 || $lathe run recipes/gpt/tiny_pretrain.yaml
ckpt=$(ls -d "$run"/checkpoints/step_* | tail -1)
$lathe prune recipes/gpt/tiny_pretrain.yaml --force --set run.out_dir="$out/gpt" \
  --set tokenizer.path="$run/tokenizer.json" --set data.shard_dir="$run/shards" --set prune.checkpoint="$ckpt" \
  "${prune[@]}" --set prune.finetune_steps=100 --set eval.batches=20

$lathe run recipes/bert/tiny_mlm.yaml --set run.out_dir="$out/bert" --set 'pipeline=[tokenizer, data, train, prune]' \
  --set model.n_layer=12 --set model.n_head=12 --set model.d_model=768 --set model.d_ff=3072 \
  --set train.batch_size=8 --set train.max_steps=10 --set train.eval_every=0 --set schedule.warmup_steps=2 \
  --set eval.batches=4 "${prune[@]}" --set prune.finetune_steps=5

python3 - "$out" <<'PY'
import json, sys
print(f"\n{'model':<10} {'params before':>14} {'after':>12} {'forward ms before':>18} {'after':>8} {'speedup':>8} "
      f"{'val ppl before':>15} {'after':>9} {'change':>8}")
for name in ("gpt", "bert"):
    r = json.load(open(f"{sys.argv[1]}/{name}/prune.json"))
    b, a = r["before"], r.get("fine_tuned", r["pruned"])
    pb, pa = b["metrics"]["perplexity"], a["metrics"]["perplexity"]
    print(f"{name:<10} {b['parameters']:>14} {a['parameters']:>12} {b['latency_ms']:>18.1f} {a['latency_ms']:>8.1f} "
          f"{b['latency_ms'] / a['latency_ms']:>7.2f}x {pb:>15.3f} {pa:>9.3f} {100 * (pa / pb - 1):>+7.2f}%")
    print(f"{'':<10} {r['pruning']}")
PY
