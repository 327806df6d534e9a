#!/usr/bin/env bash
# The cost of bit-identical results on any number of ranks and threads: the current build
# against a build of the float-summing trainer (BASELINE, e.g. commit 12b239d built elsewhere)
# and PyTorch (channels-last, its faster mode here), interleaved round by round so all see the
# same machine. Prints one line per run and the medians with their spread.
#
#   BASELINE=/path/to/old/distcnn benchmarks/bitwise_cost.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
NEW=${DISTCNN:-.build/release/distcnn}
OLD=${BASELINE:?set BASELINE to a distcnn binary built from the float-summing trainer}
PYTHON=${PYTHON:-python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp)
ips() { "$PYTHON" -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_second"]))'; }
run() {  # label command...
    local label=$1; shift
    local v
    v=$("$@" 2>/dev/null | ips)
    echo "$label $v" | tee -a "$OUT"
}
for r in $(seq "$ROUNDS"); do
    echo "round $r" >&2
    for b in old new; do
        bin=$OLD; [[ $b == new ]] && bin=$NEW
        run "$b ref 1x2" "$bin" bench --model ref --batch-size 128 --steps 30 --warmup 3 --threads 2 --json
        run "$b ref 2x1" mpirun -np 2 --bind-to core "$bin" bench --model ref --batch-size 128 --steps 30 --warmup 3 --threads 1 --json
        run "$b seed 1x1" "$bin" bench --model seed --batch-size 32 --steps 300 --warmup 20 --threads 1 --json
        run "$b ref-eval 1x2" "$bin" bench --model ref --eval --batch-size 1000 --steps 8 --warmup 2 --threads 2 --json
    done
    run "pytorch ref 1x2" "$PYTHON" benchmarks/pytorch_bench.py --model ref --batch-size 128 --steps 30 --warmup 3 --threads 2 --mode channels_last
done
"$PYTHON" - "$OUT" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    *label, value = line.split()
    if value.isdigit(): runs[" ".join(label)].append(int(value))
for label, values in sorted(runs.items()):
    print(f"{label:18s} median {statistics.median(values):6.0f}  ({min(values)}–{max(values)}, n={len(values)})")
for cfg in ["ref 1x2", "ref 2x1", "seed 1x1", "ref-eval 1x2"]:
    o, n = runs.get("old " + cfg), runs.get("new " + cfg)
    if o and n:
        print(f"new/old {cfg:12s} {statistics.median(n) / statistics.median(o):.3f}  (round by round: "
              + ", ".join(f"{b / a:.2f}" for a, b in zip(o, n)) + ")")
PY
rm -f "$OUT"
