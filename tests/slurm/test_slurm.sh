#!/usr/bin/env bash
# uel under a real Slurm on localhost (cluster.sh: munged, slurmctld, slurmd from Debian's
# packages), short Fashion-MNIST runs on 2 CPU tasks through slurm/train.sbatch:
#   train:   srun --mpi=pmix trains to completion; mpirun inside sbatch logs the same losses;
#            slurm/sweep.sbatch's array tasks train one run folder each; bad submissions fail
#            with their message; the daemons listen on 127.0.0.1 only;
#   preempt: scancel --signal=USR1 mid-run -> checkpoint -> exit 75 -> requeue -> resume, twice
#            in one job, which completes with the losses of an uninterrupted job digit for digit;
#            through mpirun, scancel --signal=USR1 --batch does the same once; prints the timeline;
#   kill:    a rank killed with SIGKILL ends its job FAILED with a non-zero exit code and no rank
#            left (the time is printed; 60 s only guard a hang), under srun and under mpirun; scancel (SIGTERM) ends a job
#            CANCELLED, with a checkpoint and without a requeue; SIGTERM while rank 1 is frozen
#            ends the job with status 4 after comm.stop_timeout_s, naming the stuck collective.
# Exits 77 (skipped) where Slurm cannot be stood up (no root, no packages).
# usage: test_slurm.sh CASE UEL REPO
set -uo pipefail
case=$1 uel=$2 repo=$3
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster.sh
source "$here/cluster.sh"
tmp=$(mktemp -d)
chmod 755 "$tmp"
source "$here/../support/tally.sh"
# shellcheck source=../support/ranks.sh
source "$here/../support/ranks.sh"

