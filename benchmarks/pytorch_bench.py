#!/usr/bin/env python3
"""PyTorch baseline for `distcnn bench`.

Trains the same two networks as distcnn's presets (`seed`, `ref`; see
Sources/Engine/ModelSpec.swift) on synthetic data -- random inputs [N,1,28,28], random
labels -- with the same batch, timed steps and warm-up, Adam (lr 1e-3, eps 1e-7) and
cross-entropy. A step is zero_grad + forward + loss + backward + optimizer.step, timed
with perf_counter; images/s is computed from the median step time.

Modes (one JSON line per configuration on stdout):
  eager          NCHW contiguous (PyTorch's default)
  channels_last  model and inputs in torch.channels_last
  ddp            DistributedDataParallel, gloo backend, --world-size processes spawned
                 with torch.multiprocessing, --threads threads each, global batch split
                 evenly; a step takes as long as the slowest rank (per-step max over
                 ranks), images/s is the job's aggregate. Plain (per-rank) BatchNorm:
                 torch.nn.SyncBatchNorm does not run on CPU.
  eval           inference throughput: model.eval(), torch.no_grad(), forward only
                 (default batch 1000), in the layout given by --layout.

L2 kernel regularisation is left out (it does not change the timing materially).

Examples:
  python3 benchmarks/pytorch_bench.py --model ref --batch-size 128 --steps 30 --warmup 3 --threads 2 --mode eager,channels_last
  python3 benchmarks/pytorch_bench.py --model ref --batch-size 128 --steps 30 --warmup 3 --threads 1 --ddp
  python3 benchmarks/pytorch_bench.py --model ref --eval --batch-size 1000 --steps 10 --threads 2
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- models

class TFSamePad(nn.Module):
    """TensorFlow/Keras 'same' padding for a strided window: out = ceil(in / stride),
    the odd pixel of padding goes to the bottom/right."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    @staticmethod
    def amounts(size, kernel, stride):
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x):
        top, bottom = self.amounts(x.shape[-2], self.kernel, self.stride)
        left, right = self.amounts(x.shape[-1], self.kernel, self.stride)
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))


def conv_same(cin, cout, k, stride=1, bias=True):
    """Keras Conv2D(padding='same'). Stride 1 with an odd kernel is symmetric, so plain
    `padding=k//2` is exactly TF's; otherwise pad explicitly the TF way."""
    if stride == 1 and k % 2 == 1:
        return [nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, bias=bias)]
    return [TFSamePad(k, stride), nn.Conv2d(cin, cout, k, stride=stride, padding=0, bias=bias)]


def bn2d(c, keras_momentum, eps):
    return nn.BatchNorm2d(c, momentum=1.0 - keras_momentum, eps=eps)


def bn1d(c, keras_momentum, eps):
    return nn.BatchNorm1d(c, momentum=1.0 - keras_momentum, eps=eps)


def build_seed():
    # conv(5,k3,s2,same,elu) bn maxpool2 conv(10,k3,s2,same,elu) bn flatten
    # dense(50,elu) dropout(.5) dense(10); BN Keras defaults (momentum .99, eps 1e-3).
    # 28 -> 14 (pad 0/1) -> pool 7 -> 4 (pad 1/1): 10*4*4 = 160 features.
    return nn.Sequential(
        *conv_same(1, 5, 3, stride=2), nn.ELU(),
        bn2d(5, 0.99, 1e-3),
        nn.MaxPool2d(2),
        *conv_same(5, 10, 3, stride=2), nn.ELU(),
        bn2d(10, 0.99, 1e-3),
        nn.Flatten(),
        nn.Linear(10 * 4 * 4, 50), nn.ELU(),
        nn.Dropout(0.5),
        nn.Linear(50, 10),
    )


def build_ref():
    # Two VGG blocks (conv3x3 same + BN + ReLU, twice, then maxpool 2) and a dense head;
    # BN momentum 0.9 (Keras) = 0.1 (torch), eps 1e-5. Convs keep their bias (the spec's
    # default use_bias = true).
    def block(cin, cout):
        return [*conv_same(cin, cout, 3), bn2d(cout, 0.9, 1e-5), nn.ReLU(inplace=True),
                *conv_same(cout, cout, 3), bn2d(cout, 0.9, 1e-5), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    return nn.Sequential(
        *block(1, 32), *block(32, 64),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 256), bn1d(256, 0.9, 1e-5), nn.ReLU(inplace=True),
        nn.Dropout(0.4),
        nn.Linear(256, 10),
    )


MODELS = {"seed": build_seed, "ref": build_ref}
DEFAULT_BATCH = {"seed": 32, "ref": 128}


def peak_rss_mb():
    # Linux: ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic(batch, seed, channels_last):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def make_model(name, channels_last, seed=1):
    torch.manual_seed(seed)
    model = MODELS[name]()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_loop(model, x, y, steps, warmup):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    model.train()
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if s >= warmup:
            times.append(dt * 1000.0)
    if not math.isfinite(loss.item()):
        raise RuntimeError("loss is not finite")
    return times


