#!/usr/bin/env bash
# Two hosts on one machine: network namespaces ${UEL_HOSTS}1 and ${UEL_HOSTS}2 (UEL_HOSTS
# defaults to uel-host) joined by a veth link on 10.200.0.0/24. The subnet exists only inside
# them; a blackhole route for it in the root namespace keeps their traffic from leaking out.
# Processes on a host run under its own hostname (the namespace's name), so OpenMPI sees two
# nodes and reaches the other one over TCP only. Needs root and iproute2.
#
#   netns-hosts.sh check              exit 0 if this machine can make them, else say why (exit 1)
#   netns-hosts.sh up [--rate RATE]   create both hosts; RATE caps each direction (tc tbf: 1gbit)
#   netns-hosts.sh cap RATE|none      change the cap of hosts that are up
#   netns-hosts.sh down               remove namespaces, link and route (also half-made ones)
#   netns-hosts.sh exec N CMD...      run CMD on host N (1 or 2)
#   netns-hosts.sh mpirun ARGS...     mpirun on host 1, ranks placed round-robin on both hosts
#   netns-hosts.sh agent HOST CMD...  OpenMPI's launcher agent in place of ssh (used by mpirun)
#   netns-hosts.sh stats              bytes host 1 has sent and received on the link
set -euo pipefail

prefix=${UEL_HOSTS:-uel-host}
subnet=10.200.0
self=$(readlink -f "$0")

exists() {
  ip netns list | awk '{print $1}' | grep -qx "$1"
}

die() {
  echo "netns-hosts: $*" >&2
  exit 1
}

check() {
  [[ $(id -u) == 0 ]] || die "needs root (network namespaces); run as root or with sudo"
  command -v ip >/dev/null || die "needs iproute2's ip (apt-get install iproute2)"
  command -v unshare >/dev/null || die "needs unshare (util-linux)"
  local probe=uel-probe-$$
  ip netns add "$probe" 2>/dev/null || die "'ip netns add' fails here (no network namespaces)"
  ip netns delete "$probe"
}

# Egress cap of both ends: a token bucket holding 1 ms of traffic (at least 16 KiB, a few
# packets), so the rate already holds at the scale of one gradient bucket's all-reduce.
set_cap() {
  local rate=$1 n bits burst
  if [[ $rate != none ]]; then
    [[ $rate =~ ^([0-9]+)([kmg]?)bit$ ]] ||
      die "rate '$rate': give NUMBER[k|m|g]bit, e.g. 1gbit, or none"
    bits=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in
      k) bits=$((bits * 1000)) ;;
      m) bits=$((bits * 1000000)) ;;
      g) bits=$((bits * 1000000000)) ;;
    esac
    burst=$((bits / 8 / 1000 > 16384 ? bits / 8 / 1000 : 16384))
  fi
  for n in 1 2; do
    if [[ $rate == none ]]; then
      ip -n "$prefix$n" link show eth0 >/dev/null
      tc -n "$prefix$n" qdisc del dev eth0 root 2>/dev/null || true
    else
      tc -n "$prefix$n" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 100ms
    fi
  done
}

up() {
  local rate=none
  while (($#)); do
    case $1 in
      --rate) rate=${2:?--rate needs a value such as 1gbit}; shift 2 ;;
      *) die "up: unknown option '$1'; valid: --rate RATE" ;;
    esac
  done
  check
  for n in 1 2; do
    exists "$prefix$n" && die "$prefix$n exists; run '$0 down' first"
  done
  for n in 1 2; do
    ip netns add "$prefix$n"
    ip -n "$prefix$n" link set lo up
  done
  # Both ends are created inside their namespaces, so nothing of the link is in the root one.
  ip link add eth0 netns "${prefix}1" type veth peer name eth0 netns "${prefix}2"
  for n in 1 2; do
    ip -n "$prefix$n" addr add "$subnet.$n/24" dev eth0
    ip -n "$prefix$n" link set eth0 up
  done
  ip route replace blackhole "$subnet.0/24"
  set_cap "$rate"
}

down() {
  local n
  for n in 1 2; do
    if exists "$prefix$n"; then
      # Anything still running there (an orphaned rank) would keep the namespace alive.
      ip netns pids "$prefix$n" | xargs -r kill -9 2>/dev/null || true
      ip netns delete "$prefix$n"  # takes its end of the link, and with it the other end
    fi
  done
  # Other hosts of this tool (another UEL_HOSTS) still need the route.
  if ! ip netns list | grep -q "^uel-"; then
    ip route del blackhole "$subnet.0/24" 2>/dev/null || true
  fi
}

on_host() {
  local name=$1
  shift
  exec ip netns exec "$name" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" "$@"
}

case ${1:-} in
  check) check ;;
  up) shift; up "$@" ;;
  cap) set_cap "${2:?cap needs RATE or none}" ;;
  down) down ;;
  exec)
    [[ ${2:-} == [12] ]] || die "exec needs a host number, 1 or 2"
    name=$prefix$2
    shift 2
    on_host "$name" "$@"
    ;;
  agent)
    # OpenMPI calls `agent [options] HOST COMMAND WORDS...` as it would ssh: the words form one
    # shell command line on HOST, which is the namespace's name.
    shift
    while [[ ${1:-} == -* ]]; do shift; done
    host=${1:?agent needs a host}
    shift
    on_host "$host" sh -c "$*"
    ;;
  mpirun)
    shift
    hostfile=$(mktemp)
    trap 'rm -f "$hostfile"' EXIT
    printf '%s slots=16\n' "${prefix}1" "${prefix}2" >"$hostfile"
    # In a subshell, so the trap still removes the hostfile.
    (
      export OMPI_MCA_rmaps_base_mapping_policy=${OMPI_MCA_rmaps_base_mapping_policy:-node}
      on_host "${prefix}1" mpirun --hostfile "$hostfile" --mca plm_rsh_agent "$self agent" \
        --mca btl tcp,self --mca btl_tcp_if_include "$subnet.0/24" \
        --mca oob_tcp_if_include "$subnet.0/24" "$@"
    )
    ;;
  stats)
    ip -n "${prefix}1" -s -j link show eth0 | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)[0]["stats64"]
print(s["tx"]["bytes"], s["rx"]["bytes"])'
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
