#!/bin/bash
# A real one-node Slurm on this machine, for trying deploy/distcnn.sbatch and for the test
# suite (Tests/TrainingTests/SlurmTests.swift). Root only; Debian/Ubuntu packages.
#
#   deploy/slurm-local.sh up       # install slurmctld slurmd slurm-client munge if missing, start all
#   deploy/slurm-local.sh env      # prints `export SLURM_CONF=…`: eval "$(deploy/slurm-local.sh env)"
#   deploy/slurm-local.sh status
#   deploy/slurm-local.sh down     # stop the daemons this script started, remove the state folder
#
# Everything is private to this script: its own slurm.conf (found through SLURM_CONF, never
# /etc/slurm), its own munge key and munged socket, its own ports (6917, 6918), state and logs
# under $DCNN_SLURM_DIR (default /run/distcnn-slurm). A Slurm or munge the machine already runs
# is left alone. The node is this machine (its short hostname, `nproc` CPUs), in one partition
# `debug`; jobs may be requeued (JobRequeue=1).
set -euo pipefail

DIR=${DCNN_SLURM_DIR:-/run/distcnn-slurm}
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket.2
CTLD_PORT=${DCNN_SLURM_CTLD_PORT:-6917}
SLURMD_PORT=${DCNN_SLURM_SLURMD_PORT:-6918}
NODE=$(hostname -s)

die() { echo "slurm-local.sh: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
        command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return
    echo "slurm-local.sh: installing ${missing[*]}"
    # policy-rc.d keeps the packages from starting their own (unconfigured) services.
    local policy=/usr/sbin/policy-rc.d added=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; added=1; fi
    local rc=0
    { timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 ||
      { timeout 300 apt-get update >>"$DIR/apt.log" 2>&1 &&
        timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1; }; } || rc=$?
    [ $added -eq 1 ] && rm -f $policy
    [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed (exit $rc); see $DIR/apt.log: $(tail -n 1 "$DIR/apt.log")"
}

write_conf() {
    cat > "$CONF" <<EOF
# Written by deploy/slurm-local.sh: one node, this machine.
ClusterName=distcnn
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=${DCNN_SLURM_CRED_EXPIRE:-10}
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
JobRequeue=1
ReturnToService=2
# Fast turnaround for a one-node test cluster.
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
    # The socket's folder must be open to all (755), the key's private to munge (700).
    mkdir -p "$DIR/munge" "$DIR/munge-key"
    chown munge:munge "$DIR/munge" "$DIR/munge-key"; chmod 755 "$DIR/munge"; chmod 700 "$DIR/munge-key"
    if [ ! -s "$DIR/munge-key/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge-key/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$DIR/munge-key/munge.key"; chmod 400 "$DIR/munge-key/munge.key"
    fi
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge-key/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/daemons.out" 2>&1 ||
        die "munged did not start: $(tail -n 2 "$DIR/munge/munged.log" 2>/dev/null)"
    munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null ||
        die "munge does not answer on $MUNGE_SOCKET"
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    [ "$(id -u)" -eq 0 ] || die "needs root"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then echo "slurm-local.sh: already up"; return; fi
    down quiet
    # munged and slurmctld do not close the descriptors they inherit: a caller that watches one
    # for its child's end (Swift's Process does) would wait for the daemons instead.
    for fd in /proc/$$/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true
    done
    mkdir -p "$DIR/ctld" "$DIR/d"
    install_packages
    write_conf
    start_munge
    export SLURM_CONF=$CONF
    # The daemons must not hold the caller's stdout/stderr open (a caller waiting for EOF would hang).
    slurmctld -f "$CONF" </dev/null >>"$DIR/daemons.out" 2>&1 || die "slurmctld did not start: $(tail -n 3 "$DIR/slurmctld.log" 2>/dev/null)"
    slurmd -f "$CONF" </dev/null >>"$DIR/daemons.out" 2>&1 || die "slurmd did not start: $(tail -n 3 "$DIR/slurmd.log" 2>/dev/null)"
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case $state in idle*) echo "slurm-local.sh: up; node $NODE idle; export SLURM_CONF=$CONF"; return ;; esac
        sleep 0.5
    done
    die "node $NODE is '${state:-unknown}', not idle, 30 s after start; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

stop_pidfile() {
    local f=$1
    alive "$f" || return 0
    local pid; pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

down() {
    [ -d "$DIR" ] || return 0
    if [ -f "$CONF" ] && alive "$DIR/slurmctld.pid"; then
        # Cancel the jobs still running and give them KillWait to end.
        SLURM_CONF=$CONF timeout 10 scancel --quiet --partition=debug 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -t R,CG 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munge/munged.pid"
    if [ "${1:-}" != quiet ]; then rm -rf "$DIR"; echo "slurm-local.sh: down"; fi
}

status() {
    for d in munge/munged slurmctld slurmd; do
        if alive "$DIR/$d.pid"; then echo "${d##*/}: running (pid $(cat "$DIR/$d.pid"))"; else echo "${d##*/}: stopped"; fi
    done
    [ -f "$CONF" ] && SLURM_CONF=$CONF sinfo 2>/dev/null || true
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
