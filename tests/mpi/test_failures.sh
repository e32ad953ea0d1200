#!/usr/bin/env bash
# A failing rank takes the job down quickly: rank 1 throws, is killed with SIGKILL, or hangs
# while its peers wait in an all-reduce, or the last rank's device reports a failed operation;
# mpirun must exit non-zero, and the stuck rank's peers by their watchdog (3 s here). Alone, an
# operation that never finishes ends the process with status 4 (the watchdog makes no MPI call). `timeout 60` only guards against a hang: the elapsed time is
# printed, never compared, so a loaded machine does not fail the test.
# usage: test_failures.sh PROBE MPIEXEC RANKS
set -uo pipefail
probe=$1 mpiexec=$2 ranks=$3
source "$(dirname "$0")/../support/tally.sh"
for mode in throw kill stuck device_error unfinished; do
  np=$ranks
  [[ $mode == unfinished ]] && np=1
  start=$(date +%s%N)
  out=$(timeout 60 "$mpiexec" -np "$np" "$probe" "$mode" 3 2>&1)
  rc=$?
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
