#!/usr/bin/env python3
"""Turn one benchmark's output (stdin) into JSON lines for the results file (stdout).

  distcnn:  record.py distcnn --round R --command CMD [--rss FILE...]  < `distcnn bench --json` output
  pytorch:  record.py pytorch --round R --command CMD                 < pytorch_bench.py output
  pair:     record.py pair --round R --command CMD OUT0 OUT1           two `distcnn bench --json` outputs
  machine:  record.py machine --command-line "..."                    (no stdin)

distcnn's own `images_per_second` is total images / total time (a mean); for a like-for-like
comparison with pytorch_bench.py we recompute images/s from the median step time and keep
distcnn's figure as `images_per_second_mean`. Its `"mode": "eval"` (bench --eval) is recorded
as mode `eval`, training as `single`, `mpi`, or `mpi-local` (`--bn-sync local` under mpirun).

Peak RSS (`peak_rss_mb`, MiB per process, the largest rank) comes from GNU time (--rss files)
when there are any, otherwise from the binary's own `peak_rss_mib`; `peak_rss_source` says
which, and the binary's figure is kept as `peak_rss_mib_reported` either way.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys


def rss_mb(files):
    """Peak RSS in MiB from /usr/bin/time -f %M files (KiB), one per process: (max, sum)."""
    vals = []
    for f in files or []:
        try:
            with open(f) as fh:
                for line in fh:
                    line = line.strip()
                    if line.isdigit():
                        vals.append(int(line) / 1024.0)
        except OSError:
            pass
    if not vals:
        return None, None
    return max(vals), sum(vals)


def bench_json(text, where="distcnn"):
    """The JSON object `distcnn bench --json` printed (anything before it, e.g. MPI notices, skipped)."""
    start = text.find("{")
    if start < 0:
        sys.exit(f"record.py: no JSON from {where}: {text.strip()[:300]!r}")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def distcnn(args):
    r = bench_json(sys.stdin.read())
    steps_ms = r["step_milliseconds"]
    med = statistics.median(steps_ms)
    rmax, rsum = rss_mb(args.rss)
    reported = r.get("peak_rss_mib")
    source = "time" if rmax is not None else None
    if rmax is None and reported is not None:
        # No /usr/bin/time: the binary's own figure (the largest rank's); the sum over
        # ranks is known only for a single process.
        rmax, source = float(reported), "distcnn"
        rsum = rmax if r["world_size"] == 1 else None
    if r.get("mode") == "eval":
        mode = "eval"
    elif r["world_size"] > 1:
        # Per-rank batch norm (as DDP without SyncBatchNorm) is its own configuration; with one
        # process the two modes are the same computation.
        mode = "mpi-local" if r.get("bn_sync") == "local" else "mpi"
    else:
        mode = "single"
    out = {
        "framework": "distcnn", "model": r["model"], "mode": mode,
        "threads": r["threads_per_rank"], "world_size": r["world_size"], "batch": r["batch_size"],
        "images_per_second": r["batch_size"] / (med / 1000.0),
        "step_ms_median": med, "step_ms_min": min(steps_ms), "step_ms_max": max(steps_ms),
        "steps": r["steps"], "images_per_second_mean": r["images_per_second"],
        "gflops": r["gflops"], "sgemm_peak_gflops": r["sgemm_peak_gflops"], "peak_share": r["peak_share"],
        "all_reduce_share": r["all_reduce_share"], "all_reduce_share_least": r.get("all_reduce_share_least"),
        "peak_rss_mb": rmax, "peak_rss_mb_sum": rsum, "peak_rss_source": source,
        "peak_rss_mib_reported": reported,
        "round": args.round, "command": args.command,
    }
    print(json.dumps(out))


def pair(args):
    """Two independent one-process runs at the same time, one per core: the throughput two ranks
    would have with no communication at all (the ceiling for `mpirun -np 2`)."""
    runs = []
    for path in args.outputs:
        with open(path) as fh:
            runs.append(bench_json(fh.read(), f"distcnn in {path}"))
    rates = [r["batch_size"] / (statistics.median(r["step_milliseconds"]) / 1000.0) for r in runs]
    print(json.dumps({
        "framework": "distcnn", "model": runs[0]["model"], "mode": "pair",
        "threads": runs[0]["threads_per_rank"], "world_size": len(runs),
        "batch": sum(r["batch_size"] for r in runs),
        "images_per_second": sum(rates), "per_process_images_per_second": rates,
        "step_ms_median": max(statistics.median(r["step_milliseconds"]) for r in runs),
        "steps": runs[0]["steps"], "images_per_second_mean": sum(r["images_per_second"] for r in runs),
        "gflops": sum(r["gflops"] for r in runs), "sgemm_peak_gflops": sum(r["sgemm_peak_gflops"] for r in runs),
        "peak_share": sum(r["gflops"] for r in runs) / sum(r["sgemm_peak_gflops"] for r in runs),
        "all_reduce_share": 0.0, "peak_rss_mb": max(r["peak_rss_mib"] for r in runs),
        "peak_rss_source": "distcnn", "round": args.round, "command": args.command,
    }))


def pytorch(args):
    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        r.setdefault("world_size", 1)
        r["round"] = args.round
        r["command"] = args.command
        print(json.dumps(r))
        n += 1
    if n == 0:
        sys.exit("record.py: no JSON lines from pytorch_bench.py")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine(args):
    lscpu = {}
    for line in sh("LC_ALL=C lscpu").splitlines():
        k, _, v = line.partition(":")
        lscpu[k.strip()] = v.strip()
    try:
        import torch
        torch_version = torch.__version__
        torch_threads = torch.get_num_threads()
        mkldnn = torch.backends.mkldnn.is_available()
    except Exception:  # noqa: BLE001
        torch_version, torch_threads, mkldnn = None, None, None
    # DISTCNN_GIT names the commit when the binary was built outside this checkout.
    head = os.environ.get("DISTCNN_GIT") or sh("git rev-parse --short HEAD")
    dirty = "DISTCNN_GIT" not in os.environ and bool(sh("git status --porcelain --untracked-files=no"))
    print(json.dumps({
        "type": "machine",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": lscpu.get("Model name"),
        "cpus": lscpu.get("CPU(s)"),
        "cores_per_socket": lscpu.get("Core(s) per socket"),
        "sockets": lscpu.get("Socket(s)"),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch_version, "torch_default_threads": torch_threads, "mkldnn": mkldnn,
        "mpirun": sh("mpirun --version 2>&1 | head -1"),
        "distcnn_git": head + ("+dirty" if dirty else "") if head else None,
        "load_average_at_start": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "run": args.command_line,
        "env": {k: os.environ[k] for k in ("QUICK", "ROUNDS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                if k in os.environ},
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("distcnn")
    d.add_argument("--round", type=int, required=True)
    d.add_argument("--command", required=True)
    d.add_argument("--rss", nargs="*")
    t = sub.add_parser("pytorch")
    t.add_argument("--round", type=int, required=True)
    t.add_argument("--command", required=True)
    a = sub.add_parser("pair")
    a.add_argument("--round", type=int, required=True)
    a.add_argument("--command", required=True)
    a.add_argument("outputs", nargs=2)
    m = sub.add_parser("machine")
    m.add_argument("--command-line", default="")
    args = p.parse_args()
    {"distcnn": distcnn, "pytorch": pytorch, "pair": pair, "machine": machine}[args.what](args)


if __name__ == "__main__":
    main()
