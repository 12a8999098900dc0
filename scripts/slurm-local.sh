#!/usr/bin/env bash
# A one-node Slurm cluster on this machine for the slurm executor's tests:
#   scripts/slurm-local.sh start DIR   # munged, slurmctld and slurmd with their state in DIR
#   scripts/slurm-local.sh stop DIR
# Needs Debian's slurmctld, slurmd, slurm-client and munge (scripts/setup.sh installs them) and
# root (no cgroups, no accounting). Clients need SLURM_CONF=DIR/slurm.conf; `start` prints it.
set -euo pipefail
action=${1:?start or stop}
DIR=$(realpath -m "${2:-.slurm-local}")
CONF=$DIR/slurm.conf
# A daemon that is gone already must not stop the others from being stopped.
stop_pid() {
  if [ -f "$1" ]; then kill "$(cat "$1")" 2>/dev/null || true; fi
  rm -f "$1"
}

case "$action" in
  start)
    mkdir -p "$DIR"/{state,spool,log,munge}
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    # Ports of our own (6817/6818 are Slurm's defaults), derived from the folder so that two
    # clusters on one machine do not collide.
    base=$(( 20000 + $(printf '%s' "$DIR" | cksum | cut -d' ' -f1) % 20000 ))
    if [ ! -f "$DIR/munge/munge.key" ]; then
      head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
      chmod 400 "$DIR/munge/munge.key"
    fi
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
      --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munge.seed" \
      --log-file="$DIR/log/munged.log"
    cat > "$CONF" <<CONF
ClusterName=dinoflow
SlurmctldHost=$host
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$CONF
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    for _ in $(seq 100); do
      if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "SLURM_CONF=$CONF"
        exit 0
      fi
      sleep 0.2
    done
    echo "slurm did not come up; logs in $DIR/log" >&2
    exit 1
    ;;
  stop)
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munge/munged.pid"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
