"""Forward+backward time of single binary dense layers against float ones.

For each layer shape of the BNN MLP (784x1024, 1024x1024, 1024x10 by
default, batch 100) and each surrogate, times the jitted value and
gradient (with respect to the inputs and the latent kernel) of
``sum(g * layer(x))`` (``g`` a fixed random cotangent) for:

* ``float``: ``x @ W``;
* ``binary_weights``: ``bnnjax.nn.linen.BinaryDense`` with
  ``Binarizer(surrogate=S, scale=--scale, axis=-1)`` and real inputs;
* ``binary_all``: the same with ``sign`` inputs
  (``Binarizer(surrogate=S, scale=None)``).

Variants are interleaved in rounds; each call is timed on its own (wall
clock and process CPU time). ``ratio_to_float`` compares medians with the
float layer of the same shape in the same run. One JSON line per
measurement, with device, versions and ``os.getloadavg()``.

Usage:
  python benchmarks/layer_timings.py [--shapes 784x1024,1024x1024,1024x10]
      [--batch-size 100] [--calls 200] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import _env
import jax
import jax.numpy as jnp
import numpy as np

import bnnjax
from bnnjax.nn import linen as bnn

SURROGATES = bnnjax.DETERMINISTIC_SURROGATE_NAMES


def _make(kind: str, surrogate: str, scale: str, shape, batch: int):
    """(jitted value-and-grad function, its arguments)."""
    n_in, n_out = shape
    key_x, key_w, key_g = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (batch, n_in))
    w = jax.random.normal(key_w, shape) * (1.0 / np.sqrt(n_in))
    g = jax.random.normal(key_g, (batch, n_out))
    if kind == "float":

        def layer(w, x):
            return x @ w

    else:
        module = bnn.BinaryDense(
            n_out,
            use_bias=False,
            kernel_binarizer=bnnjax.Binarizer(
                surrogate=surrogate, scale=scale, axis=-1
            ),
            input_binarizer=(
                bnnjax.Binarizer(surrogate=surrogate, scale=None)
                if kind == "binary_all"
                else None
            ),
        )

        def layer(w, x):
            return module.apply(
                {"params": {"latent_kernel": w}}, x, progress=0.5
            )

    fn = jax.jit(
        jax.value_and_grad(
            lambda w, x: jnp.sum(g * layer(w, x)), argnums=(0, 1)
        )
    )
    return fn, (w, x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        type=lambda s: [
            tuple(int(d) for d in v.split("x")) for v in s.split(",")
        ],
        default=[(784, 1024), (1024, 1024), (1024, 10)],
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--calls", type=int, default=200, help="timed calls per variant"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--scale", default="mean_abs_dev")
    parser.add_argument(
        "--surrogates",
        type=lambda s: s.split(","),
        default=list(SURROGATES),
    )
    args = parser.parse_args(argv)
    env = _env.environment()
    load_start = _env.load()
    for shape in args.shapes:
        variants = {}
        variants[("float", "none")] = _make(
            "float", "", args.scale, shape, args.batch_size
        )
        for kind in ("binary_weights", "binary_all"):
            for s in args.surrogates:
                variants[(kind, s)] = _make(
                    kind, s, args.scale, shape, args.batch_size
                )
        times = {k: ([], []) for k in variants}
        for fn, fargs in variants.values():
            jax.block_until_ready(fn(*fargs))
        per_round = max(1, args.calls // args.rounds)
        for r in range(args.rounds):
            keys = list(variants)
            keys = keys[r % len(keys) :] + keys[: r % len(keys)]
            for k in keys:
                fn, fargs = variants[k]
                for _ in range(per_round):
                    cpu = time.process_time()
                    start = time.perf_counter()
                    jax.block_until_ready(fn(*fargs))
                    times[k][0].append((time.perf_counter() - start) * 1e3)
                    times[k][1].append((time.process_time() - cpu) * 1e3)
        float_ms = statistics.median(times[("float", "none")][0])
        float_cpu = statistics.median(times[("float", "none")][1])
        for (kind, s), (wall, cpu) in times.items():
            ms, cpu_ms = statistics.median(wall), statistics.median(cpu)
            print(
                json.dumps(
                    {
                        "benchmark": "layer_value_and_grad",
                        "shape": list(shape),
                        "batch_size": args.batch_size,
                        "variant": kind,
                        "surrogate": s,
                        "scale": None if kind == "float" else args.scale,
                        "ms_median": round(ms, 4),
                        "cpu_ms_median": round(cpu_ms, 4),
                        "ratio_to_float": round(ms / float_ms, 4),
                        "cpu_ratio_to_float": round(cpu_ms / float_cpu, 4),
                        "calls": len(wall),
                        "loadavg_start": load_start,
                        "loadavg_end": _env.load(),
                        **env,
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
