# Signals to running uel ranks that do not race the training, whatever the machine's speed or
# load: the ranks are stopped (SIGSTOP) from the moment the test has seen the step it waits for
# until the signal is pending, so a run cannot finish (or move on) between the look and the
# signal. Sourced by bash tests; the GUARD seconds only end a hang.

# wait_step FILE STEP GUARD: waits until the last line of metrics FILE is at step >= STEP;
# status 1 after GUARD seconds. Bash builtins only, so polling costs no processes.
wait_step() {
  local file=$1 step=$2 deadline=$((SECONDS + $3)) line last
  while ((SECONDS < deadline)); do
    last=''
    if [[ -r $file ]]; then
      while IFS= read -r line; do last=$line; done <"$file"
    fi
    [[ $last =~ \"step\":\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= step)) && return 0
    sleep 0.02
  done
  return 1
}

# ranks_of OUT: the pids of the uel ranks training into run folder OUT (their command line is
# `uel train ... --out[= ]OUT`; launchers and batch shells start otherwise).
ranks_of() { pgrep -f -- "^[^ ]*/uel train .*--out[= ]$1( |\$)"; }

# pending SIGNUM PID...: status 0 when signal SIGNUM is pending in one of PIDS.
pending() {
  local signum=$1 pid key mask value
  shift
  for pid; do
    mask=0
    [[ -r /proc/$pid/status ]] || continue
    while read -r key value; do
      [[ $key == SigPnd: || $key == ShdPnd: ]] && mask=$((mask | 16#$value))
    done <"/proc/$pid/status"
    ((mask & (1 << (signum - 1)))) && return 0
  done
  return 1
}

# stopped PID...: status 0 when every thread of PIDS is stopped (state T). SIGSTOP takes effect
# only when a thread next runs: a signal sent before that can still be taken by a handler (the
# kernel delivers SIGUSR1, 10, before SIGSTOP, 19) and would never be seen pending.
stopped() {
  local pid task line state
  for pid; do
    for task in /proc/"$pid"/task/*; do
      read -r line <"$task/stat" 2>/dev/null || continue  # a thread that just ended
      state=${line##*) }
      [[ ${state%% *} == [Tt] ]] || return 1
    done
  done
}

# signal_frozen SIGNUM GUARD PIDS... -- COMMAND...: stops PIDS and waits until they are stopped,
# runs COMMAND (which sends signal SIGNUM to them, directly or through a launcher), waits until
# it is pending in one of them (the ranks agree on a stop any of them was asked for), continues
# them. Status 1 when they did not stop or it did not arrive within GUARD seconds (they continue).
signal_frozen() {
  local signum=$1 deadline=$((SECONDS + $2)) pids=() status=0
  shift 2
  while [[ $1 != -- ]]; do
    pids+=("$1")
    shift
  done
  shift
  kill -STOP "${pids[@]}"
  until stopped "${pids[@]}"; do
    ((SECONDS < deadline)) || { kill -CONT "${pids[@]}"; return 1; }
    sleep 0.02
  done
  "$@" || status=1
  until pending "$signum" "${pids[@]}"; do
    ((SECONDS < deadline)) || { status=1; break; }
    sleep 0.02
  done
  kill -CONT "${pids[@]}"
  return $status
}

# signal_report PID...: each process's state and signal masks (for a failure message).
signal_report() {
  local pid
  for pid; do
    if [[ -r /proc/$pid/status ]]; then
      echo "  $pid $(tr '\0' ' ' </proc/$pid/cmdline | cut -c1-80)"
      grep -E '^(State|SigQ|SigPnd|ShdPnd|SigBlk|SigIgn|SigCgt):' "/proc/$pid/status" | tr '\n' ' '
      echo
    else
      echo "  $pid: gone"
    fi
  done
}
