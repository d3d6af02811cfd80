#!/usr/bin/env bash
# A throwaway Slurm cluster on this machine, for the smoke scenario `slurm`:
# one munged, one slurmctld, and two nodes (nodea, nodeb), each in its own network
# namespace with its own bangerd (state dir, socket, bridge and subnet).
#   scripts/slurm-cluster.sh up DIR      start it all under DIR (a fresh directory)
#   scripts/slurm-cluster.sh down DIR    stop what DIR/pids names, remove namespaces
# Needs root, slurmctld, slurmd, srun and munged (`scripts/deps.sh --dev`), and
# BANGER_SMOKE_BIN (banger, bangerd, banger-agent) plus SMOKE_STATE (a state dir with
# the `default` image, hard-linked into each node's).
#
# Known set-up details: slurmd starts with `nsenter --net=… unshare -m -u` (not
# `ip netns exec`, which remounts /sys and hides the cgroup mounts), sets its hostname,
# and sees its own bangerd's runtime dir at /run/banger, where a node's system daemon
# lives; proctrack/linuxproc and task/none need no cgroup set-up.
set -euo pipefail
cmd=${1:?usage: slurm-cluster.sh up|down DIR}
D=${2:?usage: slurm-cluster.sh up|down DIR}
NODES=(nodea nodeb)
BRIDGE=bgslurm0
NET=10.251.0
CTL_PORT=46817
NODE_PORT=46818

