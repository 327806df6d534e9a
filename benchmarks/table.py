#!/usr/bin/env python3
"""Markdown summary of a benchmarks/results/<date>.jsonl file written by run.sh.

  python3 benchmarks/table.py benchmarks/results/2025-11-26_223000.jsonl

Every run's images/s comes from its median step time; a cell shows the median of those over
the rounds and, in parentheses, their min–max. For PyTorch the best mode (layout) of each
configuration is the one with the highest median; the others are listed beside it. The
memory column is the peak RSS (MiB) of one process (the largest rank), the maximum over
rounds, distcnn / PyTorch's best mode.
"""
import json
import statistics
import sys
from collections import OrderedDict, defaultdict


def load(path):
    machine, runs, failures = None, [], []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("type") == "machine":
                machine = r
            elif "error" in r:
                failures.append(r)
            else:
                runs.append(r)
    return machine, runs, failures


def key(r):
    kind = {"eval": "eval", "pair": "pair", "mpi-local": "local"}.get(r["mode"], "train")
    return (r["model"], kind, int(r.get("world_size", 1)), int(r["threads"]), int(r["batch"]))


def label(k):
    model, kind, world, threads, batch = k
    procs = "1 process" if world == 1 else f"{world} processes"
    th = "thread" if threads == 1 else "threads"
    if kind == "pair":
        return (f"`{model}` training, {world} independent processes × {threads} {th}, batch {batch // world} each "
                "(no communication: the ceiling for the row above)")
    what = "inference" if kind == "eval" else "training"
    s = f"`{model}` {what}, batch {batch}, {procs} × {threads} {th}"
    if kind == "local":
        s += " (mpirun `--bn-sync local` / DDP gloo: both per-rank batch norm)"
    elif world > 1:
        s += " (mpirun / DDP gloo)"
    return s


def order(k):
    model, kind, world, threads, batch = k
    return (kind == "eval", world, model != "ref", kind == "local", kind == "pair", -threads, batch)


def fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def cell(values):
    if not values:
        return "—", None
    med = statistics.median(values)
    if len(values) == 1:
        return f"{fmt_rate(med)}", med
    return f"{fmt_rate(med)} ({fmt_rate(min(values))}–{fmt_rate(max(values))})", med


def fmt_mb(v):
    return "—" if v is None else f"{v:,.0f}"


