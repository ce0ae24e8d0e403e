#!/usr/bin/env bash
# The memory ladder on this machine's CPUs, 2 MPI ranks, side by side in one run:
#   1. GPT-2 124M and 355M shapes (SHAPES), each under ddp, zero1, zero2 and fsdp, with and
#      without activation checkpointing: each rank's peak RSS (the whole process, start-up and
#      final checkpoint included, from /usr/bin/time), rank 0's peak through its last training
#      step (metrics.jsonl "peak_rss_gb"), the memory plan's figure and tokens/s;
#   2. PyTorch's FSDP2 (torch.distributed.fsdp.fully_shard, gloo, under torchrun) on the 124M
#      shape with the same batch: tokens/s and peak RSS per rank, and lathe fsdp / PyTorch;
#   3. the headline: a GPT-2 large shape (774M) under fsdp with activation checkpointing, and the
#      memory plan's refusal of ddp for the same job.
#
#   scripts/bench/memory.sh [OUT_DIR]   (default /tmp/lathe-memory-bench; STEPS=4, SEQ=128,
#                                        BATCH=2 per rank, SHAPES="gpt2-124m gpt2-355m",
#                                        STRATEGIES="ddp zero1 zero2 fsdp", PEER=1, LARGE=1)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lathe=$root/build/lathe
out=${1:-/tmp/lathe-memory-bench}
steps=${STEPS:-4}
seq=${SEQ:-128}
batch=${BATCH:-2}
shapes=${SHAPES:-gpt2-124m gpt2-355m}
mkdir -p "$out"
ls runs/gpt-tiny-kjv/shards/index.json > /dev/null 2>&1 ||
  "$lathe" run recipes/gpt/tiny_pretrain.yaml --set 'pipeline=[tokenizer, data]' > "$out/prepare.log"
mpi=(mpirun --bind-to none -n 2 -x OMP_NUM_THREADS=1)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
[ "$(nproc)" -lt 2 ] && mpi+=(--oversubscribe)

cat > "$out/base.yaml" <<EOF
pipeline: [train]
run: {out_dir: $out/run, seed: 1, device: cpu, threads: 1}
tokenizer: {path: $root/runs/gpt-tiny-kjv/tokenizer.json}
data: {shard_dir: $root/runs/gpt-tiny-kjv/shards, seq_len: $seq, num_workers: 1}
model: {preset: gpt2-124m, dropout: 0.0, max_seq_len: $seq}
optim: {lr: 1.0e-4}
schedule: {name: constant, warmup_steps: 0}
train: {max_steps: $steps, batch_size: $batch, log_every: 1, eval_every: 0, save_every: 0}
EOF

run() {  # name shape strategy checkpointing: 2 ranks, each under /usr/bin/time
  local name=$1 shape=$2 strategy=$3 ac=$4
  rm -rf "${out:?}/$name"
  "${mpi[@]}" bash -c '/usr/bin/time -f %M -o "$0.rank$OMPI_COMM_WORLD_RANK" "$@"' "$out/$name.time" \
    "$lathe" train "$out/base.yaml" --force --set run.out_dir="$out/$name" --set model.preset="$shape" \
    --set distributed.strategy="$strategy" --set train.activation_checkpointing="$ac" > "$out/$name.log" 2>&1
}
row() {  # name: the figures of one run
  .venv/bin/python - "$out" "$1" <<'PY'
import json, re, statistics, sys
out, name = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
train = [r for r in recs if r.get("split") == "train"]
tps = statistics.median(r["tokens_per_s"] for r in train[1:] or train)
log = open(f"{out}/{name}.log").read()
plan = re.search(r"= ([0-9.]+) GiB \(activations", log)
ranks = [int(open(f"{out}/{name}.time.rank{r}").read().split()[-1]) / 2**20 for r in (0, 1)]
print(f"{name:26s} {float(plan.group(1)) if plan else 0:8.2f} {train[-1]['peak_rss_gb'] / 1.073741824:10.2f} "
      f"{ranks[0]:8.2f} {ranks[1]:8.2f} {tps:9.0f}")
PY
}

echo "2 ranks x batch $batch x seq $seq, $steps steps, 1 thread per rank; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "GiB per rank: plan = the memory plan (no activations); step = rank 0's peak through its last step;"
echo "rank0/rank1 = each process's peak (start-up and the final checkpoint included)"
printf "%-26s %8s %10s %8s %8s %9s\n" run plan step rank0 rank1 tokens/s
for shape in $shapes; do
  for strategy in ${STRATEGIES:-ddp zero1 zero2 fsdp}; do
    for ac in none blocks; do
      name="$shape-$strategy-$ac"
      if run "$name" "$shape" "$strategy" "$ac"; then row "$name"; else echo "$name failed: $out/$name.log"; fi
    done
  done
done

if [ "${PEER:-1}" = 1 ]; then
echo
echo "PyTorch FSDP2 (fully_shard, gloo) on the gpt2-124m shape, same batch and steps"
peer() {  # name checkpointing
  .venv/bin/torchrun --standalone --nproc-per-node 2 scripts/bench/fsdp_peer.py --steps "$steps" --seq "$seq" \
    --batch "$batch" --checkpointing "$2" > "$out/$1.log" 2>&1 && tail -1 "$out/$1.log"
}
peer torch-fsdp2-none none || echo "torch fsdp2 failed: $out/torch-fsdp2-none.log"
peer torch-fsdp2-blocks blocks || echo "torch fsdp2 failed: $out/torch-fsdp2-blocks.log"
.venv/bin/python - "$out" <<'PY' || true
import json, re, statistics, sys
out = sys.argv[1]
for ac in ("none", "blocks"):
    recs = [json.loads(l) for l in open(f"{out}/gpt2-124m-fsdp-{ac}/metrics.jsonl") if '"train"' in l]
    ours = statistics.median(r["tokens_per_s"] for r in recs[1:])
    theirs = float(re.search(r"tokens/s ([0-9.]+)", open(f"{out}/torch-fsdp2-{ac}.log").read()).group(1))
    print(f"fsdp, checkpointing {ac}: lathe {ours:.0f} tokens/s, PyTorch FSDP2 {theirs:.0f}: {ours / theirs:.2f}x")
PY
fi

if [ "${LARGE:-1}" = 1 ]; then
  echo
  echo "GPT-2 large shape (774M) on 2 ranks of this machine ($(free -g | awk '/Mem:/ {print $2}') GiB)"
  if run gpt2-774m-ddp-none gpt2-774m ddp none; then echo "ddp ran (not refused)"; else
    grep -m1 "memory plan does not fit" "$out/gpt2-774m-ddp-none.log" | sed 's/^.*error: //' | cut -c1-400; fi
  if run gpt2-774m-fsdp-blocks gpt2-774m fsdp blocks; then
    printf "%-26s %8s %10s %8s %8s %9s\n" run plan step rank0 rank1 tokens/s
    row gpt2-774m-fsdp-blocks
    .venv/bin/python - "$out/gpt2-774m-fsdp-blocks/metrics.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
steps = [(r["tokens"] - (recs[i - 1]["tokens"] if i else 0)) / r["tokens_per_s"] for i, r in enumerate(recs)]
print("seconds per step:", ", ".join(f"{s:.1f}" for s in steps))
PY
  else echo "fsdp failed: $out/gpt2-774m-fsdp-blocks.log"; fi
fi
