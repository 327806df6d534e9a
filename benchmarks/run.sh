#!/usr/bin/env bash
# distcnn vs PyTorch (CPU) training and inference throughput, interleaved over several
# rounds so both see the same machine conditions. Writes benchmarks/results/<date>.jsonl
# (one JSON line per run, plus a machine line) and prints a Markdown table (also saved as
# .md beside it).
#
#   benchmarks/run.sh              # 3 rounds, ~6 min on a 2-core machine
#   QUICK=1 benchmarks/run.sh      # 1 round, few steps: a smoke test (~1.5 min)
#
# Overrides (environment): ROUNDS, REF_STEPS, REF_WARMUP, SEED_STEPS, SEED_WARMUP,
# EVAL_STEPS, EVAL_WARMUP, EVAL_BATCH, DDP_LAYOUTS ("eager channels_last"),
# BIND (core or none: rank placement for mpirun and DDP), DISTCNN (binary), DISTCNN_GIT (its
# commit, when built outside this checkout), PYTHON,
# RESULTS (folder), TIMEOUT (seconds per run).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

DISTCNN=${DISTCNN:-.build/release/distcnn}
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
TIMEOUT=${TIMEOUT:-600}
QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    REF_STEPS=${REF_STEPS:-5};   REF_WARMUP=${REF_WARMUP:-1}
    SEED_STEPS=${SEED_STEPS:-50}; SEED_WARMUP=${SEED_WARMUP:-5}
    EVAL_STEPS=${EVAL_STEPS:-3};  EVAL_WARMUP=${EVAL_WARMUP:-1}
else
    ROUNDS=${ROUNDS:-3}
    REF_STEPS=${REF_STEPS:-30};   REF_WARMUP=${REF_WARMUP:-3}
    SEED_STEPS=${SEED_STEPS:-300}; SEED_WARMUP=${SEED_WARMUP:-20}
    EVAL_STEPS=${EVAL_STEPS:-8};  EVAL_WARMUP=${EVAL_WARMUP:-2}
fi
EVAL_BATCH=${EVAL_BATCH:-1000}
DDP_LAYOUTS=${DDP_LAYOUTS:-eager}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Rank placement: `core` pins each rank (and each DDP process, --bind-cores) to its own core;
# `none` lets the scheduler move them.
BIND=${BIND:-core}
MPIRUN="mpirun -np 2 --bind-to $BIND --oversubscribe"
DDP_BIND=""
[[ "$BIND" == core ]] && DDP_BIND="--bind-cores"
PTB="$PYTHON benchmarks/pytorch_bench.py"

[[ -x "$DISTCNN" ]] || { echo "run.sh: no distcnn binary at $DISTCNN (build with: swift build -c release)" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "run.sh: $PYTHON cannot import torch" >&2; exit 1; }

mkdir -p "$RESULTS"
STAMP=$(date +%Y-%m-%d_%H%M%S)
OUT="$RESULTS/$STAMP.jsonl"
[[ "$QUICK" == 1 ]] && OUT="$RESULTS/$STAMP-quick.jsonl"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: > "$OUT"

TIME_BIN=""
[[ -x /usr/bin/time ]] && TIME_BIN=/usr/bin/time

"$PYTHON" benchmarks/record.py machine --command-line "QUICK=$QUICK ROUNDS=$ROUNDS REF_STEPS=$REF_STEPS REF_WARMUP=$REF_WARMUP SEED_STEPS=$SEED_STEPS SEED_WARMUP=$SEED_WARMUP EVAL_STEPS=$EVAL_STEPS EVAL_WARMUP=$EVAL_WARMUP EVAL_BATCH=$EVAL_BATCH DDP_LAYOUTS='$DDP_LAYOUTS' BIND=$BIND benchmarks/run.sh" >> "$OUT"

log() { printf '%s\n' "$*" >&2; }
START=$SECONDS
FAILED=0

failure() {  # round framework command rc stderr-file
    "$PYTHON" - "$@" >> "$OUT" <<'EOF'
import json, sys
rnd, fw, cmd, rc, err = sys.argv[1:6]
try:
    tail = open(err).read().strip().splitlines()[-3:]
except OSError:
    tail = []
print(json.dumps({"framework": fw, "round": int(rnd), "command": cmd, "error": f"exit {rc}", "stderr_tail": tail}))
EOF
}

