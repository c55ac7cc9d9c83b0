"""Cost of binarization in a dense layer's forward + backward pass.

For each surrogate, times the jitted value and gradient of
``sum(g * (x @ binarize(W)))`` with respect to ``x`` and ``W`` (``g`` a fixed
random cotangent, so XLA cannot reduce the products to sums) against the
float layer ``sum(g * (x @ W))`` in the same run, and prints one JSON line
per variant with the ratio. The binarizer
adds elementwise work (sign, scale reductions, the surrogate's derivative),
so the ratio is the price of binarization before any training-loop overhead.

Usage:
  python benchmarks/binarize_overhead.py [--sizes 1024,4096] [--batch 100]
      [--repeats 50] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _env
import jax
import jax.numpy as jnp

import bnnjax

SURROGATES = bnnjax.DETERMINISTIC_SURROGATE_NAMES


def _time(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, after warm-up."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(sizes, batch: int, repeats: int, dtype) -> list[dict]:
    results = []
    env = _env.environment()
    for size in sizes:
        kx, kw, kg = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (batch, size), dtype)
        g = jax.random.normal(kg, (batch, size), dtype)
        w = (0.05 * jax.random.normal(kw, (size, size))).astype(dtype)

        @jax.jit
        def float_step(x, w, g):
            return jax.value_and_grad(
                lambda a, b: jnp.sum(g * (a @ b)), argnums=(0, 1)
            )(x, w)

        float_ms = _time(float_step, x, w, g, repeats=repeats)
        results.append(
            {
                "benchmark": "binarize_overhead",
                "variant": "float",
                "surrogate": None,
                "size": size,
                "batch": batch,
                "dtype": jnp.dtype(dtype).name,
                "step_ms_median": round(float_ms, 4),
                "ratio_to_float": 1.0,
                **env,
            }
        )
        for name in SURROGATES:

            @jax.jit
            def binary_step(x, w, g, name=name):
                def loss(a, b):
                    wb = bnnjax.binarize(b, name, axis=-1, progress=0.5)
                    return jnp.sum(g * (a @ wb))

                return jax.value_and_grad(loss, argnums=(0, 1))(x, w)

            ms = _time(binary_step, x, w, g, repeats=repeats)
            results.append(
                {
                    "benchmark": "binarize_overhead",
                    "variant": "binary_weights",
                    "surrogate": name,
                    "scale": "mean_abs_dev",
                    "size": size,
                    "batch": batch,
                    "dtype": jnp.dtype(dtype).name,
                    "step_ms_median": round(ms, 4),
                    "ratio_to_float": round(ms / float_ms, 4),
                    **env,
                }
            )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16")
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    for row in run(sizes, args.batch, args.repeats, jnp.dtype(args.dtype)):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
