#!/usr/bin/env bash
# launch/uel-run: the mpirun line it prints for GPUs from CUDA_VISIBLE_DEVICES and from
# nvidia-smi (a stand-in on PATH), for CPU ranks on 1 and 2 cores (taskset), with a hostfile,
# as root and as another user; its errors; launch/loopback-only; real 2-rank CPU training runs
# through it, one stopped by SIGUSR1 (exit 75) and resumed to the uninterrupted run's losses, and
# two whose listening sockets this host's network shows (ss): none with the loopback-only network.
# usage: test_uel_run.sh UEL REPO
set -uo pipefail
uel=$1 repo=$2
run=$repo/launch/uel-run
tmp=$(mktemp -d)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../support/tally.sh"
# shellcheck source=../support/ranks.sh
source "$(dirname "$0")/../support/ranks.sh"
mpirun=$(command -v mpirun)
root_flag=''
[[ $(id -u) == 0 ]] && root_flag=' --allow-run-as-root'
# One-host jobs run in a network of their own (launch/loopback-only).
one_host="$repo/launch/loopback-only $mpirun"
# Physical cores among N CPUs, as uel-run counts them.
per_core=$(lscpu | awk -F: '/^Thread\(s\) per core/ {print $2 + 0}')
cores_of() { local c=$(($1 / ${per_core:-1})); echo $((c < 1 ? 1 : c)); }

# expect_line DESCRIPTION EXPECTED CMD...: the dry run prints EXPECTED.
expect_line() {
  local what=$1 expected=$2 got
  shift 2
  got=$("$@" 2>&1)
  [[ $got == "$expected" ]] && pass || fail "$what: got '$got', expected '$expected'"
}
# expect_error DESCRIPTION NEEDLE CMD...: status 2 and a message containing NEEDLE.
expect_error() {
  local what=$1 needle=$2 got status
  shift 2
  got=$("$@" 2>&1)
  status=$?
  [[ $status == 2 && $got == *"$needle"* ]] && pass || fail "$what: status $status, '$got'"
}

export UEL=$uel
nproc_all=$(nproc)
two=0-$((nproc_all > 1 ? 1 : 0))
c2=$(cores_of $((nproc_all > 1 ? 2 : 1)))
r2=1
while ((r2 * 2 <= c2 && r2 * 2 <= 8)); do r2=$((r2 * 2)); done

# CPU ranks: a power of two up to the cores, the cores split between them.
expect_line "CPU ranks on $c2 core(s)" \
  "$one_host -np $r2$root_flag --map-by slot:PE=$((c2 / r2)) --bind-to core -x UEL_PROGRESS $uel train --out a\ b --train.threads=$((c2 / r2))" \
  env CUDA_VISIBLE_DEVICES= taskset -c "$two" "$run" --dry-run train --out "a b"
expect_line "CPU ranks on 1 CPU" \
  "$one_host -np 1$root_flag --map-by slot:PE=1 --bind-to core -x UEL_PROGRESS $uel cluster --k 3 --threads=1" \
  env CUDA_VISIBLE_DEVICES= taskset -c 0 "$run" --dry-run cluster --k 3
# The command line's own thread count stands; `--` ends uel-run's options.
expect_line "explicit threads" \
  "$one_host -np 1$root_flag --map-by slot:PE=1 --bind-to core -x UEL_PROGRESS $uel eval --run r --train.threads=4" \
  env CUDA_VISIBLE_DEVICES= taskset -c 0 "$run" --dry-run -- eval --run r --train.threads=4

# GPUs: one rank each, from CUDA_VISIBLE_DEVICES, else nvidia-smi -L.
if ((c2 >= 2)); then
  expect_line "CUDA_VISIBLE_DEVICES=3,5" \
    "$one_host -np 2$root_flag --map-by slot:PE=$((c2 / 2)) --bind-to core -x UEL_PROGRESS $uel train --train.threads=$((c2 / 2))" \
    env CUDA_VISIBLE_DEVICES=3,5 taskset -c "$two" "$run" --dry-run train
fi
mkdir "$tmp/bin"
cat >"$tmp/bin/nvidia-smi" <<'EOF'
#!/bin/sh
for i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000$i)"; done
EOF
chmod 755 "$tmp/bin/nvidia-smi"
expect_error "4 GPUs on 1 core" "4 ranks per host need 4 cores but 1 are available; lower -n or add --oversubscribe" \
  env -u CUDA_VISIBLE_DEVICES PATH="$tmp/bin:$PATH" taskset -c 0 "$run" --dry-run train