def scaling_rows(runs):
    """Per model: the -np 2 / (2 × -np 1) scaling at 1 thread, and the independent pair's, per round."""
    def pct(values):
        if not values:
            return "—"
        med = statistics.median(values) * 100
        if len(values) == 1:
            return f"{med:.0f}%"
        return f"{med:.0f}% ({min(values) * 100:.0f}–{max(values) * 100:.0f}%)"
    rows = []
    variants = [("mpi", ""), ("mpi-local", ", `--bn-sync local`")]
    models = sorted({r["model"] for r in runs if r["framework"] == "distcnn"}, key=lambda m: m != "ref")
    for model, (mpi_mode, note) in [(m, v) for m in models for v in variants]:
        def rate(mode, rnd, world):
            for r in runs:
                if (r["framework"] == "distcnn" and r["model"] == model and r["mode"] == mode and r["round"] == rnd
                        and int(r["threads"]) == 1 and int(r.get("world_size", 1)) == world):
                    return r
            return None
        mpi, pairs, vs_pair, shares, least = [], [], [], [], []
        for rnd in sorted({r["round"] for r in runs}):
            one, two, pr = rate("single", rnd, 1), rate(mpi_mode, rnd, 2), rate("pair", rnd, 2)
            if one and two and one["batch"] == two["batch"]:
                mpi.append(two["images_per_second"] / (2 * one["images_per_second"]))
                shares.append(two["all_reduce_share"])
                if two.get("all_reduce_share_least") is not None:
                    least.append(two["all_reduce_share_least"])
            if one and pr and one["batch"] == pr["batch"]:
                pairs.append(pr["images_per_second"] / (2 * one["images_per_second"]))
            if two and pr:
                vs_pair.append(two["images_per_second"] / pr["images_per_second"])
        if mpi:
            share = "—"
            if shares:
                share = "%.1f%%" % (statistics.median(shares) * 100)
                if least:
                    share += " / %.1f%%" % (statistics.median(least) * 100)
            rows.append(f"| `{model}`{note} | {pct(mpi)} | {pct(pairs)} | {pct(vs_pair)} | {share} |")
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: table.py RESULTS.jsonl")
    machine, runs, failures = load(sys.argv[1])

    groups = defaultdict(lambda: {"distcnn": [], "pytorch": defaultdict(list)})
    for r in runs:
        g = groups[key(r)]
        if r["framework"] == "distcnn":
            g["distcnn"].append(r)
        else:
            mode = r["mode"]
            if mode in ("ddp", "eval") and r.get("layout"):
                mode = f"{mode}/{r['layout']}"
            g["pytorch"][mode].append(r)
    # DDP normalises per rank: it is the peer of both distributed distcnn rows.
    for k in list(groups):
        if k[1] == "local":
            groups[k]["pytorch"] = groups.get((k[0], "train") + k[2:], {"pytorch": {}})["pytorch"]

    rounds = sorted({r["round"] for r in runs})
    out = []
    p = out.append
    p("## distcnn vs PyTorch, CPU training and inference throughput")
    p("")
    if machine:
        cores = machine.get("cpus")
        cps, sockets = machine.get("cores_per_socket"), machine.get("sockets")
        desc = f"{machine.get('cpu_model')}, {cores} CPU(s) ({sockets} socket × {cps} cores, " \
               f"{machine.get('threads_per_core')} thread/core)"
        if machine.get("hypervisor"):
            desc += f", {machine['hypervisor']} VM"
        p(f"- Machine: {desc}; Linux {machine.get('kernel')}")
        p(f"- Date: {machine.get('date')}; distcnn {machine.get('distcnn_git')}; "
          f"PyTorch {machine.get('torch')} (oneDNN {'on' if machine.get('mkldnn') else 'off'}), "
          f"Python {machine.get('python')}; {machine.get('mpirun')}")
        p(f"- Load average at start: {machine.get('load_average_at_start')}; rounds: {len(rounds)}")
    p("")
    p("| Configuration | distcnn images/s | PyTorch best images/s | PyTorch best mode | distcnn / PyTorch | "
      "other PyTorch modes | peak RSS MiB per process, distcnn / PyTorch |")
    p("|---|---:|---:|---|---:|---|---:|")
    details = []
    for k in sorted(groups, key=order):
        g = groups[k]
        d_rates = [r["images_per_second"] for r in g["distcnn"]]
        d_cell, d_med = cell(d_rates)
        best_mode, best_med, best_cell, others = None, None, "—", []
        per_mode = {}
        for mode, rs in g["pytorch"].items():
            c, m = cell([r["images_per_second"] for r in rs])
            per_mode[mode] = (c, m)
            if best_med is None or m > best_med:
                best_mode, best_med, best_cell = mode, m, c
        for mode, (c, m) in sorted(per_mode.items()):
            if mode != best_mode:
                others.append(f"{mode}: {c}")
        ratio = f"{d_med / best_med:.2f}×" if d_med and best_med else "—"
        d_rss = max((r["peak_rss_mb"] for r in g["distcnn"] if r.get("peak_rss_mb")), default=None)
        t_rss = max((r["peak_rss_mb"] for r in g["pytorch"].get(best_mode, []) if r.get("peak_rss_mb")),
                    default=None)
        p(f"| {label(k)} | {d_cell} | {best_cell} | {best_mode or '—'} | {ratio} | "
          f"{'; '.join(others) or '—'} | {fmt_mb(d_rss)} / {fmt_mb(t_rss)} |")
        if g["distcnn"]:
            ds = g["distcnn"]
            details.append(
                f"| {label(k)} | {statistics.median(r['step_ms_median'] for r in ds):.2f} | "
                f"{statistics.median(r['images_per_second_mean'] for r in ds):,.0f} | "
                f"{statistics.median(r['gflops'] for r in ds):.1f} | "
                f"{statistics.median(r['peak_share'] for r in ds) * 100:.0f}% | "
                f"{statistics.median(r['all_reduce_share'] for r in ds) * 100:.1f}% |")
    p("")
    if details:
        p("distcnn detail (medians over rounds): median step, distcnn's own mean-based images/s, GFLOP/s, "
          "share of its measured sgemm peak, share of the step spent in all-reduce.")
        p("")
        p("| Configuration | step ms | images/s (mean-based) | GFLOP/s | of sgemm peak | all-reduce |")
        p("|---|---:|---:|---:|---:|---:|")
        out.extend(details)
        p("")
    scaling = scaling_rows(runs)
    if scaling:
        p("Scaling of distcnn over two ranks, 1 thread each, per round (then the median and range "
          "over rounds): `mpirun -np 2` over twice one process at the same global batch; and the same "
          "for two independent processes with half the batch each (no communication), which is what "
          "this machine allows. All-reduce share of the `-np 2` step: on the rank that spent longest in "
          "collectives (waiting for the slower core included) and on the one that spent least (the slower "
          "rank: about what the exchanges themselves cost).")
        p("")
        p("| Model | `-np 2` / (2 × `-np 1`) | independent pair / (2 × `-np 1`) | `-np 2` / pair | "
          "all-reduce share, most / least |")
        p("|---|---:|---:|---:|---:|")
        out.extend(scaling)
        p("")
    steps = sorted({(r["model"], r["mode"] == "eval", r["steps"], r.get("warmup")) for r in runs
                    if r["framework"] == "pytorch"})
    p("Notes:")
    p("- images/s = batch / median step time of a run (training: forward + backward + gradient all-reduce "
      "+ Adam; inference: forward only, batch-norm in inference mode, no gradients); "
      "cells give the median over rounds and (min–max). Synthetic data, random labels; the two frameworks "
      "alternate within every round.")
    p("- Timed steps (warm-up): " + "; ".join(
        f"{m}{' eval' if e else ''} {s} ({w})" for m, e, s, w in steps) + ".")
    p("- PyTorch modes: `eager` = NCHW contiguous, `channels_last` = model and input in "
      "`torch.channels_last`; `ddp` = DistributedDataParallel over gloo with per-rank BatchNorm "
      "(`SyncBatchNorm` is GPU-only), while `distcnn bench` synchronises batch-norm statistics "
      "across ranks by default (`--bn-sync global`), i.e. does more communication; the rows with "
      "`--bn-sync local` normalise per rank as DDP does.")
    sources = {r.get("peak_rss_source") or "time" for r in runs
               if r["framework"] == "distcnn" and r.get("peak_rss_mb")}
    d_src = " and ".join({"time": "GNU `time -f %M`",
                          "distcnn": "its own `peak_rss_mib` (no `/usr/bin/time`)"}.get(x, x)
                         for x in sorted(sources, reverse=True)) or "—"
    p("- Peak RSS (MiB = 2^20 bytes): PyTorch from `getrusage` (the `import torch` runtime alone is "
      f"~300 MiB); distcnn from {d_src}; per process (the largest rank under mpirun / DDP), "
      "maximum over rounds.")
    if any(k[1] == "eval" and not groups[k]["distcnn"] for k in groups):
        p("- Inference: no distcnn `bench --eval` result in this file (older runner or a failed run), "
          "so that row has PyTorch only.")
    if failures:
        p("- **Failed runs:** " + "; ".join(f"round {f['round']} `{f['command']}` ({f['error']})" for f in failures))
    p("")
    p("Commands (each round runs them in this order):")
    p("")
    p("```")
    seen = OrderedDict()
    for r in runs + failures:
        seen.setdefault(r["command"], None)
    for c in seen:
        p(c)
    p("```")
    if machine and machine.get("run"):
        p("")
        p(f"Runner: `{machine['run'].strip()}`")
    print("\n".join(out))


if __name__ == "__main__":
    main()
