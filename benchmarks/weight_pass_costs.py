"""The time a binarization rule adds to every training step, per kernel.

A float dense layer's training step reads its kernel in the forward
product, and the optimizer reads the gradient the backward product writes.
Binarizing the kernel adds work over the kernel that does not depend on
the batch size:

* forward: the scale ``alpha`` per output channel (``mean_abs``: one
  reduction; ``mean_abs_dev`` and ``std``: two, the mean first), the
  statistics of the surrogate (the scaled sigmoid's width), and ``sign(w)``
  written for the product;
* backward: the surrogate's derivative at ``w`` times the incoming
  gradient (the STE: a multiply; clipped STE and ApproxSign: a compare;
  the sigmoid family: an ``exp``), written as the kernel's gradient.

This script times that work alone for each rule on kernels of the BNN
MLP's shapes: ``forward`` is the jitted
``Binarizer(surrogate, scale, axis=-1).signs_and_scale(w)``, ``total``
the same with the vjp of the signs for a fixed cotangent, as the layer
runs them in a training step. ``copy`` (``w + g``: one array read twice,
one written) is the memory unit. Every time has the cost of dispatching
a jitted call subtracted (``dispatch_us``, the median of ``a + 1`` on a
4096-element array, which costs nothing but its dispatch).

One JSON line per shape and rule, then one per rule for the whole MLP
(``added_ms_per_step``: the sum over its kernels). With ``--float-step``
the float MLP's training step is timed too, and ``floor_ratio`` is
``(float step + added) / float step``: the ratio to float that the
binarized step cannot go under while these passes cost what they cost
here (XLA runs each as its own loop in the step; see
``benchmarks/README.md``).

Pin to one core for stable numbers: ``taskset -c 1 python
benchmarks/weight_pass_costs.py --float-step``.

Usage:
  python benchmarks/weight_pass_costs.py [--hidden 1024,1024,1024]
      [--surrogates ...] [--scales none,mean_abs,mean_abs_dev]
      [--calls 200] [--rounds 4] [--float-step] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time
from collections.abc import Sequence

import _env
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bnnjax
from bnnjax import train as train_lib
from bnnjax.models import linen as models

SURROGATES = bnnjax.DETERMINISTIC_SURROGATE_NAMES
SCALES = ("none", "mean_abs", "mean_abs_dev", "std")


def _kernel_shapes(hidden: Sequence[int], inputs: int, classes: int):
    widths = [inputs, *hidden, classes]
    return list(itertools.pairwise(widths))


def _rule_functions(surrogate: str, scale: str):
    """(forward, forward and backward) jitted functions of ``(w, g)``."""
    binarizer = bnnjax.Binarizer(surrogate=surrogate, scale=scale, axis=-1)

    # EDE anneals with training progress; the others ignore it.
    factors = functools.partial(
        binarizer.signs_and_scale, progress=jnp.float32(0.5)
    )

    def forward(w, g):
        del g
        return factors(w)

    def total(w, g):
        signs, vjp, alpha = jax.vjp(factors, w, has_aux=True)
        cotangent = g if alpha is None else g * alpha
        (grad,) = vjp(cotangent)
        return signs, alpha, grad

    return jax.jit(forward), jax.jit(total)


def _interleaved(fns: dict, args, calls: int, rounds: int) -> dict:
    """Median µs per function, timed in interleaved rounds."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {k: [] for k in fns}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        keys = list(fns)
        keys = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in keys:
            for _ in range(per_round):
                start = time.perf_counter()
                jax.block_until_ready(fns[k](*args))
                times[k].append((time.perf_counter() - start) * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def _float_step_ms(hidden, batch_size: int, calls: int) -> float:
    """Median ms of the float MLP's training step (``bnnjax`` ``float``)."""
    kernel = bnnjax.presets.get_preset("float").kernel_binarizer
    model = models.BinaryMLP(
        hidden=tuple(hidden),
        binary_activations=False,
        kernel_binarizer=kernel,
    )
    tx = optax.adam(1e-3)
    sample = np.zeros((1, 28, 28), np.float32)
    state = train_lib.init_state(model, tx, [0], sample)
    step = train_lib.make_train_step(model, tx)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (1, batch_size, 28, 28)), "uint8")
    labels = jnp.asarray(rng.integers(0, 10, (1, batch_size)), "int32")
    progress = np.float32(0.5)
    times = []
    for i in range(calls + 5):
        start = time.perf_counter()
        state, metrics = step(state, images, labels, progress)
        jax.block_until_ready(metrics)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hidden",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1024, 1024, 1024],
        help="hidden widths of the MLP (default: %(default)s)",
    )
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--surrogates",
        type=lambda s: s.split(","),
        default=list(SURROGATES),
        help="surrogates timed (default: every deterministic one)",
    )
    parser.add_argument(
        "--scales",
        type=lambda s: s.split(","),
        default=["none", "mean_abs", "mean_abs_dev"],
        help="kernel scales timed (default: %(default)s)",
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--float-step",
        action="store_true",
        help="also time the float MLP's training step and report the floor",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    for name in args.surrogates:
        if name not in SURROGATES:
            parser.error(f"--surrogates: {name!r} not in {list(SURROGATES)}")
    for name in args.scales:
        if name not in SCALES:
            parser.error(f"--scales: {name!r} not in {list(SCALES)}")

    env = _env.environment()
    load_start = _env.load()
    # Above 1000 elements a jitted CPU call goes through the thread pool,
    # as every timed call here does; below that it would be cheaper.
    tiny = jnp.zeros((4096,), jnp.float32)
    dispatch_us = _interleaved(
        {"dispatch": jax.jit(lambda a: a + 1)}, (tiny,), args.calls, 1
    )["dispatch"]
    rules = [(s, c) for s in args.surrogates for c in args.scales]
    added_us = dict.fromkeys(rules, 0.0)
    shapes = _kernel_shapes(args.hidden, args.inputs, args.classes)
    for shape in shapes:
        keys = jax.random.split(jax.random.key(0), 2)
        w = jax.random.normal(keys[0], shape) / np.sqrt(shape[0])
        g = jax.random.normal(keys[1], shape)
        fns = {"copy": jax.jit(lambda w, g: w + g)}
        for rule in rules:
            fns[(*rule, "forward")], fns[(*rule, "total")] = _rule_functions(
                *rule
            )
        us = _interleaved(fns, (w, g), args.calls, args.rounds)
        copy_us = max(us["copy"] - dispatch_us, 0.0)
        per_million = 1e6 / (shape[0] * shape[1])
        for rule in rules:
            forward = max(us[(*rule, "forward")] - dispatch_us, 0.0)
            total = max(us[(*rule, "total")] - dispatch_us, 0.0)
            added_us[rule] += total
            print(
                json.dumps(
                    {
                        "benchmark": "weight_pass",
                        "surrogate": rule[0],
                        "scale": rule[1],
                        "shape": list(shape),
                        "forward_us": round(forward, 2),
                        "backward_us": round(total - forward, 2),
                        "total_us": round(total, 2),
                        "total_us_per_million_weights": round(
                            total * per_million, 2
                        ),
                        "total_in_copies": round(total / copy_us, 3)
                        if copy_us
                        else None,
                        "copy_us": round(copy_us, 2),
                        "dispatch_us": round(dispatch_us, 2),
                        "calls": args.calls,
                        "loadavg_start": load_start,
                        "loadavg_end": _env.load(),
                        **env,
                    }
                ),
                flush=True,
            )
    float_ms = (
        _float_step_ms(args.hidden, args.batch_size, args.calls)
        if args.float_step
        else None
    )
    weights = sum(a * b for a, b in shapes)
    for rule in rules:
        added_ms = added_us[rule] / 1e3
        line = {
            "benchmark": "weight_pass_mlp",
            "surrogate": rule[0],
            "scale": rule[1],
            "hidden": args.hidden,
            "weights": weights,
            "added_ms_per_step": round(added_ms, 4),
        }
        if float_ms is not None:
            line |= {
                "batch_size": args.batch_size,
                "float_step_ms": round(float_ms, 4),
                "floor_ratio": round((float_ms + added_ms) / float_ms, 4),
            }
        print(
            json.dumps({**line, "loadavg_end": _env.load(), **env}), flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