# distcnn ROUND NP THREADS MODEL BATCH STEPS WARMUP [train|eval|local]  (local: --bn-sync local)
distcnn() {
    local rnd=$1 np=$2 threads=$3 model=$4 batch=$5 steps=$6 warmup=$7 kind=${8:-train}
    local flags=""
    [[ "$kind" == eval ]] && flags=" --eval"
    [[ "$kind" == local ]] && flags=" --bn-sync local"
    local cmd="$DISTCNN bench --model $model$flags --batch-size $batch --steps $steps --warmup $warmup --threads $threads --json"
    local shown="$cmd"
    [[ "$np" -gt 1 ]] && shown="$MPIRUN $cmd"
    rm -f "$TMP"/rss.*
    local wrap=()
    # Peak RSS per process with GNU time, one file per rank; not part of the timing.
    # Without /usr/bin/time, record.py falls back to the binary's own peak_rss_mib.
    [[ -n "$TIME_BIN" ]] && wrap=(sh -c 'exec '"$TIME_BIN"' -f %M -o "$0.${OMPI_COMM_WORLD_RANK:-0}" "$@"' "$TMP/rss")
    local rc
    if [[ "$np" -gt 1 ]]; then
        timeout "$TIMEOUT" $MPIRUN "${wrap[@]}" $cmd > "$TMP/out" 2> "$TMP/err"; rc=$?
    else
        timeout "$TIMEOUT" "${wrap[@]}" $cmd > "$TMP/out" 2> "$TMP/err"; rc=$?
    fi
    if [[ $rc -eq 0 ]] && "$PYTHON" benchmarks/record.py distcnn --round "$rnd" --command "$shown" \
            --rss "$TMP"/rss.* < "$TMP/out" > "$TMP/line"; then
        cat "$TMP/line" >> "$OUT"
        log "  $(summary < "$TMP/line")"
    else
        log "  FAILED (exit $rc): $shown"; sed 's/^/    /' "$TMP/err" | tail -5 >&2
        failure "$rnd" distcnn "$shown" "$rc" "$TMP/err"; FAILED=$((FAILED + 1))
    fi
}

# pair ROUND MODEL BATCH STEPS WARMUP: two one-thread processes of BATCH/2 at once, one per core
# (taskset), no communication: the most two ranks could do on this machine, the ceiling for
# the `mpirun -np 2` row.
pair() {
    local rnd=$1 model=$2 batch=$3 steps=$4 warmup=$5
    local cmd="$DISTCNN bench --model $model --batch-size $((batch / 2)) --steps $steps --warmup $warmup --threads 1 --json"
    local shown="taskset -c 0 $cmd & taskset -c 1 $cmd"
    local rc0 rc1
    timeout "$TIMEOUT" taskset -c 0 $cmd > "$TMP/pair0" 2> "$TMP/err0" & local p0=$!
    timeout "$TIMEOUT" taskset -c 1 $cmd > "$TMP/pair1" 2> "$TMP/err1"; rc1=$?
    wait $p0; rc0=$?
    if [[ $rc0 -eq 0 && $rc1 -eq 0 ]] && "$PYTHON" benchmarks/record.py pair --round "$rnd" --command "$shown" \
            "$TMP/pair0" "$TMP/pair1" > "$TMP/line"; then
        cat "$TMP/line" >> "$OUT"
        log "  $(summary < "$TMP/line") [two independent processes]"
    else
        log "  FAILED (exit $rc0/$rc1): $shown"; cat "$TMP/err0" "$TMP/err1" | tail -5 >&2
        failure "$rnd" distcnn "$shown" "$((rc0 > 0 ? rc0 : rc1))" "$TMP/err1"; FAILED=$((FAILED + 1))
    fi
}

