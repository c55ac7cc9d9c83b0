"""Packed 1-bit inference against float32: single layers and the MLP.

Single ``n x n`` layers, each timed against the float32 layer ``x @ W`` in
the same run (``speedup = float32_ms / variant_ms``):

* ``xnor``: fully binary (``+-1`` inputs and weights), XNOR-popcount on
  packed ``uint32`` words (:func:`bnnjax.packed.xnor_dense`), inputs
  already packed, exact integer outputs;
* ``xnor_from_bits``: the same from boolean activations, packing them
  inside the jitted call (what a layer of a packed model does);
* ``binary_weight_lookup`` / ``binary_weight_unpack`` /
  ``binary_weight_auto``: real inputs times a packed binary kernel
  (:func:`bnnjax.packed.binary_weight_dense`).

``weight_bytes`` is the size of the weight arrays each call reads (the
float32 kernel, or the packed words/bytes). Then the BinaryNet MLP
(:class:`bnnjax.models.linen.BinaryMLP`, random weights and batch-norm
statistics) end to end: ``model.apply(..., train=False)`` jitted against
:func:`bnnjax.export.predict` on the packed model, with the file size.

Every line is JSON with the device, versions and thread settings; ratios
are only meaningful within one run (same machine, same load).

Usage:
  python benchmarks/packed_inference.py [--sizes 1024,2048,4096,8192]
      [--batches 1,64] [--bw-batches 1,64,256] [--mlp-batches 1,64,256]
      [--mlp-hidden 1024,1024,1024] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import bnnjax
from bnnjax import export, packed
from bnnjax.models import linen as models


def _time(fn, *args, repeats: int, budget_s: float = 3.0) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, after warm-up.

    At most ``repeats`` timed calls, fewer (at least 5) for slow calls so
    one measurement takes about ``budget_s`` seconds.
    """
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    repeats = max(5, min(repeats, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _environment() -> dict:
    device = jax.devices()[0]
    threads = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
        if k in os.environ
    }
    affinity = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None
    )
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "bnnjax": bnnjax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "thread_env": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _line(**fields) -> dict:
    for k, v in fields.items():
        if isinstance(v, float):
            fields[k] = round(v, 4)
    return fields


def bench_layers(sizes, batches, bw_batches, repeats, env) -> list[dict]:
    results = []
    rng = np.random.default_rng(0)
    for n in sizes:
        w = rng.normal(size=(n, n)).astype(np.float32)
        alpha = np.abs(w).mean(0).astype(np.float32)
        w_float = jnp.asarray(
            alpha * np.where(w >= 0, 1, -1).astype(np.float32)
        )
        words = packed.pack_kernel(w).words
        k_xnor = packed.prepare_xnor_kernel(words)
        k_real = packed.prepare_binary_weights(words, n)
        alpha = jnp.asarray(alpha)
        del w
        float_fn = jax.jit(lambda x, w: x @ w)
        xnor_fn = jax.jit(lambda a, k, n=n: packed.xnor_dense(a, k, n))
        xnor_bits_fn = jax.jit(
            lambda b, k, n=n: packed.xnor_dense(packed.pack_bits(b), k, n)
        )
        for batch in sorted(set(batches) | set(bw_batches)):
            x = jnp.asarray(rng.normal(size=(batch, n)).astype(np.float32))
            float_ms = _time(float_fn, x, w_float, repeats=repeats)
            common = {"benchmark": "packed_layer", "n": n, "batch": batch}
            results.append(
                _line(
                    **common,
                    variant="float32",
                    ms_median=float_ms,
                    weight_bytes=int(w_float.nbytes),
                    speedup=1.0,
                    **env,
                )
            )
            print(json.dumps(results[-1]), flush=True)
            variants = []
            if batch in batches:
                bits = x >= 0
                a = packed.pack_bits(bits)
                # Exactness check once per shape: the float dot of +-1.
                got = np.asarray(xnor_fn(a, k_xnor))
                want = np.asarray(
                    jnp.where(bits, 1.0, -1.0) @ jnp.sign(w_float)
                )
                if not np.array_equal(got, want.astype(np.int32)):
                    raise AssertionError(f"xnor_dense mismatch at n={n}")
                variants += [
                    ("xnor", xnor_fn, (a, k_xnor), k_xnor.nbytes),
                    (
                        "xnor_from_bits",
                        xnor_bits_fn,
                        (bits, k_xnor),
                        k_xnor.nbytes,
                    ),
                ]
            if batch in bw_batches:
                for method in ("lookup", "unpack", "auto"):
                    fn = jax.jit(
                        lambda x, k, a, m=method: packed.binary_weight_dense(
                            x, k, a, method=m
                        )
                    )
                    lookup = method == "lookup" or (
                        method == "auto" and batch <= 2 and n <= 4096
                    )
                    nbytes = (
                        k_real.bytes_t.nbytes
                        if lookup
                        else k_real.words_t.nbytes
                    )
                    if method == "lookup" and batch > 8:
                        continue  # linear in the batch: 0.01-0.03x at 64
                    variants.append(
                        (
                            f"binary_weight_{method}",
                            fn,
                            (x, k_real, alpha),
                            nbytes,
                        )
                    )
            for name, fn, args, nbytes in variants:
                ms = _time(fn, *args, repeats=repeats)
                results.append(
                    _line(
                        **common,
                        variant=name,
                        ms_median=ms,
                        weight_bytes=int(nbytes),
                        speedup=float_ms / ms,
                        **env,
                    )
                )
                print(json.dumps(results[-1]), flush=True)
    return results