# Ranks a job left behind (none should be): uel processes training into this test's folder.
our_ranks() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "--out=$tmp/" && echo "${p#/proc/}"
  done
}
cleanup() {
  slurm_down
  local pid
  for pid in $(our_ranks); do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM # through the EXIT trap
slurm_up "$tmp/slurm" || exit 1

# The jobs: uel and the scripts of this tree, OpenMPI on shared memory and loopback only.
export UEL=$uel UEL_ROOT=$repo OMPI_MCA_btl=self,vader OMPI_MCA_oob_tcp_if_include=lo
"$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp/fm" >/dev/null ||
  { echo "FAIL: prepare"; exit 1; }
# One epoch of the 10k test images; the sweep sets the batch size, the other jobs train=64.
common=(--data.train="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353 --model.width=8
  --model.low_dim=32 --train.epochs=1 --train.log_every=1 --eval.every=0)
train=("${common[@]}" --train.batch_size=64)
# Jobs that end only when the test ends them: they cannot finish before it looks, however fast.
endless=("${common[@]/--train.epochs=1/--train.epochs=1000}" --train.batch_size=64)

# submit NAME [sbatch options] SCRIPT [args]: 2 CPU tasks, log in $tmp; prints the job id.
submit() {
  local name=$1
  shift
  sbatch --parsable --job-name="$name" --chdir="$tmp" --ntasks=2 --cpus-per-task=1 \
    --gpus-per-task=0 "$@"
}
job_field() { scontrol show job -o "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -1 | cut -d= -f2; }
# wait_end JOB SECONDS: polls until the job has ended; prints its state.
wait_end() {
  local state i
  for ((i = 0; i < $2 * 4; i++)); do
    state=$(job_field "$1" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        echo "$state"
        return
        ;;
    esac
    sleep 0.25
  done
  echo "TIMEOUT_OF_TEST($state)"
}
losses() { /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "loss" in row: print(row["step"], repr(row["loss"]))' "$1"; }
now() { date +%s.%N; }
since() { /usr/bin/python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$1" "$2"; }
# expect_job JOB NAME STEPS: completed with exit code 0 and STEPS loss lines in RUN NAME.
expect_job() {
  local state
  state=$(wait_end "$1" 240)
  if [[ $state == COMPLETED && $(job_field "$1" ExitCode) == 0:0 ]]; then pass; else
    fail "job $1 ($2): $state, exit code $(job_field "$1" ExitCode)"
    tail -20 "$tmp"/*-"$1".out
  fi
  [[ $(losses "$tmp/$2/metrics.jsonl" 2>/dev/null | wc -l) == "$3" ]] && pass ||
    fail "$2 logged $(losses "$tmp/$2/metrics.jsonl" 2>/dev/null | wc -l) losses, not $3"
}

case $case in
train)
  srun_job=$(submit uel-train "$repo/slurm/train.sbatch" "${train[@]}" --train.max_steps=20 --out="$tmp/srun")
  mpirun_job=$(UEL_LAUNCHER=mpirun submit uel-train "$repo/slurm/train.sbatch" "${train[@]}" \
    --train.max_steps=20 --out="$tmp/mpirun")
  sweep_job=$(submit uel-sweep --array=0-1 "$repo/slurm/sweep.sbatch" --sweep train.batch_size=32,64 \
    "${common[@]}" --train.max_steps=3 --out="$tmp/sweep")
  # While jobs run: the daemons listen on 127.0.0.1 only.
  daemons=$(cat "$tmp"/slurm/slurmctld.pid "$tmp"/slurm/slurmd.pid "$tmp"/slurm/munge/munged.pid | paste -sd'|')
  outside=$(ss -Htulnp | grep -E "pid=($daemons)," | awk '$5 !~ /^127\.0\.0\.1:/')
  [[ -z $outside ]] && pass || fail "Slurm listens outside 127.0.0.1: $outside"

  expect_job "$srun_job" srun 20
  grep -q "on 2 rank(s)" "$tmp/uel-train-$srun_job.out" && pass || fail "the srun job's log (uel-train-$srun_job.out) does not show 2 ranks"
  grep -q "srun --mpi=pmix" "$tmp/uel-train-$srun_job.out" && pass || fail "the srun job did not start its ranks with srun --mpi=pmix"
  expect_job "$mpirun_job" mpirun 20
  grep -q "mpirun -np 2" "$tmp/uel-train-$mpirun_job.out" && pass || fail "UEL_LAUNCHER=mpirun did not use mpirun"
  if diff <(losses "$tmp/srun/metrics.jsonl") <(losses "$tmp/mpirun/metrics.jsonl") >/dev/null; then pass; else
    fail "mpirun's losses differ from srun's"; fi
  for task in 0 1; do
    expect_job "${sweep_job}_$task" "sweep/train.batch_size-$((32 * (task + 1)))" 3
    [[ -s $tmp/uel-sweep-${sweep_job}_$task.out ]] && pass || fail "no log uel-sweep-${sweep_job}_$task.out"
    grep -q "^batch_size *= *$((32 * (task + 1)))" "$tmp/sweep/train.batch_size-$((32 * (task + 1)))/config.ini" && pass ||
      fail "sweep task $task did not train with batch size $((32 * (task + 1)))"
  done

  # Bad submissions end with their message and status 2, without starting uel.
  bad=$(submit uel-sweep "$repo/slurm/sweep.sbatch" --sweep train.batch_size=32 --out="$tmp/x")
  [[ $(wait_end "$bad" 60) == FAILED && $(job_field "$bad" ExitCode) == 2:0 ]] &&
    grep -q "not an array task: submit with --array" "$tmp/uel-sweep-${bad}_4294967294.out" && pass ||
    fail "sweep.sbatch without --array: $(cat "$tmp"/uel-sweep-"$bad"*.out)"
  bad=$(submit uel-train "$repo/slurm/train.sbatch")
  [[ $(wait_end "$bad" 60) == FAILED ]] && grep -q "no training options" "$tmp/uel-train-$bad.out" && pass ||
    fail "train.sbatch without options: $(cat "$tmp/uel-train-$bad.out")"
  ;;

preempt)
  steps=120
  # The uninterrupted reference runs beside the preempted job.
  ref_job=$(submit uel-train "$repo/slurm/train.sbatch" "${train[@]}" --train.max_steps=$steps --out="$tmp/ref")
  job=$(submit uel-train "$repo/slurm/train.sbatch" "${train[@]}" --train.max_steps=$steps --out="$tmp/pre")
  log=$tmp/uel-train-$job.out
  metrics=$tmp/pre/metrics.jsonl
  # preempt AT_STEP SCANCEL_OPTIONS: signals once the run is past AT_STEP, follows the job through
  # checkpoint, requeue and resume, prints the timeline; sets stopped_at.
  preempt() {
    local at=$1 t_sig t_ckpt t_requeue='' t_running='' t_resumed='' state resumes deadline pids=()
    shift
    wait_step "$metrics" "$at" 300 && mapfile -t pids < <(ranks_of "$tmp/pre")
    ((${#pids[@]} == 2)) || { fail "the run never reached step $at with 2 ranks (${pids[*]})"; return 1; }
    resumes=$(grep -c "resumed from" "$log")
    t_sig=$(now)
    # Frozen until the signal is pending, the ranks cannot finish the run before it arrives.
    signal_frozen 10 60 "${pids[@]}" -- scancel --signal=USR1 "$@" "$job" ||
      { fail "scancel --signal=USR1 $* did not reach the ranks"; return 1; }
    deadline=$((SECONDS + 300))
    while ((SECONDS < deadline)); do
      state=$(job_field "$job" JobState)
      [[ -z $t_requeue && $state == PENDING ]] && t_requeue=$(now)
      [[ -n $t_requeue && -z $t_running && $state == RUNNING ]] && t_running=$(now)
      [[ -n $t_running && $(grep -c "resumed from" "$log") -gt $resumes ]] && { t_resumed=$(now); break; }
      sleep 0.1
    done
    stopped_at=$(grep -o "stopped on request after step [0-9]*" "$log" | tail -1 | grep -o '[0-9]*$')
    t_ckpt=$(stat -c %.9Y "$(printf '%s/pre/checkpoints/step-%07d/DONE' "$tmp" "${stopped_at:-0}")" 2>/dev/null)
    if [[ -z $t_resumed || -z $t_ckpt ]]; then
      fail "no checkpoint-requeue-resume after the signal (state $state)"
      tail -30 "$log"
      return 1
    fi
    pass
    echo "timeline after scancel --signal=USR1 $* at step >= $at: stopped after step $stopped_at," \
      "checkpoint DONE +$(since "$t_ckpt" "$t_sig") s, requeued (PENDING) +$(since "$t_requeue" "$t_sig") s," \
      "running again +$(since "$t_running" "$t_sig") s, resumed from the checkpoint +$(since "$t_resumed" "$t_sig") s"
    t_last_signal=$t_sig
  }
  preempt 15 && first=$stopped_at && preempt $((first + 15))
  state=$(wait_end "$job" 240)
  t_end=$(now)
  echo "completed ($state) +$(since "$t_end" "$t_last_signal") s after the second signal"
  [[ $state == COMPLETED && $(job_field "$job" ExitCode) == 0:0 ]] && pass ||
    fail "the preempted job ended $state, exit code $(job_field "$job" ExitCode)"
  [[ $(job_field "$job" Restarts) == 2 ]] && pass || fail "the job restarted $(job_field "$job" Restarts) times, not 2"
  [[ $(grep -c "exit status 75: stopped by a signal" "$log") == 2 ]] && pass || fail "uel did not exit 75 twice"
  [[ $(grep -c "ranks ended with status 75" "$log") == 2 && $(grep -c "requeueing job $job" "$log") == 2 ]] && pass ||
    fail "train.sbatch did not see status 75 and requeue twice"
  expect_job "$ref_job" ref $steps
  if diff <(losses "$tmp/ref/metrics.jsonl") <(losses "$metrics") >/dev/null; then pass; else
    fail "the preempted job's losses differ from the uninterrupted job's"
    diff <(losses "$tmp/ref/metrics.jsonl") <(losses "$metrics") | head
  fi

  # mpirun inside sbatch: its ranks are in no Slurm step, so the batch shell takes the signal
  # (--batch, as --signal=B:USR1@N delivers it) and forwards it through mpirun.
  rm -rf "$tmp/pre"
  job=$(UEL_LAUNCHER=mpirun submit uel-train "$repo/slurm/train.sbatch" "${train[@]}" --train.max_steps=60 --out="$tmp/pre")
  log=$tmp/uel-train-$job.out
  preempt 15 --batch
  expect_job "$job" pre 60
  if diff <(losses "$tmp/ref/metrics.jsonl" | sed -n 1,60p) <(losses "$metrics") >/dev/null; then pass; else
    fail "the preempted mpirun job's losses differ from the uninterrupted job's"; fi
  ;;

kill)
  # rank_one RUN: the pid of rank 1 of the job training into RUN, once it logged step 3.
  rank_one() {
    local pid
    wait_step "$1/metrics.jsonl" 3 300 || return
    for pid in $(ranks_of "$1"); do
      tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "OMPI_COMM_WORLD_RANK=1\|SLURM_PROCID=1" && echo "$pid"
    done
  }
  for launcher in srun mpirun; do
    job=$(UEL_LAUNCHER=$launcher submit uel-train "$repo/slurm/train.sbatch" "${endless[@]}" --out="$tmp/kill-$launcher")
    victim=$(rank_one "$tmp/kill-$launcher")
    [[ -n $victim ]] || { fail "$launcher: no rank 1 found to kill"; continue; }
    t_kill=$(now)
    kill -9 "$victim"
    state=$(wait_end "$job" 60)
    took=$(since "$(now)" "$t_kill")
    echo "$launcher: rank 1 killed, job $state with exit code $(job_field "$job" ExitCode) after $took s"
    [[ $state == FAILED && $(job_field "$job" ExitCode) != 0:0 ]] && pass || fail "$launcher: the job ended $state"
    sleep 1
    left=$(for pid in $(our_ranks); do tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kill-$launcher" && echo "$pid"; done)
    [[ -z $left ]] && pass || fail "$launcher: ranks left running: $left"
  done

  # scancel (SIGTERM): the ranks stop with a checkpoint, and the job stays cancelled.
  job=$(submit uel-train "$repo/slurm/train.sbatch" "${endless[@]}" --out="$tmp/cancel")
  wait_step "$tmp/cancel/metrics.jsonl" 3 300 || fail "the job to cancel never reached step 3"
  scancel "$job"
  state=$(wait_end "$job" 60)
  sleep 3 # a requeued job would be PENDING by now
  [[ $state == CANCELLED && $(job_field "$job" JobState) == CANCELLED && $(job_field "$job" Restarts) == 0 ]] &&
    grep -q "not requeued" "$tmp/uel-train-$job.out" && ls "$tmp"/cancel/checkpoints/step-*/DONE >/dev/null 2>&1 &&
    pass || fail "scancel: the job ended $state, now $(job_field "$job" JobState), restarts $(job_field "$job" Restarts): $(grep -v 'epoch 0 step' "$tmp/uel-train-$job.out")"

  # A stop signal while rank 1 is frozen (SIGSTOP): rank 0's collective cannot finish, and
  # comm.stop_timeout_s (2 s here; comm.timeout_s 600) ends the job with status 4 naming it.
  # scancel --signal=TERM sends SIGTERM without the SIGKILL at KillWait, so only uel can end it.
  job=$(submit uel-train "$repo/slurm/train.sbatch" "${endless[@]}" --comm.timeout_s=600 \
    --comm.stop_timeout_s=2 --out="$tmp/stuck")
  victim=$(rank_one "$tmp/stuck")
  if [[ -n $victim ]]; then
    kill -STOP "$victim"
    until stopped "$victim"; do sleep 0.02; done
    t_sig=$(now)
    scancel --signal=TERM "$job"
    state=$(wait_end "$job" 60)
    log=$tmp/uel-train-$job.out
    echo "rank 1 frozen, SIGTERM: job $state with exit code $(job_field "$job" ExitCode) after $(since "$(now)" "$t_sig") s"
    [[ $state == FAILED && $(job_field "$job" ExitCode) == 4:0 ]] &&
      grep -qE ":0\] error: [a-z_]+ .* has not finished [0-9]+ s after the stop signal \(--comm.stop_timeout_s=2\)" "$log" &&
      pass || { fail "a stop with a frozen rank ended $state, exit code $(job_field "$job" ExitCode)"; tail -8 "$log"; }
  else
    fail "no rank 1 found to freeze"
  fi
  ;;

*)
  echo "unknown case '$case'"
  exit 2
  ;;
esac

finish slurm
