"""Operand dtypes for the dense product of signs: float32, bfloat16, int8.

A fully binary dense layer multiplies ``+-1`` inputs by ``+-1`` kernel
signs; the sums are integers, so float32, bfloat16 operands summed in
float32 and int8 operands summed in int32 give the same values bit for
bit. This script times :func:`bnnjax.nn.functional.binary_dense` (sign
with the clipped STE on inputs and kernel, no scale: BinaryNet's rule)
with each operand dtype, for a grid of row counts and layer shapes, and
prints one JSON line per (shape, rows, pass, dtype) with the median time
and its ratio to float32 in the same run:

* ``float32``: ``sign_product_dtype=None``;
* ``bfloat16``: ``sign_product_dtype=jnp.bfloat16``;
* ``int8``: int8 operands with int32 sums (``_int8_sign_product``
  below, put in place of the layer's bfloat16 product): the forward
  product exact on int8 copies, NaN restored in the rows and columns a
  NaN sign reaches (an int8 cast turns NaN into 0), the inputs kept as
  int8 for the kernel gradient. This is the formulation the patches
  convolutions use under ``"auto"`` on CPU; for dense layers it is
  measured here and not used by the layers (no faster than bfloat16 in
  whole training steps, see the benchmarks page).

Passes: ``train`` (jitted value and gradient of ``sum(g * layer(x, W))``
with respect to ``x`` and the latent ``W``: the forward product, both
backward products and the binarizers' passes, as in a training step) and
``forward`` (the layer alone). Variants are interleaved in rounds; each
call is timed on its own. ``--xnor`` adds, for the forward pass, the
XNOR-popcount product of packed bits (:func:`bnnjax.packed.xnor_dense`,
packing the inputs and the kernel inside the call, as a training step
would have to).

``--mlp-hidden 1024,1024,1024`` then times whole training steps
(:func:`bnnjax.train.make_train_step`: batch norm, softmax cross-entropy,
Adam) of :class:`bnnjax.models.linen.BinaryMLP` with binary weights and
activations (the same rule) at ``--mlp-batch`` with each operand dtype,
and the float network's step (the ``float`` preset), interleaved over
``--mlp-rounds`` rounds of ``--mlp-steps`` steps on MNIST sample digits
already on the device: ``dense_sign_products_step`` lines with the median
step and its speed against the float step and the float32-product step.

Usage:
  python benchmarks/dense_sign_products.py [--rows 1,8,64,100,256]
      [--shapes 1024x1024,1024x10] [--calls 100] [--rounds 4] [--xnor]
      [--mlp-hidden 1024,1024,1024 --mlp-batch 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import _env
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bnnjax
from bnnjax import data as data_lib
from bnnjax import packed
from bnnjax import train as train_lib
from bnnjax.models import linen as models
from bnnjax.nn import _precision, functional

SIGN = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
DTYPES = ("float32", "bfloat16", "int8")


def _int8_sign_product(
    product: Callable[..., jax.Array],
    x: jax.Array,
    kernel: jax.Array,
    operand_dtype: Any,
) -> jax.Array:
    """``_precision.sign_product`` on int8 operands with int32 sums where
    the layer's product is exact in low precision (``operand_dtype`` set:
    signed inputs); other products (real inputs) stay as they are."""
    if operand_dtype is None:
        return product(x, kernel)

    def forward(a, b):
        # +-1 stays +-1; NaN becomes 0, which no sign takes.
        signs, kernel_signs = a.astype(jnp.int8), b.astype(jnp.int8)
        y = product(signs, kernel_signs, preferred_element_type=jnp.int32)
        nan_rows = jnp.any(signs == 0, axis=-1, keepdims=True)
        nan_columns = jnp.any(kernel_signs == 0, axis=0)
        nan = nan_rows | jnp.reshape(
            nan_columns, (1,) * (y.ndim - 1) + nan_columns.shape
        )
        return jnp.where(nan, jnp.nan, y.astype(a.dtype)), (signs, b)

    @jax.custom_vjp
    def exact(a, b):
        return forward(a, b)[0]

    def backward(residuals, g):
        signs, b = residuals
        return jax.vjp(product, signs.astype(x.dtype), b)[1](g)

    exact.defvjp(forward, backward)
    return exact(x, kernel)


def _layer(dtype: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    # int8 replaces the layer's (exact) bfloat16 product when compiled.
    requested = {
        "float32": None,
        "bfloat16": jnp.bfloat16,
        "int8": jnp.bfloat16,
    }

    def layer(w: jax.Array, x: jax.Array) -> jax.Array:
        return functional.binary_dense(
            x,
            w,
            kernel_binarizer=SIGN,
            input_binarizer=SIGN,
            sign_product_dtype=requested[dtype],
        )

    return layer


def _xnor_forward(w: jax.Array, x: jax.Array) -> jax.Array:
    """The forward product from packed bits, packing both operands."""
    a_words = packed.pack_bits(x >= 0)
    kernel = packed.prepare_xnor_kernel(packed.pack_kernel(w).words)
    return packed.xnor_dense(a_words, kernel, x.shape[-1]).astype(jnp.float32)


def _compile(
    fn: Callable[..., Any], args: tuple, int8: bool
) -> Callable[..., Any]:
    """Compiles ``fn`` (with the int8 product for ``int8``); a function
    that is already jitted keeps its own settings (donation)."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    if not int8:
        return jitted.lower(*args).compile()
    with mock.patch.object(_precision, "sign_product", _int8_sign_product):
        return jitted.lower(*args).compile()


