"""Packed 1-bit inference against float32: single layers and whole MLPs.

Single ``n x n`` layers, each timed against the float32 layer ``x @ W`` in
the same run, interleaved (every round times every variant once, so a
change in machine load hits them alike; ``speedup = float32_ms /
variant_ms`` per round, reported as the median and range over rounds):

* ``xnor``: fully binary (``+-1`` inputs and weights), XNOR-popcount on
  packed ``uint32`` words (:func:`bnnjax.packed.xnor_dense`: a loop over
  words with the kernel word-major), inputs already packed, exact integer
  outputs (checked against the float dot once per shape);
* ``xnor_from_bits``: the same from boolean activations, packing them
  inside the jitted call (what a layer of a packed model does);
* ``xnor_fused_reduction``: the previous layout, kept here for comparison
  in the same run: kernel ``(out, words)`` and one fused xor-popcount
  reduction over chunks of at most 32 rows of 8-word lanes;
* ``binary_weight_lookup`` / ``binary_weight_unpack`` /
  ``binary_weight_auto``: real inputs times a packed binary kernel
  (:func:`bnnjax.packed.binary_weight_dense`), ``(x @ S) * alpha``.

``weight_bytes`` is the size of the weight arrays each call reads. A
``dispatch`` line measures the fixed cost of a jitted call: XLA's CPU
client runs a computation of fewer than 1000 flops inline on the calling
thread and dispatches larger ones to its thread pool, which on one pinned
core costs a thread hand-off per call (``--sync-dispatch`` sets
``jax_cpu_enable_async_dispatch=False`` for the whole process to show
what that hand-off costs; it is off by default).

Then whole MLPs (:class:`bnnjax.models.linen.BinaryMLP`, random weights and
batch-norm statistics): by default the ``bnnjax train`` model
(784-512-512-10, binary weights, real activations, batch norm) and the
same widths fully binary (sign activations): jitted
``model.apply(..., train=False)`` against :func:`bnnjax.export.predict`
on the exported file (its time includes ``predict``'s Python overhead),
with the argmax agreement, the largest logit difference and the file
size.

Every line is JSON with the device, versions, CPU affinity and load
average; ratios are only meaningful within one run. Pin to one core for
stable numbers: ``taskset -c 1 python benchmarks/packed_inference.py``.

Usage:
  python benchmarks/packed_inference.py [--sizes 1024,2048,4096,8192]
      [--batches 1,64] [--bw-batches 1,64,256] [--mlp-batches 1,256]
      [--mlp-hidden 512,512] [--rounds 5] [--repeats 20] [--sync-dispatch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import _env
import jax


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--bw-batches", default="1,64,256")
    parser.add_argument("--mlp-batches", default="1,256")
    parser.add_argument(
        "--mlp-hidden",
        default="512,512",
        help="hidden widths of the MLPs (default: the bnnjax train model)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed calls per round"
    )
    parser.add_argument(
        "--sync-dispatch",
        action="store_true",
        help="jax_cpu_enable_async_dispatch=False (process-wide)",
    )
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-mlp", action="store_true")
    return parser.parse_args(argv)


def _environment(sync_dispatch: bool) -> dict:
    return {**_env.environment(), "async_dispatch": not sync_dispatch}


def _line(**fields) -> dict:
    for k, v in fields.items():
        if isinstance(v, float):
            fields[k] = round(v, 4)
    fields["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(fields), flush=True)
    return fields


def _call_ms(fn, args, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls (at least 3 for slow ones)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    repeats = max(3, min(repeats, int(1.0 / max(first, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved(variants: dict, rounds: int, repeats: int) -> dict:
    """``name -> (median ms, [per-round speedups vs "float32"])``.

    ``variants`` maps names (one of them ``"float32"``) to ``(fn, args)``;
    every round times each once (``repeats`` calls, median), in order.
    """
    for fn, args in variants.values():  # compile and warm up
        jax.block_until_ready(fn(*args))
        jax.block_until_ready(fn(*args))
    per_round = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fn, args) in variants.items():
            per_round[name].append(_call_ms(fn, args, repeats))
    base = per_round["float32"]
    return {
        name: (
            statistics.median(ms),
            [b / m for b, m in zip(base, ms, strict=True)],
        )
        for name, ms in per_round.items()
    }


def bench_dispatch(rounds, repeats, env) -> None:
    """Fixed cost of a jitted call, below and above 1000 flops."""
    import jax.numpy as jnp

    fn = jax.jit(lambda a: a + 1)
    variants = {
        "float32": (fn, (jnp.zeros((1, 32), jnp.uint32),)),
        "above_1000_flops": (fn, (jnp.zeros((1, 2048), jnp.uint32),)),
    }
    for name, (ms, _) in interleaved(variants, rounds, repeats).items():
        _line(
            benchmark="dispatch",
            variant="inline_32_elements" if name == "float32" else name,
            us_median=ms * 1e3,
            **env,
        )


def _xnor_fused_reduction(a, k, n):
    """The previous XNOR layout: one fused reduction over 8-word lanes."""
    import jax.numpy as jnp
    from jax import lax

    def ceil_div(a, b):
        return -(-a // b)

    lanes = ceil_div(k.shape[-1], 8)  # 8-word (256-bit) lanes
    groups = ceil_div(lanes, 32)  # chunks of at most 32 lanes
    chunk = ceil_div(lanes, groups)
    width, lanes = groups * chunk * 8, 8
    words = k.shape[-1]
    a = jnp.pad(a, ((0, 0), (0, width - a.shape[-1])))
    k = jnp.pad(k, ((0, 0), (0, width - words)))
    x = a.reshape(a.shape[0], 1, groups, chunk, lanes) ^ k.reshape(
        1, k.shape[0], groups, chunk, lanes
    )
    counts = lax.population_count(x).astype(jnp.int32)
    counts = jnp.sum(jnp.sum(jnp.sum(counts, axis=3), axis=2), axis=-1)
    return n - 2 * counts


def bench_layers(sizes, batches, bw_batches, rounds, repeats, env) -> None:
    import jax.numpy as jnp
    import numpy as np

    from bnnjax import packed

    rng = np.random.default_rng(0)
    for n in sizes:
        w = rng.normal(size=(n, n)).astype(np.float32)
        alpha = np.abs(w).mean(0).astype(np.float32)
        signs = np.where(w >= 0, 1, -1).astype(np.float32)
        w_float = jnp.asarray(alpha * signs)
        words = packed.pack_kernel(w).words
        k_xnor = packed.prepare_xnor_kernel(words)
        k_real = packed.prepare_binary_weights(words, n)
        alpha = jnp.asarray(alpha)
        del w
        float_fn = jax.jit(lambda x, w: x @ w)
        xnor_fn = jax.jit(lambda a, k, n=n: packed.xnor_dense(a, k, n))
        bits_fn = jax.jit(
            lambda b, k, n=n: packed.xnor_dense(packed.pack_bits(b), k, n)
        )
        fused_fn = jax.jit(lambda a, k, n=n: _xnor_fused_reduction(a, k, n))
        for batch in sorted(set(batches) | set(bw_batches)):
            x = jnp.asarray(rng.normal(size=(batch, n)).astype(np.float32))
            variants = {"float32": (float_fn, (x, w_float))}
            nbytes = {"float32": w_float.nbytes}
            if batch in batches:
                bits = x >= 0
                a = packed.pack_bits(bits)
                got = np.asarray(xnor_fn(a, k_xnor))
                want = np.where(np.asarray(bits), 1.0, -1.0) @ signs
                if not np.array_equal(got, want.astype(np.int32)):
                    raise AssertionError(f"xnor_dense mismatch at n={n}")
                if not np.array_equal(np.asarray(fused_fn(a, words)), got):
                    raise AssertionError(f"fused reduction mismatch at {n}")
                variants["xnor"] = (xnor_fn, (a, k_xnor))
                variants["xnor_from_bits"] = (bits_fn, (bits, k_xnor))
                variants["xnor_fused_reduction"] = (fused_fn, (a, words))
                for name in ("xnor", "xnor_from_bits", "xnor_fused_reduction"):
                    nbytes[name] = k_xnor.nbytes
            if batch in bw_batches:
                want = np.asarray(x) @ np.asarray(w_float)
                scale = np.abs(want).max()
                for method in ("lookup", "unpack", "auto"):
                    if method == "lookup" and batch > 8:
                        continue  # linear in the batch: 0.01-0.03x at 64
                    fn = jax.jit(
                        lambda x, k, a, m=method: packed.binary_weight_dense(
                            x, k, a, method=m
                        )
                    )
                    err = np.abs(np.asarray(fn(x, k_real, alpha)) - want).max()
                    if err > 1e-5 * scale:
                        raise AssertionError(f"{method} mismatch at n={n}")
                    name = f"binary_weight_{method}"
                    variants[name] = (fn, (x, k_real, alpha))
                    lookup = method == "lookup" or (
                        method == "auto" and batch <= 2 and n <= 4096
                    )
                    table = k_real.bytes_t if lookup else k_real.words_t
                    nbytes[name] = table.nbytes
            results = interleaved(variants, rounds, repeats)
            for name, (ms, speedups) in results.items():
                _line(
                    benchmark="packed_layer",
                    n=n,
                    batch=batch,
                    variant=name,
                    ms_median=ms,
                    speedup=statistics.median(speedups),
                    speedup_min=min(speedups),
                    speedup_max=max(speedups),
                    weight_bytes=int(nbytes[name]),
                    rounds=rounds,
                    **env,
                )


def _random_variables(model, x, seed=0):
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util

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


def bench_mlp(hidden, batches, rounds, repeats, env) -> None:
    import numpy as np

    import bnnjax
    from bnnjax import export

    for binary_activations in (False, True):
        config = bnnjax.TrainConfig(
            hidden=hidden, binary_activations=binary_activations
        )
        model = config.make_model(10)
        x0 = jax.numpy.zeros((1, 28, 28, 1))
        variables = _random_variables(model, x0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "mlp.bnnjax")
            sizes = export.export_model(model, variables, path)
            packed_model = export.load(path)
        float_fn = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
        for batch in batches:
            x = jax.random.uniform(jax.random.key(batch), (batch, 28, 28, 1))
            want = np.asarray(float_fn(variables, x))
            got = np.asarray(export.predict(packed_model, x))
            results = interleaved(
                {
                    "float32": (float_fn, (variables, x)),
                    "packed": (
                        lambda x, p=packed_model: export.predict(p, x),
                        (x,),
                    ),
                },
                rounds,
                repeats,
            )
            speedups = results["packed"][1]
            _line(
                benchmark="packed_mlp",
                hidden=list(hidden),
                binary_activations=binary_activations,
                train_default=config.hidden == bnnjax.train.DEFAULT_HIDDEN
                and not binary_activations,
                batch=batch,
                float32_ms_median=results["float32"][0],
                packed_ms_median=results["packed"][0],
                speedup=statistics.median(speedups),
                speedup_min=min(speedups),
                speedup_max=max(speedups),
                argmax_agreement=float(
                    np.mean(got.argmax(-1) == want.argmax(-1))
                ),
                max_abs_logit_difference=float(np.abs(got - want).max()),
                file_bytes=sizes.file_bytes,
                float32_bytes=sizes.float32_bytes,
                compression_ratio=sizes.compression_ratio,
                rounds=rounds,
                **env,
            )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    args = _parse(argv)
    if args.sync_dispatch:  # before the CPU client starts
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    env = _environment(args.sync_dispatch)
    bench_dispatch(args.rounds, max(args.repeats, 50), env)
    if not args.skip_layers:
        bench_layers(
            _ints(args.sizes),
            _ints(args.batches),
            _ints(args.bw_batches),
            args.rounds,
            args.repeats,
            env,
        )
    if not args.skip_mlp:
        bench_mlp(
            tuple(_ints(args.mlp_hidden)),
            _ints(args.mlp_batches),
            args.rounds,
            args.repeats,
            env,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
