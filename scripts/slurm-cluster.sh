#!/usr/bin/env bash
# A throwaway Slurm cluster on this machine, for tests and trying deploy/slurm (docs/operations.md, "Slurm").
#
#   scripts/slurm-cluster.sh start DIR [--nodes N] [--cpus C]   # prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-cluster.sh stop DIR
#
# start: generates a munge key and a CPU-only slurm.conf under DIR (free ports, this host's name, N nodes of C
# CPUs: several slurmd on one host where this Slurm build allows it, else one node), starts munged, slurmctld
# and one slurmd per node, all with their files under DIR, and waits until every node is idle. Needs root
# (slurmd) and Debian's slurmd, slurmctld, slurm-client and munge (scripts/setup.sh installs them).
# stop: stops what start started (their pid files under DIR). Exit 0 on success; errors name the failing step.
set -euo pipefail
die() { echo "slurm-cluster.sh: $*" >&2; exit 1; }
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
shift 2
nodes=2
cpus=2
while (($#)); do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

stop_pidfile() {  # stop_pidfile FILE: TERM, then KILL after 5 s
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 0  # gone: the daemon removed it on its way out
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# The processes of this cluster's jobs (slurmstepd, job scripts, what they started in other sessions): they
# carry SLURM_CONF=<dir>/slurm.conf in their environment. This script and its parents are left alone.
job_processes() {
  local proc pid self_chain=" $$ $PPID "
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    [[ "$self_chain" == *" $pid "* ]] && continue
    if { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$dir/slurm.conf"; then
      echo "$pid"
    fi
  done
  return 0
}

if [ "$cmd" = stop ]; then
  export SLURM_CONF="$dir/slurm.conf"
  # Jobs first, while slurmctld can still end them (their steps stop their tasks), at most 10 s.
  mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
  if [ -f "$dir/run/slurmctld.pid" ] && ((${#jobs[@]})) && scancel --quiet --full "${jobs[@]}" 2>/dev/null; then
    for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  leftovers="$(job_processes)"
  [ -z "$leftovers" ] || kill -TERM $leftovers 2>/dev/null || true
  for f in "$dir"/run/slurmd-*.pid "$dir"/run/slurmctld.pid "$dir"/run/munged.pid; do stop_pidfile "$f"; done
  sleep 1
  leftovers="$(job_processes)"
  [ -z "$leftovers" ] || { echo "killing leftover job processes: $leftovers"; kill -KILL $leftovers 2>/dev/null || true; }
  echo "stopped the Slurm cluster in $dir"
  exit 0
fi
[ "$cmd" = start ] || die "unknown command '$cmd' (start or stop)"
[ "$(id -u)" = 0 ] || die "slurmd needs root"
for b in munged slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null || die "$b is not installed (Debian: munge slurmd slurmctld slurm-client; scripts/setup.sh)"
done

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host="$(hostname -s)"
mkdir -p "$dir/munge" "$dir/run" "$dir/log" "$dir/ctld" "$dir/spool"
chmod 700 "$dir/munge"
# munged refuses keys and sockets others could touch: 0600 key in a 0700 directory.
[ -f "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 600 "$dir/munge/munge.key"; }
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" ||
  die "munged did not start (log: $dir/log/munged.log)"

# Several slurmd on one host need a Slurm built with --enable-multiple-slurmd; `slurmd -N` is refused otherwise.
if ((nodes > 1)) && ! slurmd -C -N probe >/dev/null 2>&1; then
  echo "this Slurm build runs one slurmd per host: 1 node instead of $nodes" >&2
  nodes=1
fi
ctld_port="$(free_port)"
{
  cat <<CONF
ClusterName=anneal-test
SlurmctldHost=$host
SlurmctldPort=$ctld_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=60
InactiveLimit=0
SlurmdTimeout=30
CONF
  for i in $(seq "$nodes"); do
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$cpus RealMemory=1000 State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start (log: $dir/log/slurmctld.log)"
for i in $(seq "$nodes"); do
  mkdir -p "$dir/spool/n$i"
  if ((nodes > 1)); then slurmd -f "$SLURM_CONF" -N "n$i"; else slurmd -f "$SLURM_CONF" -N n1; fi ||
    die "slurmd n$i did not start (log: $dir/log/slurmd-n$i.log)"
done
for _ in $(seq 150); do
  idle="$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)"
  ((idle >= nodes)) && break
  sleep 0.2
done
((idle >= nodes)) || die "only $idle of $nodes node(s) became idle in 30 s: $(sinfo -N 2>&1 | tr '\n' ' ') (logs: $dir/log)"
echo "Slurm cluster up: $nodes node(s) x $cpus CPUs"
echo "export SLURM_CONF=$SLURM_CONF"