def eval_loop(model, x, steps, warmup):
    model.eval()
    times = []
    with torch.no_grad():
        for s in range(warmup + steps):
            t0 = time.perf_counter()
            out = model(x)
            _ = out.argmax(1)
            dt = time.perf_counter() - t0
            if s >= warmup:
                times.append(dt * 1000.0)
    return times


def record(args, mode, threads, batch, times, rss, **extra):
    med = statistics.median(times)
    r = {
        "framework": "pytorch", "model": args.model, "mode": mode, "threads": threads,
        "batch": batch, "images_per_second": batch / (med / 1000.0),
        "step_ms_median": med, "step_ms_min": min(times), "step_ms_max": max(times),
        "steps": len(times), "warmup": args.warmup, "peak_rss_mb": rss,
        "torch": torch.__version__,
    }
    r.update(extra)
    return r


# --------------------------------------------------------------------------- DDP

def _ddp_worker(rank, world, args, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if args.bind_cores:
        # One core per process, as `mpirun --bind-to core` places distcnn's ranks.
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[rank % len(cores)]})
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cl = args.layout == "channels_last"
        # Same initial weights everywhere (DDP also broadcasts rank 0's at construction).
        model = DDP(make_model(args.model, cl))
        # Even split of the global batch; shard sizes differ by at most one.
        lo = rank * args.batch_size // world
        hi = (rank + 1) * args.batch_size // world
        x, y = synthetic(args.batch_size, 7, cl)
        x, y = x[lo:hi].contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format), y[lo:hi].clone()
        dist.barrier()
        times = torch.tensor(train_loop(model, x, y, args.steps, args.warmup), dtype=torch.float64)
        # The job is as fast as its slowest rank, step by step.
        dist.all_reduce(times, op=dist.ReduceOp.MAX)
        rss = torch.tensor([peak_rss_mb()], dtype=torch.float64)
        rss_sum = rss.clone()
        dist.all_reduce(rss, op=dist.ReduceOp.MAX)
        dist.all_reduce(rss_sum, op=dist.ReduceOp.SUM)
        if rank == 0:
            queue.put((times.tolist(), rss.item(), rss_sum.item()))
        # Leave together: a rank tearing gloo down while its peer is still in a
        # collective occasionally aborts ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ddp(args):
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    context = mp.start_processes(_ddp_worker, args=(args.world_size, args, port, queue),
                                 nprocs=args.world_size, join=False, start_method="spawn")
    teardown = None
    try:
        while not context.join():
            pass
    except Exception as e:  # noqa: BLE001 -- decide below whether the figures survived
        if queue.empty():
            raise
        # The timed loop finished and rank 0 delivered its figures; a crash in
        # process-group teardown does not invalidate them, but say so.
        teardown = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"pytorch_bench: ddp teardown failed after results were in: {teardown}", file=sys.stderr)
    times, rss_max, rss_sum = queue.get()
    return record(args, "ddp", args.threads, args.batch_size, times, rss_max,
                  world_size=args.world_size, layout=args.layout, backend="gloo",
                  peak_rss_mb_sum=rss_sum, batchnorm="per-rank (SyncBatchNorm is GPU-only)",
                  **({"teardown_error": teardown} if teardown else {}))


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="ref")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch (default: the model's; 1000 for --eval)")
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (per process for ddp)")
    p.add_argument("--mode", default="eager",
                   help="comma-separated list of eager, channels_last, ddp, eval")
    p.add_argument("--ddp", action="store_true", help="same as --mode ddp")
    p.add_argument("--eval", action="store_true", help="same as --mode eval")
    p.add_argument("--layout", choices=["eager", "channels_last"], default="eager",
                   help="memory layout for ddp and eval modes")
    p.add_argument("--world-size", type=int, default=2, help="ddp processes")
    p.add_argument("--bind-cores", action="store_true", help="pin each ddp process to its own core")
    args = p.parse_args()

    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if args.ddp:
        modes = ["ddp"]
    if args.eval:
        modes = ["eval"]
    for m in modes:
        if m not in ("eager", "channels_last", "ddp", "eval"):
            p.error(f"unknown mode {m!r}")
    if args.batch_size is None:
        args.batch_size = 1000 if modes == ["eval"] else DEFAULT_BATCH[args.model]
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.batch_size < args.world_size:
        p.error("need steps >= 1, warmup >= 0, threads >= 1, batch >= world size")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    for m in modes:
        # ru_maxrss is a high-water mark for the whole process: with several modes in one
        # process, later lines report the maximum so far. run.sh runs one mode per process.
        if m == "ddp":
            r = run_ddp(args)
        elif m == "eval":
            cl = args.layout == "channels_last"
            model = make_model(args.model, cl)
            x, _ = synthetic(args.batch_size, 7, cl)
            times = eval_loop(model, x, args.steps, args.warmup)
            r = record(args, "eval", args.threads, args.batch_size, times, peak_rss_mb(), layout=args.layout)
        else:
            cl = m == "channels_last"
            model = make_model(args.model, cl)
            x, y = synthetic(args.batch_size, 7, cl)
            times = train_loop(model, x, y, args.steps, args.warmup)
            r = record(args, m, args.threads, args.batch_size, times, peak_rss_mb())
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