addr() { case $1 in nodea) echo "$NET.2" ;; nodeb) echo "$NET.3" ;; esac; }
subnet() { case $1 in nodea) echo "172.30.1.0/24" ;; nodeb) echo "172.30.2.0/24" ;; esac; }
log() { printf 'slurm-cluster: %s\n' "$*" >&2; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local secs=$1 i; shift
  for ((i = 0; i < secs * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@"
}

node_banger() {
  local n=$1; shift
  env -u BANGER_SOCKET BANGER_STATE_DIR="$D/$n/state" BANGER_CACHE_DIR="$D/$n/cache" \
    BANGER_CONFIG_DIR="$D/$n/config" BANGER_RUNTIME_DIR="$D/$n/run" \
    BANGER_DAEMON="$BANGER_SMOKE_BIN/bangerd" BANGER_AGENT="$BANGER_SMOKE_BIN/banger-agent" \
    nsenter --net="/run/netns/sl$n" "$BANGER_SMOKE_BIN/banger" "$@"
}

write_conf() {
  local hooks=$1
  cat >"$D/slurm.conf" <<CONF
ClusterName=bangertest
SlurmctldHost=slurmctl($NET.1)
SlurmctldPort=$CTL_PORT
SlurmdPort=$NODE_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$D/ctld
SlurmctldPidFile=$D/ctld/slurmctld.pid
SlurmctldLogFile=$D/ctld/slurmctld.log
SlurmdSpoolDir=$D/%n/spool
SlurmdPidFile=$D/%n/slurmd.pid
SlurmdLogFile=$D/%n/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
KillWait=5
MessageTimeout=5
InactiveLimit=0
Epilog=$hooks/epilog
GresTypes=banger
CONF
  : >"$D/gres.conf"
  # Each node's lines as `banger slurm conf` prints them (one slot each), plus its
  # address.
  for n in "${NODES[@]}"; do
    unshare -u sh -c "hostname $n && BANGER_DAEMON=$BANGER_SMOKE_BIN/bangerd \
      $BANGER_SMOKE_BIN/banger slurm conf --slots 1" >"$D/$n.conf"
    sed -n "s/^NodeName=$n /NodeName=$n NodeAddr=$(addr "$n") /p" "$D/$n.conf" |
      grep Gres=banger:1 >>"$D/slurm.conf"
    grep "Name=banger Count=1" "$D/$n.conf" >>"$D/gres.conf"
  done
  echo "PartitionName=banger Nodes=nodea,nodeb Default=YES MaxTime=INFINITE State=UP" \
    >>"$D/slurm.conf"
}

up() {
  mkdir -p "$D/munge" "$D/ctld" "$D/hooks"
  : >"$D/pids"
  # slurmd runs the epilog as root with few variables set: this one points the packaged
  # epilog at the banger under test and keeps a record of each run for the test.
  cat >"$D/hooks/epilog" <<HOOK
#!/bin/sh
export BANGER_BIN=$BANGER_SMOKE_BIN/banger
$PWD/packaging/slurm/epilog
rc=\$?
echo "\$SLURM_JOB_ID \$rc" >>$D/\$SLURMD_NODENAME/epilog.log
exit \$rc
HOOK
  chmod +x "$D/hooks/epilog"
  write_conf "$D/hooks"

  dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$D/munge/munge.key"
  munged --force --socket="$D/munge/munge.sock" --key-file="$D/munge/munge.key" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
    --seed-file="$D/munge/munged.seed"
  wait_for 10 test -s "$D/munge/munged.pid"
  echo "munged $(cat "$D/munge/munged.pid")" >>"$D/pids"

  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for n in "${NODES[@]}"; do
    ip netns add "sl$n"
    ip link add "sl$n-h" type veth peer name eth0 netns "sl$n"
    ip link set "sl$n-h" master "$BRIDGE" up
    ip -n "sl$n" addr add "$(addr "$n")/24" dev eth0
    ip -n "sl$n" link set eth0 up
    ip -n "sl$n" link set lo up
    ip -n "sl$n" route add default via "$NET.1"
  done

  unshare -u sh -c "hostname slurmctl && exec slurmctld -D -i -f $D/slurm.conf" \
    >"$D/ctld/stdout.log" 2>&1 &
  echo "slurmctld $!" >>"$D/pids"

  for n in "${NODES[@]}"; do
    mkdir -p "$D/$n/spool" "$D/$n/state/images" "$D/$n/cache" "$D/$n/config" "$D/$n/run"
    chmod 0700 "$D/$n/run"
    cp -al "$SMOKE_STATE/images/default" "$D/$n/state/images/"
    cat >"$D/$n/config/config.toml" <<CFG
bridge = "bgslurm1"
subnet = "$(subnet "$n")"
dns_listen = "127.0.0.1:42079"
memory_mib = 512
disk_size_mib = 1024
boot_timeout_secs = 180
warm_on_first_use = false
CFG
    node_banger "$n" daemon start >&2
    echo "bangerd $(node_banger "$n" daemon status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')" >>"$D/pids"
    nsenter --net="/run/netns/sl$n" unshare -m -u --propagation private sh -c "
      mount -t tmpfs -o mode=0755 banger-run /run && mkdir /run/banger &&
      mount --bind $D/$n/run /run/banger && hostname $n &&
      exec slurmd -D -N $n -f $D/slurm.conf" >"$D/$n/stdout.log" 2>&1 &
    echo "slurmd-$n $!" >>"$D/pids"
  done
  export SLURM_CONF=$D/slurm.conf
  wait_for 60 sh -c "sinfo -h -N -o '%N %t' | grep -c idle | grep -qx 2"
  log "up: $(sinfo -h -N -o '%N:%t' | paste -sd' ')"
}

down() {
  export SLURM_CONF=$D/slurm.conf
  [ -f "$D/pids" ] || return 0
  # Jobs first, so their epilogs run while the daemons are still up.
  scancel --full -p banger >/dev/null 2>&1 || true
  for n in "${NODES[@]}"; do
    [ -d "$D/$n/run" ] || continue
    for vm in $(node_banger "$n" vm list --json 2>/dev/null | sed -n 's/.*"name": "\(.*\)".*/\1/p'); do
      log "deleting vm $vm left on $n"
      node_banger "$n" vm delete "$vm" >/dev/null 2>&1 || true
    done
    node_banger "$n" daemon stop >/dev/null 2>&1 || true
  done
  tac "$D/pids" | while read -r name pid; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    alive=0
    while read -r _ pid; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done <"$D/pids"
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for n in "${NODES[@]}"; do ip netns del "sl$n" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$D/pids"
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: slurm-cluster.sh up|down DIR" >&2; exit 2 ;;
esac
