#!/usr/bin/env bash
# Data-parallel benchmark on this machine's CPUs, side by side in one run:
#   1. training throughput of the GPT 6 x 384 (seq 128) on one global batch of 16: one process
#      (all cores) against 2 ranks of 8 under mpirun (the cores split between them), plain DDP
#      and with the sharded optimizer; the ratio 2 ranks / 1 process;
#   2. the share of the gradient all-reduce time hidden behind backward (metrics.jsonl "comm");
#   3. all-reduce bus bandwidth of lathe's mpi communicator against MPI_Allreduce called directly.
#
#   scripts/bench/dist.sh [OUT_DIR]     (default /tmp/lathe-dist-bench; STEPS=20)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lathe=$root/build/lathe
out=${1:-/tmp/lathe-dist-bench}
steps=${STEPS:-20}
mkdir -p "$out"
ls runs/gpt-tiny-kjv/shards/index.json > /dev/null 2>&1 || "$lathe" run recipes/gpt/tiny_pretrain.yaml
mpi=(mpirun --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
cores=$(nproc)

common=(--force --set train.max_steps="$steps" --set train.eval_every=0 --set train.save_every=0
        --set train.log_every=1 --set data.num_workers=1 --set schedule.warmup_steps=2)
run() {  # name ranks batch threads [extra --set ...]
  local name=$1 ranks=$2 batch=$3 threads=$4; shift 4
  local cmd=("$lathe" train recipes/gpt/small_ddp.yaml "${common[@]}" --set run.out_dir="$out/$name"
             --set train.batch_size="$batch" --set run.threads="$threads" "$@")
  if [ "$ranks" -gt 1 ]; then "${mpi[@]}" -n "$ranks" $([ "$ranks" -gt "$cores" ] && echo --oversubscribe) "${cmd[@]}"
  else "${cmd[@]}"; fi > "$out/$name.log" 2>&1
}
summary() {  # name: median tokens/s of the steps after the first 3, and the comm record means
  .venv/bin/python - "$out/$1/metrics.jsonl" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
train = [r["tokens_per_s"] for r in recs if r["split"] == "train"][3:]
comm = [r for r in recs if r["split"] == "comm"][3:]
line = f"{statistics.median(train):10.0f}"
if comm:
    line += f" {statistics.mean(r['hidden_fraction'] for r in comm):8.2f} {statistics.mean(r['seconds'] for r in comm) * 1e3:8.1f}"
print(line)
PY
}
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
echo "GPT 6x384, seq 128, global batch 16, $steps steps, $cores cores"
run one 1 16 "$cores"
run ddp 2 8 "$half"
run zero1 2 8 "$half" --set distributed.strategy=zero1
printf "%-28s %10s %8s %8s\n" variant tokens/s hidden comm_ms
for v in one ddp zero1; do printf "%-28s %s\n" "$v" "$(summary $v)"; done
.venv/bin/python - "$out" <<'PY'
import json, statistics, sys
def tps(name):
    recs = [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/metrics.jsonl")]
    return statistics.median([r["tokens_per_s"] for r in recs if r["split"] == "train"][3:])
print(f"2 ranks / 1 process: ddp {tps('ddp') / tps('one'):.2f}x, zero1 {tps('zero1') / tps('one'):.2f}x")
PY
echo
echo "all-reduce bus bandwidth, 2 ranks (lathe communicator vs MPI_Allreduce directly)"
"${mpi[@]}" -n 2 "$root/build/lathe_bench_dist" 20
