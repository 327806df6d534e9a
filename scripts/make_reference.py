#!/usr/bin/env python3
"""Make the PyTorch reference files that the Swift engine tests compare against.

    python3 scripts/make_reference.py            # writes both fixtures
    python3 scripts/make_reference.py --no-check # skip the self-checks

Writes Tests/TrainingTests/Fixtures/reference_<model>.safetensors for the preset models
`seed` and `ref` (mirrored by hand from Sources/Engine/ModelSpec.swift in SPECS below:
keep the two in step). The network is built from functional ops, not nn.Module, so every
convention the engine follows is visible here:

* Activations are NCHW float32; the input x is [N, 1, 28, 28], uniform in [0, 1); the
  labels y are classes 0..9 (stored as F32, shape [N]). N = 8 for seed, 6 for ref.
* Tensor names follow the layer index i in the spec's `layers` list (0-based):
  conv `layers.i.weight` [out, in, kh, kw] and `layers.i.bias` [out]; dense
  `layers.i.weight` [out, in] and `layers.i.bias` [out]; batch norm `layers.i.weight`
  (gamma), `layers.i.bias` (beta), `layers.i.running_mean`, `layers.i.running_var`, all
  [C]. Flatten is a plain reshape of NCHW, i.e. (C, H, W) order.
* Conv2D 'same' padding is TensorFlow's: out = ceil(in / stride), total pad =
  max((out - 1) * stride + k - in, 0), top/left get floor(total / 2), bottom/right the
  rest. 'valid' pads nothing. The fused activation (linear, relu, elu with alpha 1)
  follows the bias. MaxPool2D is 'valid' (window `size`, stride `stride`).
* BatchNorm is in training mode: normalise with the batch mean and the BIASED batch
  variance per channel, over (N, H, W) for images and over N for dense features:
  y = gamma * (x - mean) / sqrt(var + eps) + beta. Every training forward updates the
  running statistics the Keras way with momentum m:
  running_mean = m * running_mean + (1 - m) * mean,
  running_var  = m * running_var  + (1 - m) * var * n / (n - 1)   (unbiased),
  where n is the number of values per channel.
* Dropout multiplies its input by an externally supplied mask of the input's shape
  [N, features] holding 0 or 1 / (1 - rate) (Bernoulli, keep probability 1 - rate). One
  mask per training step k = 0, 1, 2 is stored as `mask.step{k}.layers.{i}`.
* Loss = mean over the batch of softmax cross-entropy on the final dense layer's logits
  (`loss_data`) + Keras L2: lambda * sum(kernel ** 2) for every conv/dense layer with an
  `l2` coefficient (kernels only, never biases).
* Adam, Keras formula, by hand: lr 1e-3, b1 0.9, b2 0.999, eps 1e-7, t from 1:
  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
  alpha = lr sqrt(1 - b2^t) / (1 - b1^t);  w -= alpha m / (sqrt(v) + eps).
  Every trainable tensor (kernels, biases, gammas, betas) is updated; running stats are
  not trained. Three steps, each a training forward + backward on the same x, y with that
  step's dropout mask.
* Everything is computed in float32, single-threaded, deterministic algorithms, fixed seed.

Stored tensors (all F32, contiguous):
  x, y                      the batch
  init.<name>               every parameter and running stat before training
  mask.step{k}.layers.{i}   dropout masks, k = 0, 1, 2
  logits, loss, loss_data   step 0's training forward ([N, 10], [1], [1])
  grad.<name>, grad.input   d(total loss)/d(parameter) and d(total loss)/dx at step 0
  losses                    total loss at steps 0, 1, 2 ([3])
  final.<name>              every parameter and running stat after the 3 Adam steps
Metadata: model, generator, torch, and `pre_bn_biases`: the biases of conv/dense layers
whose output goes straight into a batch norm. Their true gradient is exactly zero (the
batch mean removes them), so `grad.` holds float32 rounding noise there.

How closely a second float32 implementation can match (measured by the library
cross-check below): step 0 (logits, loss, grads) to ~1e-5 relative. The finals of `seed`
to ~1e-6. The finals of `ref` only mostly: Adam (eps 1e-7) turns any gradient element
that is below float32's summation noise (~1e-6 absolute here), including every pre-BN
bias, into a step of about lr in a random direction, and that spreads a little through
the later steps; the BN running means after pre-BN biases move with them. Measured
against PyTorch's own layers and optimizer: 551 of 872,426 `ref` final elements beyond
1e-5 + 1e-4|x|, worst 2.4e-3. A test should allow that (e.g. all within 6 * lr, 99% tight).
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# --------------------------------------------------------------------------------------
# The preset models, mirrored from Sources/Engine/ModelSpec.swift.

def conv(filters, kernel, stride=1, padding="same", activation="linear", l2=None):
    return dict(type="conv2d", filters=filters, kernel=kernel, stride=stride,
                padding=padding, activation=activation, l2=l2, use_bias=True)

def dense(units, activation="linear", l2=None):
    return dict(type="dense", units=units, activation=activation, l2=l2, use_bias=True)

def batchnorm(momentum=0.99, epsilon=1e-3):
    return dict(type="batchnorm", momentum=momentum, epsilon=epsilon)

def maxpool(size, stride=None, padding="valid"):
    return dict(type="maxpool2d", size=size, stride=stride or size, padding=padding)

def dropout(rate):
    return dict(type="dropout", rate=rate)

FLATTEN = dict(type="flatten")
RELU = dict(type="relu")
ELU = dict(type="elu", alpha=1.0)

SPECS = {
    "seed": dict(input=(28, 28, 1), batch=8, rng_seed=20240901, layers=[
        conv(5, kernel=3, stride=2, padding="same", activation="elu", l2=0.02),  # 0
        batchnorm(),                                                             # 1
        maxpool(2),                                                              # 2
        conv(10, kernel=3, stride=2, padding="same", activation="elu", l2=0.02), # 3
        batchnorm(),                                                             # 4
        FLATTEN,                                                                 # 5
        dense(50, activation="elu"),                                             # 6
        dropout(0.5),                                                            # 7
        dense(10),                                                               # 8
    ]),
    "ref": dict(input=(28, 28, 1), batch=6, rng_seed=20240902, layers=[
        conv(32, kernel=3), batchnorm(0.9, 1e-5), RELU,                          # 0-2
        conv(32, kernel=3), batchnorm(0.9, 1e-5), RELU,                          # 3-5
        maxpool(2),                                                              # 6
        conv(64, kernel=3), batchnorm(0.9, 1e-5), RELU,                          # 7-9
        conv(64, kernel=3), batchnorm(0.9, 1e-5), RELU,                          # 10-12
        maxpool(2),                                                              # 13
        FLATTEN,                                                                 # 14
        dense(256), batchnorm(0.9, 1e-5), RELU,                                  # 15-17
        dropout(0.4),                                                            # 18
        dense(10),                                                               # 19
    ]),
}

STEPS = 3
LR, BETA1, BETA2, ADAM_EPS = 1e-3, 0.9, 0.999, 1e-7
NUM_CLASSES = 10

# --------------------------------------------------------------------------------------
# Shapes, parameters, masks.

def same_padding(size, kernel, stride):
    """TensorFlow 'same': (pad_before, pad_after, out). The odd pixel goes after."""
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out

def layer_shapes(spec):
    """Per-sample input shape of every layer ((C, H, W) or (F,)), plus the output shape."""
    h, w, c = spec["input"]
    shape = (c, h, w)
    shapes = []
    for layer in spec["layers"]:
        shapes.append(shape)
        t = layer["type"]
        if t == "conv2d":
            c, h, w = shape
            k, s = layer["kernel"], layer["stride"]
            if layer["padding"] == "same":
                oh, ow = same_padding(h, k, s)[2], same_padding(w, k, s)[2]
            else:
                oh, ow = (h - k) // s + 1, (w - k) // s + 1
            shape = (layer["filters"], oh, ow)
        elif t == "maxpool2d":
            assert layer["padding"] == "valid", "only valid pooling is used by the presets"
            c, h, w = shape
            k, s = layer["size"], layer["stride"]
            shape = (c, (h - k) // s + 1, (w - k) // s + 1)
        elif t == "flatten":
            shape = (math.prod(shape),)
        elif t == "dense":
            assert len(shape) == 1, "dense needs flat input"
            shape = (layer["units"],)
        elif t in ("batchnorm", "dropout", "relu", "elu"):
            pass
        else:
            raise NotImplementedError(t)
    return shapes, shape

def init_tensors(spec, gen):
    """Initial parameters and running stats, in layer order (weight before bias)."""
    shapes, _ = layer_shapes(spec)
    params, stats = {}, {}

    def uniform(shape, limit):
        return (torch.rand(shape, generator=gen) * 2 - 1) * limit

    for i, (layer, shape) in enumerate(zip(spec["layers"], shapes)):
        t, p = layer["type"], f"layers.{i}."
        if t in ("conv2d", "dense"):
            if t == "conv2d":
                k = layer["kernel"]
                wshape = (layer["filters"], shape[0], k, k)
                fan_in, fan_out = shape[0] * k * k, layer["filters"] * k * k
            else:
                wshape = (layer["units"], shape[0])
                fan_in, fan_out = shape[0], layer["units"]
            params[p + "weight"] = uniform(wshape, math.sqrt(6.0 / (fan_in + fan_out)))  # glorot
            if layer["use_bias"]:
                params[p + "bias"] = uniform((wshape[0],), 0.1)
        elif t == "batchnorm":
            c = shape[0]
            params[p + "weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
            params[p + "bias"] = 0.1 * torch.randn(c, generator=gen)
            stats[p + "running_mean"] = torch.zeros(c)
            stats[p + "running_var"] = torch.ones(c)
    return params, stats

def make_masks(spec, n, gen):
    """masks[k][i]: the dropout mask of layer i at step k, 0 or 1/(1-rate)."""
    shapes, _ = layer_shapes(spec)
    masks = []
    for _ in range(STEPS):
        step = {}
        for i, (layer, shape) in enumerate(zip(spec["layers"], shapes)):
            if layer["type"] == "dropout":
                keep = 1.0 - layer["rate"]
                kept = torch.bernoulli(torch.full((n, *shape), keep), generator=gen)
                step[i] = kept * torch.tensor(1.0 / keep, dtype=torch.float32)
        masks.append(step)
    return masks

def pre_bn_biases(spec):
    layers = spec["layers"]
    return [f"layers.{i}.bias" for i, l in enumerate(layers[:-1])
            if l["type"] in ("conv2d", "dense") and l["use_bias"] and l["activation"] == "linear"
            and layers[i + 1]["type"] == "batchnorm"]

# --------------------------------------------------------------------------------------
# The network, functional.

def activate(x, name):
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "elu":
        return F.elu(x, alpha=1.0)
    raise NotImplementedError(name)

def conv2d(x, weight, bias, stride, padding):
    k = weight.shape[-1]
    if padding == "same":
        top, bottom, _ = same_padding(x.shape[2], k, stride)
        left, right, _ = same_padding(x.shape[3], k, stride)
        x = F.pad(x, (left, right, top, bottom))  # F.pad order: last dim first
    return F.conv2d(x, weight, bias, stride=stride, padding=0)

def batchnorm_train(x, gamma, beta, stats, prefix, momentum, eps, update):
    """Training-mode batch norm; if `update`, replaces stats[prefix + running_*]."""
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    view = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    n = x.numel() // x.shape[1]
    mean = x.mean(dim=dims)
    var = ((x - mean.view(view)) ** 2).mean(dim=dims)  # biased
    y = (x - mean.view(view)) / torch.sqrt(var.view(view) + eps) * gamma.view(view) + beta.view(view)
    if update:
        with torch.no_grad():
            rm, rv = stats[prefix + "running_mean"], stats[prefix + "running_var"]
            stats[prefix + "running_mean"] = momentum * rm + (1 - momentum) * mean
            stats[prefix + "running_var"] = momentum * rv + (1 - momentum) * var * (n / (n - 1))
    return y

def forward(spec, params, stats, x, masks, update_stats=True):
    """Training-mode forward; returns the logits. `masks` maps layer index -> dropout mask."""
    for i, layer in enumerate(spec["layers"]):
        t, p = layer["type"], f"layers.{i}."
        if t == "conv2d":
            x = conv2d(x, params[p + "weight"], params.get(p + "bias"), layer["stride"], layer["padding"])
            x = activate(x, layer["activation"])
        elif t == "dense":
            x = x @ params[p + "weight"].t()
            if p + "bias" in params:
                x = x + params[p + "bias"]
            x = activate(x, layer["activation"])
        elif t == "batchnorm":
            x = batchnorm_train(x, params[p + "weight"], params[p + "bias"], stats, p,
                                layer["momentum"], layer["epsilon"], update_stats)
        elif t == "maxpool2d":
            x = F.max_pool2d(x, kernel_size=layer["size"], stride=layer["stride"])
        elif t == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif t == "dropout":
            x = x * masks[i]
        elif t == "relu":
            x = F.relu(x)
        elif t == "elu":
            x = F.elu(x, alpha=layer.get("alpha", 1.0))
        else:
            raise NotImplementedError(t)
    return x

def losses_of(spec, params, logits, y):
    """(total, data): mean softmax cross-entropy, plus L2 on kernels."""
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    data = -log_probs.gather(1, y.view(-1, 1)).mean()
    total = data
    for i, layer in enumerate(spec["layers"]):
        if layer["type"] in ("conv2d", "dense") and layer.get("l2"):
            total = total + layer["l2"] * (params[f"layers.{i}.weight"] ** 2).sum()
    return total, data

# --------------------------------------------------------------------------------------
# Training: 3 steps of hand-written Keras Adam.

def train(spec, init_params, init_stats, x, y, masks):
    params = {k: v.clone().requires_grad_(True) for k, v in init_params.items()}
    stats = {k: v.clone() for k, v in init_stats.items()}
    names = list(params)
    adam_m = {k: torch.zeros_like(t) for k, t in init_params.items()}
    adam_v = {k: torch.zeros_like(t) for k, t in init_params.items()}
    out = {"losses": []}
    for step in range(STEPS):
        xin = x.clone().requires_grad_(True)
        logits = forward(spec, params, stats, xin, masks[step])
        total, data = losses_of(spec, params, logits, y)
        grads = torch.autograd.grad(total, [xin] + [params[k] for k in names])
        out["losses"].append(total.detach().clone())
        if step == 0:
            out["logits"] = logits.detach().clone()
            out["loss"], out["loss_data"] = total.detach().clone(), data.detach().clone()
            out["grad.input"] = grads[0].clone()
            for k, g in zip(names, grads[1:]):
                out["grad." + k] = g.clone()
        t = step + 1
        alpha = LR * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
        with torch.no_grad():
            for k, g in zip(names, grads[1:]):
                adam_m[k] = BETA1 * adam_m[k] + (1 - BETA1) * g
                adam_v[k] = BETA2 * adam_v[k] + (1 - BETA2) * g * g
                params[k] -= alpha * adam_m[k] / (torch.sqrt(adam_v[k]) + ADAM_EPS)
    out["final"] = {**{k: p.detach().clone() for k, p in params.items()}, **stats}
    return out

def make_reference(name):
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(spec["rng_seed"])
    n = spec["batch"]
    h, w, c = spec["input"]
    x = torch.rand((n, c, h, w), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    init_params, init_stats = init_tensors(spec, gen)
    masks = make_masks(spec, n, gen)
    res = train(spec, init_params, init_stats, x, y, masks)

    tensors = {"x": x, "y": y.float()}
    tensors.update({"init." + k: t for k, t in {**init_params, **init_stats}.items()})
    for k, step in enumerate(masks):
        tensors.update({f"mask.step{k}.layers.{i}": m for i, m in step.items()})
    tensors["logits"] = res["logits"]
    tensors["loss"] = res["loss"].reshape(1)
    tensors["loss_data"] = res["loss_data"].reshape(1)
    tensors.update({k: t for k, t in res.items() if k.startswith("grad.")})
    tensors["losses"] = torch.stack(res["losses"])
    tensors.update({"final." + k: t for k, t in res["final"].items()})
    tensors = {k: t.detach().to(torch.float32).contiguous() for k, t in tensors.items()}
    meta = {"model": name, "generator": "scripts/make_reference.py", "torch": torch.__version__,
            "pre_bn_biases": ",".join(pre_bn_biases(spec))}
    return spec, tensors, meta, (init_params, init_stats, x, y, masks)

def save(tensors, path, meta):
    """save_file, then put the metadata keys in sorted order: safetensors writes them in
    hash-map order, which changes from run to run, and the fixture should be byte-stable."""
    save_file(tensors, path, metadata=meta)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode()
        assert len(text) <= n
        f.seek(8)
        f.write(text.ljust(n, b" "))

# --------------------------------------------------------------------------------------
# Self-checks.

TINY = {  # small float64 copies of both architectures for gradcheck (odd sizes on purpose)
    "seed": dict(input=(9, 9, 1), batch=3, layers=[
        conv(2, 3, 2, "same", "elu", 0.02), batchnorm(), maxpool(2),
        conv(3, 3, 2, "same", "elu", 0.02), batchnorm(), FLATTEN,
        dense(4, "elu"), dropout(0.5), dense(3)]),
    "ref": dict(input=(8, 8, 1), batch=3, layers=[
        conv(2, 3), batchnorm(0.9, 1e-5), RELU, conv(2, 3), batchnorm(0.9, 1e-5), RELU,
        maxpool(2), conv(3, 3, padding="valid"), batchnorm(0.9, 1e-5), RELU, FLATTEN,
        dense(4), batchnorm(0.9, 1e-5), RELU, dropout(0.4), dense(3)]),
}

def check_gradients(name):
    """torch.autograd.gradcheck in float64 of the total loss w.r.t. x and every parameter."""
    spec = TINY[name]
    gen = torch.Generator().manual_seed(7)
    n = spec["batch"]
    h, w, c = spec["input"]
    x = torch.rand((n, c, h, w), generator=gen).double()
    y = torch.randint(0, 3, (n,), generator=gen)
    params, stats = init_tensors(spec, gen)
    masks = make_masks(spec, n, gen)[0]
    names = list(params)
    leaves = [x.requires_grad_(True)] + [params[k].double().requires_grad_(True) for k in names]
    masks = {i: m.double() for i, m in masks.items()}

    def f(x, *ps):
        logits = forward(spec, dict(zip(names, ps)), dict(stats), x, masks, update_stats=False)
        return losses_of(spec, dict(zip(names, ps)), logits, y)[0]

    torch.use_deterministic_algorithms(False)  # gradcheck's numerics need no determinism
    try:
        ok = torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)
    finally:
        torch.use_deterministic_algorithms(True)
    print(f"  gradcheck float64 tiny-{name}: {'ok' if ok else 'FAILED'}")

def check_against_library(name, spec, tensors, inputs):
    """Redo the 3 steps with library layers (F.conv2d's own 'same', F.batch_norm with its
    running-stat update, F.cross_entropy, torch.optim.Adam with eps rescaled to the Keras
    form) and compare with what the functional code stored.

    Step 0 (logits, losses, gradients) must agree to float32 rounding. The finals agree
    less well in `ref`, and that is inherent, not a bug: a gradient element whose true
    value is below float32's summation noise (~1e-6 here) gets a random sign, and Adam
    (eps 1e-7) turns any sign into a full step of ~lr; the next steps carry it on. So for
    the finals we require every element within a few lr and most within 1e-5 + 1e-4|x|."""
    init_params, init_stats, x, y, masks = inputs
    params = {k: t.clone().requires_grad_(True) for k, t in init_params.items()}
    stats = {k: t.clone() for k, t in init_stats.items()}
    opt = torch.optim.Adam(params.values(), lr=LR, betas=(BETA1, BETA2), foreach=False)
    losses = []
    for step in range(STEPS):
        a = x
        for i, layer in enumerate(spec["layers"]):
            t, p = layer["type"], f"layers.{i}."
            if t == "conv2d":
                k, s = layer["kernel"], layer["stride"]
                if layer["padding"] == "same" and s == 1:
                    a = F.conv2d(a, params[p + "weight"], params[p + "bias"], padding="same")
                else:  # seed's k=3, s=2 'same' by hand: 28 -> pad (0, 1); 7 -> pad (1, 1)
                    assert layer["padding"] == "same" and k == 3 and s == 2
                    pad = (0, 1, 0, 1) if a.shape[-1] % 2 == 0 else (1, 1, 1, 1)
                    a = F.conv2d(F.pad(a, pad), params[p + "weight"], params[p + "bias"], stride=s)
                a = activate(a, layer["activation"])
            elif t == "dense":
                a = activate(F.linear(a, params[p + "weight"], params[p + "bias"]), layer["activation"])
            elif t == "batchnorm":  # PyTorch momentum = 1 - Keras momentum; unbiased running var
                a = F.batch_norm(a, stats[p + "running_mean"], stats[p + "running_var"],
                                 params[p + "weight"], params[p + "bias"], training=True,
                                 momentum=1 - layer["momentum"], eps=layer["epsilon"])
            elif t == "maxpool2d":
                a = F.max_pool2d(a, 2)
            elif t == "flatten":
                a = torch.flatten(a, 1)
            elif t == "dropout":
                a = a * masks[step][i]
            else:
                a = activate(a, t)
        loss = F.cross_entropy(a, y) + sum(l["l2"] * params[f"layers.{i}.weight"].pow(2).sum()
                                           for i, l in enumerate(spec["layers"]) if l.get("l2"))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            logits0 = a.detach()
            grads0 = {k: q.grad.clone() for k, q in params.items()}
        for g in opt.param_groups:  # torch: lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps')
            g["eps"] = ADAM_EPS / math.sqrt(1 - BETA2 ** (step + 1))
        opt.step()

    noisy = set(pre_bn_biases(spec))
    dl = (tensors["logits"] - logits0).abs().max().item()
    dloss = max(abs(a - b) for a, b in zip(tensors["losses"].tolist(), losses))
    dgrad = max(((tensors["grad." + k] - g).abs().max() / g.abs().max()).item()
                for k, g in grads0.items() if k not in noisy)
    dnoisy = max([(tensors["grad." + k] - grads0[k]).abs().max().item() for k in noisy] + [0.0])
    worst, off, total = 0.0, 0, 0
    for k in list(params) + list(stats):
        ours = tensors["final." + k]
        theirs = (params[k] if k in params else stats[k]).detach()
        d = (ours - theirs).abs()
        worst = max(worst, d.max().item())
        off += int((d > 1e-5 + 1e-4 * theirs.abs()).sum())
        total += d.numel()
    print(f"  library cross-check {name}: step 0 max|d logits| {dl:.1e}, max|d losses| {dloss:.1e}, "
          f"max rel|d grad| {dgrad:.1e}, pre-BN bias grads (noise) max|d| {dnoisy:.1e}; "
          f"finals: max|d| {worst:.1e}, {off} of {total} elements beyond 1e-5 + 1e-4|x|")
    assert dl < 1e-4 and dloss < 1e-4 and dgrad < 1e-4 and dnoisy < 1e-4, "step 0 disagrees"
    assert worst < 6 * LR and off < 0.01 * total, "finals disagree beyond Adam's noise"

def check_descent(name, spec, tensors, inputs):
    """`losses` uses a new dropout mask each step, so it need not fall; with any one
    step's mask held fixed, the final weights must beat the initial ones."""
    init_params, init_stats, x, y, masks = inputs
    final = {k[len("final."):]: t for k, t in tensors.items() if k.startswith("final.")}
    pairs = []
    for step_masks in masks:
        before, after = (losses_of(spec, p, forward(spec, p, dict(init_stats), x, step_masks,
                                                    update_stats=False), y)[0].item()
                         for p in (init_params, final))
        assert after < before, "training did not lower the loss"
        pairs.append(f"{before:.4f}->{after:.4f}")
    print(f"  loss per fixed mask, init->final: {', '.join(pairs)}")

def check_file(path, tensors, meta):
    back = load_file(path)
    assert set(back) == set(tensors), "names differ on read-back"
    for k, t in tensors.items():
        assert back[k].dtype == torch.float32 and back[k].shape == t.shape and torch.equal(back[k], t), k
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        assert f.metadata() == meta

# --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "Tests", "TrainingTests", "Fixtures"))
    ap.add_argument("--models", nargs="*", default=list(SPECS))
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)

    for name in args.models:
        spec, tensors, meta, inputs = make_reference(name)
        path = os.path.normpath(os.path.join(args.out, f"reference_{name}.safetensors"))
        save(tensors, path, meta)
        losses = tensors["losses"].tolist()
        print(f"{name}: {len(tensors)} tensors, {os.path.getsize(path):,} bytes -> {path}")
        print(f"  losses {', '.join(f'{l:.6f}' for l in losses)} (data loss at step 0 "
              f"{tensors['loss_data'].item():.6f})")
        if not args.no_check:
            check_file(path, tensors, meta)
            print("  read-back: names, shapes, values and metadata ok")
            check_descent(name, spec, tensors, inputs)
            check_gradients(name)
            check_against_library(name, spec, tensors, inputs)
    return 0

if __name__ == "__main__":
    sys.exit(main())