def build(
    shape: tuple[int, int], rows: int, passes: Sequence[str], xnor: bool
) -> dict[tuple[str, str], tuple[Callable[..., Any], tuple]]:
    """``(pass, dtype) -> (compiled function, arguments)`` for one case."""
    n_in, n_out = shape
    key_x, key_w, key_g = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (rows, n_in))
    w = jax.random.normal(key_w, shape) * (1.0 / np.sqrt(n_in))
    g = jax.random.normal(key_g, (rows, n_out))
    out: dict[tuple[str, str], tuple[Callable[..., Any], tuple]] = {}
    results = {}
    for dtype in DTYPES:
        layer = _layer(dtype)
        if "train" in passes:

            def train(w, x, layer=layer):
                return jax.value_and_grad(
                    lambda w, x: jnp.sum(g * layer(w, x)), argnums=(0, 1)
                )(w, x)

            fn = _compile(train, (w, x), dtype == "int8")
            out[("train", dtype)] = (fn, (w, x))
            results[("train", dtype)] = fn(w, x)
        if "forward" in passes:
            fn = _compile(layer, (w, x), dtype == "int8")
            out[("forward", dtype)] = (fn, (w, x))
            results[("forward", dtype)] = fn(w, x)
    if xnor and "forward" in passes:
        fn = _compile(_xnor_forward, (w, x), False)
        out[("forward", "xnor")] = (fn, (w, x))
        results[("forward", "xnor")] = fn(w, x)
    for (kind, dtype), value in results.items():  # the same values
        want = results[(kind, "float32")]
        for a, b in zip(
            jax.tree.leaves(value), jax.tree.leaves(want), strict=True
        ):
            if kind == "train" and a.ndim == 0:
                continue  # the loss sums in a fusion-dependent order
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                raise AssertionError(f"{kind} {dtype} differs from float32")
    return out