expect_line "4 GPUs oversubscribed" \
  "$one_host -np 4$root_flag --oversubscribe --bind-to none -x UEL_PROGRESS $uel train --train.threads=1" \
  env -u CUDA_VISIBLE_DEVICES PATH="$tmp/bin:$PATH" taskset -c 0 "$run" --oversubscribe --dry-run train

# A hostfile: the ranks of each host split this host's cores.
printf 'node1 slots=1\n# a comment\n\nnode2 slots=1\n' >"$tmp/hosts"
expect_line "hostfile and interface" \
  "$mpirun -np 2 --hostfile $tmp/hosts --mca oob_tcp_if_include ib0 --mca btl_tcp_if_include ib0$root_flag --map-by slot:PE=1 --bind-to core -x UEL_PROGRESS $uel train --train.threads=1" \
  env CUDA_VISIBLE_DEVICES= taskset -c 0 "$run" --hostfile "$tmp/hosts" --interface ib0 --dry-run train
expect_line "hostfile" \
  "$mpirun -np 2 --hostfile $tmp/hosts$root_flag --map-by slot:PE=1 --bind-to core -x UEL_PROGRESS $uel train --train.threads=1" \
  env CUDA_VISIBLE_DEVICES= taskset -c 0 "$run" --hostfile "$tmp/hosts" --dry-run train

# Root flags only as root.
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
  line=$(setpriv --reuid=65534 --regid=65534 --clear-groups env CUDA_VISIBLE_DEVICES= "$run" --dry-run train 2>&1)
  [[ $line == "$one_host -np "* && $line != *allow-run-as-root* ]] && pass || fail "as nobody: '$line'"
fi

# launch/loopback-only: the job sees the loopback only, as root and (user namespaces) as another
# user, who keeps their uid; where namespaces are refused (a stand-in unshare) it says why and
# runs the job as it is; UEL_LOOPBACK=0 runs it as it is.
nets() { tail -n +3 "/proc/${1:-self}/net/dev" | cut -d: -f1 | tr -d ' ' | sort | paste -sd' '; }
got=$("$repo/launch/loopback-only" bash -c "$(declare -f nets); echo \$(id -u) \$(nets)" 2>&1)
[[ $got == "$(id -u) lo" ]] && pass || fail "loopback-only: '$got'"
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
  got=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$repo/launch/loopback-only" bash -c "$(declare -f nets); echo \$(id -u) \$(nets)" 2>&1)
  [[ $got == "65534 lo" ]] && pass || fail "loopback-only as nobody: '$got'"
fi
mkdir "$tmp/nons"
printf '#!/bin/sh\necho "unshare: unshare failed: Operation not permitted" >&2\nexit 1\n' >"$tmp/nons/unshare"
chmod 755 "$tmp/nons/unshare"
got=$(PATH="$tmp/nons:$PATH" "$repo/launch/loopback-only" bash -c "$(declare -f nets); echo ran \$(nets)" 2>&1)
[[ $got == "loopback-only: cannot give the job a network of its own (unshare --net: unshare: unshare failed: Operation not permitted); running it as it is"*$'\n'"ran $(nets)" ]] &&
  pass || fail "loopback-only without namespaces: '$got'"
got=$(UEL_LOOPBACK=0 "$repo/launch/loopback-only" bash -c "$(declare -f nets); echo \$(nets)" 2>&1)
[[ $got == "$(nets)" ]] && pass || fail "UEL_LOOPBACK=0: '$got'"

# Bad input: status 2 and a message naming the fix.
expect_error "too many ranks" "lower -n or add --oversubscribe" taskset -c 0 "$run" -n 3 --dry-run train
expect_error "-n 0" "-n '0' is not a positive number of ranks" "$run" -n 0 train
expect_error "-n missing" "-n needs a number of ranks" "$run" -n
expect_error "unknown option" "unknown option '--gpus'" "$run" --gpus 2 train
expect_error "no command" "no uel command" "$run" --dry-run
expect_error "hostfile" "--hostfile '$tmp/none' is not a readable file" "$run" --hostfile "$tmp/none" train
expect_error "interface without hostfile" "--interface names the hosts' network: it needs --hostfile" "$run" --interface eth0 train
expect_error "bad UEL" "UEL='$tmp/none' is not an executable" env UEL="$tmp/none" "$run" --dry-run train
if [[ -x $repo/build/src/cli/uel ]]; then
  line=$(env -u UEL CUDA_VISIBLE_DEVICES= "$run" --dry-run train 2>&1)
  [[ $line == *" $repo/build/src/cli/uel train "* ]] && pass || fail "without UEL: '$line'"
