#!/usr/bin/env bash
# A one-node SLURM cluster in a directory, for the SLURM test (Debian's slurmctld + slurmd, no
# munge: auth/none, run as the current user).
#
#   tests/slurm_cluster.sh start DIR   # writes DIR/slurm.conf, starts both daemons, waits for the node
#   tests/slurm_cluster.sh stop DIR    # stops them by their pid files
#
# Clients use it with SLURM_CONF=DIR/slurm.conf. Exit status 77: SLURM is not installed.
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
conf=$dir/slurm.conf

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$dir/$d.pid" ]; then
      pid=$(cat "$dir/$d.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$d.pid"
    fi
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
command -v slurmctld >/dev/null && command -v slurmd >/dev/null || { echo "SLURM is not installed" >&2; exit 77; }
mkdir -p "$dir/state" "$dir/spool"
host=$(hostname -s)
user=$(id -un)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
cpus=$(nproc)
cat > "$conf" <<CONF
ClusterName=lathetest
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/none
CredType=cred/none
SlurmUser=$user
SlurmdUser=$user
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/linear
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
export SLURM_CONF=$conf
slurmctld -c -f "$conf"
slurmd -f "$conf"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^idle'; then exit 0; fi
  sleep 0.2
done
echo "the SLURM node did not become idle; logs:" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
stop
exit 1
