#!/usr/bin/env bash
# How long a job under `distcnn launch` is down after a node loss, on the namespace cluster
# (deploy/netns-cluster.sh): 3 hosts × 1 rank, --step-timeout 10, a checkpoint every 10 steps;
# host 3's link is cut right after the progress line of step CUT_AT (default 15) appears.
#
#   sudo flock /tmp/distcnn-cpu.lock benchmarks/node_loss.sh     # RUNS=3 by default
#
# Per run it reports, from launch's output with every line timestamped as it arrives:
#   detect   cut → launch's "mpirun exited" line (Open MPI noticed the silent host)
#   resume   cut → the first progress line of the relaunched job: its first step after
#            resuming is done (the measure the issue asks for)
#   lost     steps done before the cut that were redone: last step whose line came before
#            the cut − the step of the checkpoint the relaunch resumed from
# The raw timestamped logs and the summary go to benchmarks/results/node_loss-DATE.log.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DISTCNN=${DISTCNN:-$ROOT/.build/release/distcnn}
RUNS=${RUNS:-3}
CUT_AT=${CUT_AT:-15}
PREFIX=dcbench SUBNET=10.79.8
CLUSTER="$ROOT/deploy/netns-cluster.sh"
OUT=${OUT:-benchmarks/results/node_loss-$(date -u +%Y-%m-%d_%H%M%S).log}
[[ $(id -u) -eq 0 ]] || { echo "node_loss.sh: needs root (network namespaces)" >&2; exit 1; }
[[ -x $DISTCNN ]] || { echo "node_loss.sh: build first: swift build -c release" >&2; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The cluster's network settings, as deploy/netns-mpirun gives them, through the environment;
# the keepalive settings are launch's own defaults (those of deploy/openmpi-mca.conf).
export OMPI_MCA_plm_rsh_agent=$ROOT/deploy/netns-agent OMPI_MCA_plm_rsh_no_tree_spawn=1 \
    OMPI_MCA_oob_tcp_if_include=$SUBNET.0/24 OMPI_MCA_btl=tcp,vader,self \
    OMPI_MCA_btl_tcp_if_include=$SUBNET.0/24 OMPI_MCA_hwloc_base_binding_policy=none
HOSTS=$SUBNET.11,$SUBNET.12,$SUBNET.13

stamp() { while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }

{
    echo "# node_loss.sh $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
    echo "# machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -sr), $(mpirun --version 2>/dev/null | head -1)"
} | tee "$OUT"

results=()
for run in $(seq 1 "$RUNS"); do
    "$CLUSTER" up 3 --prefix $PREFIX --subnet $SUBNET >/dev/null 2>&1 || { echo "cluster up failed" >&2; exit 1; }
    dir=$(mktemp -d /tmp/node-loss-XXXXXX)
    log=$dir/launch.log
    cmd=("$DISTCNN" launch --host "$HOSTS" --min-nodes 2 -- train --model ref --data data/mnist --batch-size 50
         --train-limit 3000 --validation-split 500 --test-limit 500 --threads 1 --epochs 1
         --checkpoint-every 10 --step-timeout 10 --log-every 1 --progress lines --run-dir "$dir/run")
    [[ $run == 1 ]] && echo "# command: ${cmd[*]}" | tee -a "$OUT"
    ( "${cmd[@]}" 2>&1 | stamp >"$log" ) &
    job=$!
    until grep -q " epoch 1/1 $CUT_AT/" "$log" 2>/dev/null || ! kill -0 $job 2>/dev/null; do sleep 0.05; done
    "$CLUSTER" cut 3 --prefix $PREFIX >/dev/null 2>&1
    cut=$EPOCHREALTIME
    wait $job
    echo "# run $run: cut at $cut" >>"$OUT"
    cat "$log" >>"$OUT"
    # The numbers, from the timestamped lines.
    line=$(awk -v cut="$cut" '
        / launch: mpirun exited/ && !detect && $1 > cut { detect = $1 - cut }
        / launch: restart 1:/ { restarted = 1 }
        restarted && /resuming from/ { match($0, /step-0*[0-9]+/); from = substr($0, RSTART + 5, RLENGTH - 5) + 0 }
        / epoch 1\/1 [0-9]+\// {
            split($4, a, "/")
            if ($1 < cut) before = a[1]
            if (restarted && !resume) { resume = $1 - cut; first = a[1] }
        }
        END { printf "detect %.1f s, resume %.1f s (first resumed step %d), lost %d steps (last before cut %d, resumed from %d)",
                     detect, resume, first, before - from, before, from }' "$log")
    echo "run $run: $line" | tee -a "$OUT"
    results+=("$line")
    "$CLUSTER" down --prefix $PREFIX >/dev/null 2>&1
    rm -rf "$dir"
done

printf '%s\n' "${results[@]}" | awk '
    { for (i = 1; i <= NF; i++) { if ($i == "resume") r[NR] = $(i + 1); if ($i == "detect") d[NR] = $(i + 1); if ($i == "lost") l[NR] = $(i + 1) } }
    function sort(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
    function med(a, n) { return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { n = NR; sort(r, n); sort(d, n); sort(l, n)
          printf "summary over %d runs: cut → first resumed step median %.1f s (range %.1f–%.1f); cut → mpirun exit median %.1f s (range %.1f–%.1f); steps lost median %s (range %s–%s)\n",
                 n, med(r, n), r[1], r[n], med(d, n), d[1], d[n], med(l, n), l[1], l[n] }' | tee -a "$OUT"