def measure(
    variants: dict, calls: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
    """Interleaved timings (ms) of every variant."""
    times: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    per_round = max(1, calls // rounds)
    keys = list(variants)
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn, args = variants[k]
            jax.block_until_ready(fn(*args))
            for _ in range(per_round):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[k].append((time.perf_counter() - start) * 1e3)
    return times


def _mlp_steps(args: argparse.Namespace) -> dict[str, list[float]]:
    """Interleaved whole-step timings (ms): float and each dtype."""
    dataset = data_lib.load_dataset("mnist-sample")
    sample = data_lib.to_float(dataset.train_images[:1])
    hidden = tuple(args.mlp_hidden)
    float_rule = bnnjax.presets.get_preset("float").kernel_binarizer
    binary = models.BinaryMLP(
        hidden=hidden,
        binary_activations=True,
        kernel_binarizer=SIGN,
        activation_binarizer=SIGN,
    )
    networks = {
        "float_step": models.BinaryMLP(
            hidden=hidden, binary_activations=False, kernel_binarizer=float_rule
        ),
        "float32": binary.clone(sign_product_dtype=None),
        "bfloat16": binary.clone(sign_product_dtype=jnp.bfloat16),
        "int8": binary.clone(sign_product_dtype=jnp.bfloat16),
    }
    if 4 * args.mlp_batch > len(dataset.train_images):
        raise SystemExit(
            f"--mlp-batch {args.mlp_batch}: the steps cycle through 4 "
            f"batches of the {len(dataset.train_images)} training images of "
            "the embedded MNIST sample; use at most "
            f"{len(dataset.train_images) // 4}."
        )
    batches = []
    for i in range(4):
        rows = slice(i * args.mlp_batch, (i + 1) * args.mlp_batch)
        batches.append(
            (
                jnp.asarray(dataset.train_images[rows][None]),
                jnp.asarray(dataset.train_labels[rows].astype(np.int32)[None]),
            )
        )
    progress = np.float32(0.5)
    steps = {}
    for name, model in networks.items():
        tx = optax.adam(1e-3)
        state = train_lib.init_state(model, tx, [0], sample)
        step = train_lib.make_train_step(model, tx)
        compiled = _compile(
            step, (state, *batches[0], progress), name == "int8"
        )
        operand = {"bfloat16": "bf16[", "int8": "s8["}.get(name)
        if operand and operand not in compiled.as_text():
            raise AssertionError(f"the {name} step has no {operand} operands")
        steps[name] = [compiled, state]
    _check_one_step(steps, batches[0], progress)
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.mlp_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            entry = steps[name]
            for i in range(args.mlp_steps + 2):
                images, labels = batches[i % len(batches)]
                start = time.perf_counter()
                entry[1], metrics = entry[0](entry[1], images, labels, progress)
                jax.block_until_ready(metrics)
                if i >= 2:  # the first steps of a round warm up
                    times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _check_one_step(steps: dict, batch: tuple, progress: Any) -> None:
    """One step of each binary variant from the same state gives the
    float32-product step's parameters (the products are exact; only the
    fusion of the reductions around them may differ, by float rounding)."""
    after = {}
    for name in ("float32", "bfloat16", "int8"):
        # A copy: the compiled step donates (and so deletes) its state.
        state = jax.tree.map(jnp.copy, steps["float32"][1])
        new_state, _ = steps[name][0](state, *batch, progress)
        after[name] = jax.tree.leaves(new_state.params)
    for name in ("bfloat16", "int8"):
        for got, want in zip(after[name], after["float32"], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1, 4, 8, 16, 32, 64, 100, 256, 1024],
    )
    parser.add_argument(
        "--shapes",
        type=lambda s: [
            tuple(int(d) for d in v.split("x")) for v in s.split(",")
        ],
        default=[(1024, 10), (1024, 128), (1024, 1024), (4096, 4096)],
    )
    parser.add_argument(
        "--passes",
        type=lambda s: s.split(","),
        default=["train", "forward"],
    )
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--xnor", action="store_true", help="add the XNOR forward product"
    )
    parser.add_argument(
        "--mlp-hidden",
        type=lambda s: [int(v) for v in s.split(",")],
        default=None,
        help="also time whole BinaryMLP training steps of these widths",
    )
    parser.add_argument("--mlp-batch", type=int, default=100)
    parser.add_argument("--mlp-steps", type=int, default=100)
    parser.add_argument("--mlp-rounds", type=int, default=5)
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    for kind in args.passes:
        if kind not in ("train", "forward"):
            parser.error(f"--passes: {kind!r}; expected train and forward")
    env = _env.environment()
    for shape in args.shapes:
        for rows in args.rows:
            load_start = _env.load()
            variants = build(shape, rows, args.passes, args.xnor)
            times = measure(variants, args.calls, args.rounds)
            for (kind, dtype), wall in times.items():
                ms = statistics.median(wall)
                base = statistics.median(times[(kind, "float32")])
                line = {
                    "benchmark": "dense_sign_products",
                    "shape": list(shape),
                    "rows": rows,
                    "pass": kind,
                    "dtype": dtype,
                    "ms_median": round(ms, 4),
                    "speedup_vs_float32": round(base / ms, 3),
                    "calls": len(wall),
                    # What the layers' default "auto" takes here.
                    "auto_bfloat16": bnnjax.nn.bfloat16_dense_is_faster(
                        rows, shape[1]
                    ),
                    "loadavg_start": load_start,
                    "loadavg_end": _env.load(),
                    **env,
                }
                _emit(line, args.out)
    if args.mlp_hidden:
        load_start = _env.load()
        times = _mlp_steps(args)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, ms in medians.items():
            line = {
                "benchmark": "dense_sign_products_step",
                "hidden": args.mlp_hidden,
                "batch_size": args.mlp_batch,
                "dtype": name,
                "step_ms_median": round(ms, 4),
                "speedup_vs_float_step": round(medians["float_step"] / ms, 3),
                "speedup_vs_float32": round(medians["float32"] / ms, 3),
                "steps": len(times[name]),
                "loadavg_start": load_start,
                "loadavg_end": _env.load(),
                **env,
            }
            _emit(line, args.out)
    return 0


def _emit(line: dict[str, Any], out: str | None) -> None:
    text = json.dumps(line)
    print(text, flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
