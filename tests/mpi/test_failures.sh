#!/usr/bin/env bash
# A failing rank takes the job down quickly: rank 1 throws, is killed with SIGKILL, or hangs
# while its peers wait in an all-reduce, or the last rank's device reports a failed operation;
# mpirun must exit non-zero, and the stuck rank's peers by their watchdog (3 s here). Alone, an
# operation that never finishes ends the process with status 4 (the watchdog makes no MPI call).
# stop: rank 1 never returns and the watchdog's timeout is 600 s, but once SIGUSR1 reaches the
# ranks (sent to mpirun after rank 0 printed "waiting"), the waiting ranks end the job after 1 s
# (comm.stop_timeout_s), naming the collective. `timeout 60` only guards against a hang: the
# elapsed time is printed, never compared, so a loaded machine does not fail the test.
# usage: test_failures.sh PROBE MPIEXEC RANKS
set -uo pipefail
probe=$1 mpiexec=$2 ranks=$3
source "$(dirname "$0")/../support/tally.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# stop_job: the "stop" case; mpirun forwards SIGUSR1 to every rank once they all wait.
stop_job() {
  "$mpiexec" -np "$np" "$probe" stop 600 >"$log" 2>&1 &
  local job=$! i
  for ((i = 0; i < 240; i++)); do
    grep -q waiting "$log" && break
    sleep 0.25
  done
  kill -USR1 "$job"
  for ((i = 0; i < 240; i++)); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$job" 2>/dev/null; then # the hang guard; mpirun ends its ranks on SIGTERM
    kill -TERM "$job"
    sleep 5
    kill -KILL "$job" 2>/dev/null
    wait "$job"
    return 124
  fi
  wait "$job"
}
for mode in throw kill stuck device_error unfinished stop; do
  np=$ranks
  [[ $mode == unfinished ]] && np=1
  start=$(date +%s%N)
  if [[ $mode == stop ]]; then
    stop_job
    rc=$?
    out=$(cat "$log")
  else
    out=$(timeout 60 "$mpiexec" -np "$np" "$probe" "$mode" 3 2>&1)
    rc=$?
  fi
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  ok=1
  if [[ $rc == 0 || $rc == 124 ]]; then ok=0; fi
  case $mode in
    # The failing rank says who it is: host:pid:rank, then the cause.
    throw) grep -qE "\[uel [0-9:]+ [^ ]+:[0-9]+:1\] error: injected failure on rank 1" <<<"$out" || ok=0 ;;
    # Any waiting rank's watchdog may fire first and abort the others before they report.
    stuck) grep -qE ":(0|[2-9])\] error: all_reduce .* has not finished after [0-9]+ s" <<<"$out" || ok=0 ;;
    device_error)
      grep -qE ":$((ranks - 1))\] error: injected device op failed: .*injected device failure" <<<"$out" || ok=0 ;;
    stop) grep -qE ":(0|[2-9])\] error: all_reduce .* has not finished [0-9]+ s after the stop signal" <<<"$out" || ok=0 ;;
    unfinished)
      [[ $rc == 4 ]] && grep -qE ":0\] error: injected device op has not finished after [0-9]+ s" <<<"$out" || ok=0 ;;
  esac
  if ((ok)); then
    passed=$((passed + 1))
    echo "$mode: exit $rc after ${elapsed_ms} ms"
  else
    failures=$((failures + 1))
    echo "FAIL: $mode: exit $rc after ${elapsed_ms} ms; output:"
    echo "$out" | tail -15
  fi
done
finish "test_failures (np $ranks)"
