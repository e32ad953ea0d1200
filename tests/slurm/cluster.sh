# shellcheck shell=bash
# A real Slurm cluster on localhost for the tests (source this file): munged, slurmctld and one
# slurmd from Debian's packages, configuration and state under one temporary folder, listening
# on 127.0.0.1 only. slurm_up FOLDER starts it (status 77 where it cannot: no root, no packages);
# slurm_down stops every job and daemon by its pid file. Callers trap slurm_down on EXIT.

slurm_skip() {
  echo "SKIPPED: $*"
  exit 77
}

# A TCP port nobody listens on.
free_port() {
  local port
  for ((;;)); do
    port=$((20000 + RANDOM % 20000))
    ss -Htln "sport = :$port" | grep -q . || { echo "$port"; return; }
  done
}

# slurm_up FOLDER [CPUS]: the cluster's node declares CPUS (default 8) whatever the cores.
slurm_up() {
  local dir=$1 cpus=${2:-8}
  [[ $(id -u) == 0 ]] || slurm_skip "a Slurm cluster on localhost needs root (slurmd runs jobs as their user)"
  local tool
  for tool in munged slurmctld slurmd sbatch scontrol ss; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null ||
      slurm_skip "$tool is missing: apt-get install slurm-wlm munge (tools/setup.sh installs them)"
  done
  export PATH=$PATH:/usr/sbin
  SLURM_DIR=$dir
  mkdir -p "$dir"/{munge,state,spool,log,tmp}
  chmod 755 "$dir" "$dir/munge"  # munged refuses a socket folder others cannot read
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" || { echo "munged did not start"; return 1; }
  local host
  host=$(hostname -s)
  export SLURM_CONF=$dir/slurm.conf
  cat >"$SLURM_CONF" <<CONF
ClusterName=ueltest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
TmpFS=$dir/tmp
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
KillWait=5
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -i || { echo "slurmctld did not start"; tail "$dir/log/slurmctld.log"; return 1; }
  slurmd || { echo "slurmd did not start"; tail "$dir/log/slurmd.log"; return 1; }
  local i
  for ((i = 0; i < 60; i++)); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && return 0
    sleep 0.5
  done
  echo "the node did not become idle:"; sinfo; tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log"
  return 1
}

# Stops the process in pid file $1: TERM, then KILL after 10 s.
stop_pidfile() {
  local pid i
  [[ -s $1 ]] || return 0
  pid=$(<"$1")
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
}

slurm_down() {
  [[ -n ${SLURM_DIR:-} ]] || return 0
  local i
  if [[ -s $SLURM_DIR/slurmctld.pid ]]; then
    # Every job of this private cluster is ours: kill their processes, then cancel them.
    scancel --full --signal=KILL --user="$(id -un)" >/dev/null 2>&1
    scancel --user="$(id -un)" >/dev/null 2>&1
    for ((i = 0; i < 40; i++)); do
      [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  stop_pidfile "$SLURM_DIR/slurmd.pid"
  stop_pidfile "$SLURM_DIR/slurmctld.pid"
  stop_pidfile "$SLURM_DIR/munge/munged.pid"
  SLURM_DIR=
}
