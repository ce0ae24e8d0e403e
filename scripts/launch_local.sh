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

# The ranks (env launch) or mpirun (mpi launch) run in the background while the launcher waits
# for them: a trapped signal interrupts `wait` with 128 + signal, which is not a rank's status,
# so the launcher waits again until the process it waits for has really ended.
pids=()
if [ "$mode" = mpi ]; then
  args=(-n "$n" --bind-to none)
  [ "$n" -gt "$(nproc)" ] && args+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
  # Two cores per rank at most, without oversubscribing the machine's cores.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
  # mpirun in a session of its own: on SIGTERM / SIGINT mpirun kills its ranks one second later
  # (odls_base_sigkill_timeout), before they have written their checkpoint, so neither a signal
  # to this launcher nor a Ctrl-C in the terminal may reach it; the launcher signals the ranks
  # (mpirun's children, each in its own process group) itself. A background job of a script is
  # no process group leader, so setsid runs mpirun in this very process: $! is mpirun.
  setsid mpirun "${args[@]}" "$@" &
  pids+=($!)
  forward() {
    local ranks
    ranks=$(pgrep -P "${pids[0]}" || true)
    # shellcheck disable=SC2086
    kill -"$1" ${ranks:-${pids[0]}} 2>/dev/null || true
  }
else
  # env launch: a free port for rank 0's store.
  port=${MASTER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=$port WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n
  for ((r = 0; r < n; r++)); do
    RANK=$r LOCAL_RANK=$r "$@" &
    pids+=($!)
  done
  forward() { kill -"$1" "${pids[@]}" 2>/dev/null || true; }
fi
trap 'forward TERM' TERM
trap 'forward INT' INT
declare -A running
for pid in "${pids[@]}"; do running[$pid]=1; done
status=0
while [ "${#running[@]}" -gt 0 ]; do
  rc=0
  ended=""
  wait -n -p ended "${!running[@]}" || rc=$?
  if [ -z "${ended:-}" ]; then
    [ "$rc" -eq 127 ] && break  # nothing left to wait for
    continue                    # interrupted by a forwarded signal: the ranks are still running
  fi
  unset "running[$ended]"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    if [ "${#running[@]}" -gt 0 ]; then
      echo "launch_local.sh: a rank exited with status $rc; ending the others" >&2
      forward TERM
    fi
  fi
done
exit "$status"