# pytorch ROUND ARGS...
pytorch() {
    local rnd=$1; shift
    local cmd="$PTB $*"
    local rc
    timeout "$TIMEOUT" $cmd > "$TMP/out" 2> "$TMP/err"; rc=$?
    if [[ $rc -eq 0 ]] && "$PYTHON" benchmarks/record.py pytorch --round "$rnd" --command "$cmd" \
            < "$TMP/out" > "$TMP/line"; then
        cat "$TMP/line" >> "$OUT"
        while read -r l; do log "  $(summary <<< "$l")"; done < "$TMP/line"
    else
        log "  FAILED (exit $rc): $cmd"; sed 's/^/    /' "$TMP/err" | tail -5 >&2
        failure "$rnd" pytorch "$cmd" "$rc" "$TMP/err"; FAILED=$((FAILED + 1))
    fi
}

summary() {
    "$PYTHON" -c '
import json, sys
r = json.loads(sys.stdin.read())
print("%-7s %-4s %-13s %dx%d batch %-4d %9.1f images/s (median step %.2f ms)" % (r["framework"], r["model"], r["mode"],
      r.get("world_size", 1), r["threads"], r["batch"], r["images_per_second"], r["step_ms_median"]))'
}

for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS ($((SECONDS - START)) s elapsed)"
    # ref, one process, 2 threads
    distcnn "$r" 1 2 ref 128 "$REF_STEPS" "$REF_WARMUP"
    pytorch "$r" --model ref --batch-size 128 --steps "$REF_STEPS" --warmup "$REF_WARMUP" --threads 2 --mode eager
    pytorch "$r" --model ref --batch-size 128 --steps "$REF_STEPS" --warmup "$REF_WARMUP" --threads 2 --mode channels_last
    # ref, one process, 1 thread
    distcnn "$r" 1 1 ref 128 "$REF_STEPS" "$REF_WARMUP"
    pytorch "$r" --model ref --batch-size 128 --steps "$REF_STEPS" --warmup "$REF_WARMUP" --threads 1 --mode eager
    pytorch "$r" --model ref --batch-size 128 --steps "$REF_STEPS" --warmup "$REF_WARMUP" --threads 1 --mode channels_last
    # seed, one process, 1 thread, batch 32
    distcnn "$r" 1 1 seed 32 "$SEED_STEPS" "$SEED_WARMUP"
    pytorch "$r" --model seed --batch-size 32 --steps "$SEED_STEPS" --warmup "$SEED_WARMUP" --threads 1 --mode eager
    pytorch "$r" --model seed --batch-size 32 --steps "$SEED_STEPS" --warmup "$SEED_WARMUP" --threads 1 --mode channels_last
    # data parallel: 2 processes x 1 thread, global batch split in half
    distcnn "$r" 2 1 ref 128 "$REF_STEPS" "$REF_WARMUP"
    pair "$r" ref 128 "$REF_STEPS" "$REF_WARMUP"
    distcnn "$r" 2 1 ref 128 "$REF_STEPS" "$REF_WARMUP" local
    distcnn "$r" 2 1 seed 32 "$SEED_STEPS" "$SEED_WARMUP"
    pair "$r" seed 32 "$SEED_STEPS" "$SEED_WARMUP"
    distcnn "$r" 2 1 seed 32 "$SEED_STEPS" "$SEED_WARMUP" local
    for layout in $DDP_LAYOUTS; do
        pytorch "$r" --model ref --batch-size 128 --steps "$REF_STEPS" --warmup "$REF_WARMUP" --threads 1 --ddp --layout "$layout" $DDP_BIND
        pytorch "$r" --model seed --batch-size 32 --steps "$SEED_STEPS" --warmup "$SEED_WARMUP" --threads 1 --ddp --layout "$layout" $DDP_BIND
    done
    # inference, one process, 2 threads
    distcnn "$r" 1 2 ref "$EVAL_BATCH" "$EVAL_STEPS" "$EVAL_WARMUP" eval
    pytorch "$r" --model ref --eval --batch-size "$EVAL_BATCH" --steps "$EVAL_STEPS" --warmup "$EVAL_WARMUP" --threads 2 --layout eager
    pytorch "$r" --model ref --eval --batch-size "$EVAL_BATCH" --steps "$EVAL_STEPS" --warmup "$EVAL_WARMUP" --threads 2 --layout channels_last
done
log "done in $((SECONDS - START)) s; $FAILED failed run(s); results in $OUT"

"$PYTHON" benchmarks/table.py "$OUT" | tee "${OUT%.jsonl}.md"
exit $(( FAILED > 0 ? 1 : 0 ))
