#!/usr/bin/env bash
# Starts N ranks of a lathe command on this machine.
#
#   scripts/launch_local.sh -n 2 -- build/lathe train recipes/gpt/small_ddp.yaml
#   scripts/launch_local.sh -n 4 --env -- build/lathe train RECIPE     # force the env launch
#
# On a machine with GPUs (nvidia-smi lists them) the ranks are started directly, one per GPU,
# with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
# MASTER_PORT): the nccl backend meets through rank 0's c10d store. Without GPUs the ranks run
# under mpirun (the mpi backend needs an MPI launcher). --env / --mpi choose explicitly.
#
# As torchrun does, the launcher ends every rank when one fails, forwards SIGTERM / SIGINT to all
# (lathe saves one agreed checkpoint and exits 0 on every rank) and exits with the first failing
# rank's status.
set -euo pipefail

n=""
mode=auto
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nproc) n="$2"; shift 2 ;;
    --env) mode=env; shift ;;
    --mpi) mode=mpi; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "launch_local.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]] || [ $# -eq 0 ]; then
  echo "usage: scripts/launch_local.sh -n N [--env|--mpi] -- COMMAND ARGS..." >&2
  exit 2
fi
if [ "$mode" = auto ]; then
  mode=mpi
  if command -v nvidia-smi >/dev/null 2>&1 && [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 1 ]; then mode=env; fi
fi

if [ "$mode" = mpi ]; then
  args=(-n "$n" --bind-to none)
  [ "$n" -gt "$(nproc)" ] && args+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
  # Two cores per rank at most, without oversubscribing the machine's cores.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
  exec mpirun "${args[@]}" "$@"
fi

# env launch: a free port for rank 0's store.
port=${MASTER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=$port WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n
pids=()
for ((r = 0; r < n; r++)); do
  RANK=$r LOCAL_RANK=$r "$@" &
  pids+=($!)
done
forward() { kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
status=0
remaining=$n
while [ "$remaining" -gt 0 ]; do
  rc=0
  wait -n "${pids[@]}" || rc=$?
  [ "$rc" -eq 127 ] && break  # nothing left to wait for
  remaining=$((remaining - 1))
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    echo "launch_local.sh: a rank exited with status $rc; ending the others" >&2
    forward TERM
  fi
done
wait || true
exit "$status"