def _random_variables(model, x, seed=0):
    shapes = jax.eval_shape(
        lambda k: model.init(k, x, train=False), jax.random.key(0)
    )
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1] == "var":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif path[-1] == "mean":
            value = 0.1 * rng.normal(size=leaf.shape)
        elif path[-1] == "scale":
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            value = 0.05 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    flat = traverse_util.flatten_dict(shapes)
    return traverse_util.unflatten_dict(
        {k: fill(k, v) for k, v in flat.items()}
    )


def bench_mlp(hidden, batches, repeats, env) -> list[dict]:
    results = []
    for binary_activations in (True, False):
        model = models.BinaryMLP(
            hidden=hidden, binary_activations=binary_activations
        )
        x0 = jnp.zeros((1, 28, 28, 1))
        variables = _random_variables(model, x0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "mlp.bnn")
            sizes = export.export_model(model, variables, path)
            packed_model = export.load(path)
        float_fn = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
        for batch in batches:
            x = jax.random.uniform(jax.random.key(batch), (batch, 28, 28, 1))
            want = float_fn(variables, x)
            got = export.predict(packed_model, x)
            agree = float(np.mean(np.argmax(got, -1) == np.argmax(want, -1)))
            float_ms = _time(float_fn, variables, x, repeats=repeats)
            packed_ms = _time(
                lambda x, p=packed_model: export.predict(p, x),
                x,
                repeats=repeats,
            )
            results.append(
                _line(
                    benchmark="packed_mlp",
                    hidden=list(hidden),
                    binary_activations=binary_activations,
                    batch=batch,
                    float32_ms_median=float_ms,
                    packed_ms_median=packed_ms,
                    speedup=float_ms / packed_ms,
                    argmax_agreement=agree,
                    file_bytes=sizes.file_bytes,
                    float32_bytes=sizes.float32_bytes,
                    compression_ratio=sizes.compression_ratio,
                    **env,
                )
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--bw-batches", default="1,64,256")
    parser.add_argument("--mlp-batches", default="1,64,256")
    parser.add_argument("--mlp-hidden", default="1024,1024,1024")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--skip-layers", action="store_true", help="only the MLP"
    )
    args = parser.parse_args(argv)
    env = _environment()
    if not args.skip_layers:
        bench_layers(
            _ints(args.sizes),
            _ints(args.batches),
            _ints(args.bw_batches),
            args.repeats,
            env,
        )
    bench_mlp(
        tuple(_ints(args.mlp_hidden)),
        _ints(args.mlp_batches),
        args.repeats,
        env,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