fi

# Real runs: 2 CPU ranks bound to a core each (oversubscribed on a 1-core machine), 30 steps;
# another one gets SIGUSR1 through mpirun (uel-run execs it), stops with a checkpoint and exit
# status 75, and the same command resumes it to the uninterrupted run's losses, digit for digit.
"$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp/fm" >/dev/null || fail "prepare"
extra=()
((c2 < 2)) && extra=(--oversubscribe)
run2=(env CUDA_VISIBLE_DEVICES='' "$run" -n 2 "${extra[@]}" train --data.train="$tmp/fm/test.h5"
  --aug.mean=0.286 --aug.std=0.353 --model.width=8 --model.low_dim=32 --train.batch_size=64
  --train.log_every=1 --eval.every=0)
train=("${run2[@]}" --train.max_steps=30)
losses() { grep -o '"step": [0-9]*, "epoch": [0-9]*, "loss": [^,]*' "$1"; }
"${train[@]}" --out "$tmp/whole" >"$tmp/whole.log" 2>&1 || fail "uel-run train: $(tail -5 "$tmp/whole.log")"
grep -q "^uel-run: $one_host -np 2 " "$tmp/whole.log" && grep -q "on 2 rank(s)" "$tmp/whole.log" &&
  [[ $(losses "$tmp/whole/metrics.jsonl" | wc -l) == 30 ]] && pass ||
  fail "the 2-rank run through uel-run: $(cat "$tmp/whole.log")"
# A simple command in the background: $! is uel-run's process, which execs env, then mpirun.
"${train[@]}" --out "$tmp/parts" >"$tmp/parts.log" 2>&1 &
pid=$!
# The ranks stay stopped until the signal mpirun forwards is pending in both: the run cannot
# finish before it arrives, however fast the machine.
ranks=()
wait_step "$tmp/parts/metrics.jsonl" 3 300 && mapfile -t ranks < <(ranks_of "$tmp/parts")
((${#ranks[@]} == 2)) && signal_frozen 10 60 "${ranks[@]}" -- kill -USR1 "$pid" ||
  { fail "SIGUSR1 did not reach the 2 ranks (${ranks[*]}) from $pid"; signal_report "$pid" "${ranks[@]}"; kill -USR1 "$pid"; }
wait "$pid"
status=$?
[[ $status == 75 ]] && grep -q "stopped on request after step" "$tmp/parts.log" && pass ||
  fail "SIGUSR1 to mpirun: status $status, $(tail -5 "$tmp/parts.log")"
"${train[@]}" --out "$tmp/parts" >>"$tmp/parts.log" 2>&1 || fail "resuming the stopped run: $(tail -5 "$tmp/parts.log")"
grep -q "resumed from" "$tmp/parts.log" && diff <(losses "$tmp/whole/metrics.jsonl") <(losses "$tmp/parts/metrics.jsonl") &&
  pass || fail "the stopped and resumed run differs from the uninterrupted one"

# What this host's network shows of a running 2-rank job: no listening socket of mpirun or of its
# ranks, where without the namespace (UEL_LOOPBACK=0) mpirun listens on every address.
for loopback in 1 0; do
  UEL_LOOPBACK=$loopback "${run2[@]}" --train.max_steps=1000000 --out "$tmp/net$loopback" >"$tmp/net$loopback.log" 2>&1 &
  pid=$!
  ranks=()
  wait_step "$tmp/net$loopback/metrics.jsonl" 1 300 && mapfile -t ranks < <(ranks_of "$tmp/net$loopback")
  owners=$pid
  for r in "${ranks[@]}"; do owners+="|$r"; done
  sockets=$(ss -ltnupH | grep -E "pid=($owners),")
  rank_nets=$(for r in "${ranks[@]}"; do nets "$r"; done | sort -u)
  kill "$pid"
  wait "$pid"
  if ((${#ranks[@]} != 2)); then
    fail "UEL_LOOPBACK=$loopback: the ranks did not start: $(tail -5 "$tmp/net$loopback.log")"
  elif ((loopback)); then
    [[ -z $sockets && $rank_nets == lo ]] && pass || fail "one-host job: listeners '$sockets', interfaces '$rank_nets'"
  else
    [[ $sockets == *'"mpirun"'* && $sockets =~ (0\.0\.0\.0|\*|\[::\]):[0-9]+ ]] && pass ||
      fail "without the namespace mpirun should listen on every address: '$sockets'"
  fi
done

finish launch_uel_run
