"""Exact formulations of the conv path's convolutions and pools, timed.

For each convolution shape, the value and gradient (inputs and latent
kernel) of :func:`bnnjax.nn.functional.binary_conv` with ``+-1`` inputs
(clipped-STE sign on inputs and kernel), once with ``conv_impl="xla"``
(``lax.conv_general_dilated``) and once with ``conv_impl="patches"``
(shifted slices concatenated along channels, one matrix product); and
for each pool shape, the gradient of ``flax.linen.max_pool`` against
:func:`bnnjax.nn.functional.max_pool`. Each line checks that the two
formulations agree bit for bit (values and gradients) and gives both
median times (the variants interleaved in 5 rounds), their ratio
(``speedup``: xla time over the other) and the choice
``conv_impl="auto"`` makes for that shape, so the rule behind ``"auto"``
can be checked against the numbers of this machine. Each conv
line also times the layer with its defaults (``conv_impl="auto"`` and
``sign_product_dtype="auto"``: int8 sign products in the patches
formulation on CPU from 5 input features; ``default_ms``) and, where the
inputs are binarized, as patches with int8 sign products whatever its
input features (``patches_int8_ms``), the measurement behind that
threshold.

``--peer-python PYTHON`` also times every conv shape in plain PyTorch
(``benchmarks/peers/torch_conv_layers.py`` run by that interpreter, in
its own environment: oneDNN's direct convolutions on x86, NCHW and
channels-last) and adds ``torch_nchw_ms``, ``torch_channels_last_ms``
and ``vs_torch`` (PyTorch's faster layout's time over ``default_ms``:
above 1, bnnjax's layer is faster).

Usage:
  python benchmarks/conv_formulations.py [--calls 20] [--only conv]
      [--limit N] [--conv-cases 64x32x3x128x3x1,...]
      [--peer-python /work/peers-venv/bin/python] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from unittest import mock

import _env
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import bnnjax
from bnnjax.nn import _precision
from bnnjax.nn import functional as F

# (batch, spatial size before padding, in, out, kernel, stride): the convs
# of Larq's MNIST tutorial CNN, BinaryNet's CNN at widths 1/4 to 1 on
# 28x28 and 32x32 inputs, the Bi-Real ResNet stages and a few edges.
CONVS = (
    (64, 28, 1, 32, 3, 1),
    (64, 13, 32, 64, 3, 1),
    (64, 5, 64, 64, 3, 1),
    (100, 28, 1, 32, 3, 1),
    (100, 28, 32, 32, 3, 1),
    (100, 14, 32, 64, 3, 1),
    (100, 14, 64, 64, 3, 1),
    (100, 7, 64, 128, 3, 1),
    (100, 7, 128, 128, 3, 1),
    (64, 32, 3, 128, 3, 1),
    (64, 32, 128, 128, 3, 1),
    (64, 16, 256, 256, 3, 1),
    (64, 8, 512, 512, 3, 1),
    (64, 4, 512, 512, 3, 1),
    (64, 32, 16, 16, 3, 1),
    (64, 32, 64, 128, 3, 2),
    (64, 16, 8, 8, 3, 1),
    (64, 8, 4, 8, 3, 1),
)
# (batch, size, channels) of 2x2/2 pools.
POOLS = (
    (64, 26, 32),
    (64, 11, 64),
    (100, 28, 32),
    (100, 14, 64),
    (64, 32, 128),
    (64, 16, 256),
)
STE = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)


def _medians_ms(fns: Sequence[Callable[[], object]], calls: int) -> list[float]:
    """Median milliseconds of each of ``fns``, ``calls`` calls each,
    interleaved in 5 rounds (so a change of load hits every one alike)."""
    for f in fns:
        jax.block_until_ready(f())
    rounds = min(5, calls)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        per_round = calls // rounds + (r < calls % rounds)
        for f, out in zip(fns, times, strict=True):
            for _ in range(per_round):
                t = time.perf_counter()
                jax.block_until_ready(f())
                out.append(time.perf_counter() - t)
    return [statistics.median(t) * 1e3 for t in times]


def _conv_case(case: Sequence[int], calls: int) -> dict:
    batch, size, cin, cout, k, stride = case
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, cin))
    w = jax.random.normal(keys[1], (k, k, cin, cout))
    g = jax.random.normal(keys[2], (batch, *(-(-size // stride),) * 2, cout))

    def step(impl: str, products: str | None = None) -> Callable:
        def loss(x, w):
            y = F.binary_conv(
                x,
                w,
                strides=stride,
                padding="SAME",
                kernel_binarizer=STE,
                input_binarizer=STE if cin > 1 else None,
                sign_product_dtype=products,
                conv_impl=impl,
            )
            return jnp.sum(y * g), y

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    xla, patches = step("xla"), step("patches")
    fns = [xla, patches, step("auto", "auto")]
    if cin > 1:  # binarized inputs: int8 patches whatever the input
        # features (the rule behind "auto" builds them from
        # INT8_PATCHES_MIN_FEATURES on), traced and compiled with the
        # threshold lowered.
        fns.append(step("patches", "auto"))
        with mock.patch.object(_precision, "INT8_PATCHES_MIN_FEATURES", 1):
            jax.block_until_ready(fns[-1](x, w))
    (_, ya), ga = xla(x, w)
    (_, yb), gb = patches(x, w)
    grad_err = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
        for a, b in zip(ga, gb, strict=True)
    )
    xla_ms, patches_ms, default_ms, *rest = _medians_ms(
        [functools.partial(f, x, w) for f in fns], calls
    )
    int8_ms = rest[0] if rest else None
    return {
        "benchmark": "conv",
        "batch": batch,
        "size": size,
        "in_features": cin,
        "features": cout,
        "kernel": k,
        "stride": stride,
        "input_binarized": cin > 1,
        "values_exact": bool(np.array_equal(ya, yb)),
        "grad_max_rel_diff": float(f"{grad_err:.3g}"),
        "xla_ms": round(xla_ms, 3),
        "patches_ms": round(patches_ms, 3),
        "speedup": round(xla_ms / patches_ms, 3),
        "default_ms": round(default_ms, 3),
        "patches_int8_ms": None if int8_ms is None else round(int8_ms, 3),
        "auto": "patches"
        if F.patches_conv_is_faster(
            in_features=cin, features=cout, kernel_size=(k, k)
        )
        else "xla",
    }


def _conv_cases(text: str) -> tuple[tuple[int, ...], ...]:
    """``--conv-cases``: ``BATCHxSIZExINxOUTxKERNELxSTRIDE,...``."""
    cases = []
    for item in text.split(","):
        parts = item.split("x")
        if len(parts) != 6 or not all(
            p.isdigit() and int(p) > 0 for p in parts
        ):
            raise argparse.ArgumentTypeError(
                f"conv case {item!r}: expected BATCHxSIZExINxOUTxKERNELxSTRIDE "
                "of positive integers, e.g. 64x32x3x128x3x1"
            )
        cases.append(tuple(int(p) for p in parts))
    return tuple(cases)


def _torch_lines(
    python: str, cases: Sequence[Sequence[int]], calls: int
) -> dict[str, dict]:
    """PyTorch's timings of ``cases``, by case name, from a subprocess."""
    names = ["x".join(str(v) for v in c) for c in cases]
    script = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "peers",
        "torch_conv_layers.py",
    )
    done = subprocess.run(
        [python, script, "--cases", ",".join(names), "--calls", str(calls)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{script} failed under {python} (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    lines = [json.loads(t) for t in done.stdout.splitlines() if t.strip()]
    return {line["case"]: line for line in lines}


def _with_peer(line: dict, case: Sequence[int], peer: dict | None) -> dict:
    """``line`` with PyTorch's times of the same case, if it has them."""
    if peer is None:
        return line
    name = "x".join(str(v) for v in case)
    torch_line = peer[name]
    fastest = min(torch_line["nchw_ms"], torch_line["channels_last_ms"])
    return {
        **line,
        "torch_nchw_ms": torch_line["nchw_ms"],
        "torch_channels_last_ms": torch_line["channels_last_ms"],
        "torch_version": torch_line["torch"],
        "vs_torch": round(fastest / line["default_ms"], 3),
    }


def _pool_case(case: Sequence[int], calls: int) -> dict:
    batch, size, c = case
    shape = (batch, size, size, c)
    x = jnp.round(2 * jax.random.normal(jax.random.key(1), shape))
    h = size // 2
    g = jax.random.normal(jax.random.key(2), (batch, h, h, c))

    def grad(pool: Callable) -> Callable:
        return jax.jit(
            jax.grad(lambda x: jnp.sum(pool(x, (2, 2), (2, 2), "VALID") * g))
        )

    flax_grad = grad(lambda x, w, s, p: nn.max_pool(x, w, s, p))
    ours = grad(F.max_pool)
    exact = bool(np.array_equal(flax_grad(x), ours(x))) and bool(
        np.array_equal(
            nn.max_pool(x, (2, 2), (2, 2)), F.max_pool(x, (2, 2), (2, 2))
        )
    )
    flax_ms, ours_ms = _medians_ms(
        [functools.partial(flax_grad, x), functools.partial(ours, x)], calls
    )
    return {
        "benchmark": "max_pool",
        "batch": batch,
        "size": size,
        "features": c,
        "window": 2,
        "exact_with_ties": exact,
        "xla_ms": round(flax_ms, 3),
        "reshape_ms": round(ours_ms, 3),
        "speedup": round(flax_ms / ours_ms, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", help="also append the lines to this file")
    parser.add_argument(
        "--only", choices=("conv", "max_pool"), help="one kind of case"
    )
    parser.add_argument(
        "--limit", type=int, help="only the first N cases of each kind"
    )
    parser.add_argument(
        "--conv-cases",
        type=_conv_cases,
        help="convs to time instead of the built-in ones: comma-separated "
        "BATCHxSIZExINxOUTxKERNELxSTRIDE, e.g. 64x32x3x128x3x1",
    )
    parser.add_argument(
        "--peer-python",
        help="an interpreter with torch: also time each conv in PyTorch",
    )
    args = parser.parse_args(argv)
    env = _env.environment()
    all_convs = args.conv_cases or CONVS
    convs = all_convs[: args.limit] if args.only in (None, "conv") else ()
    pools = POOLS[: args.limit] if args.only in (None, "max_pool") else ()
    try:
        peer = (
            _torch_lines(args.peer_python, convs, args.calls)
            if args.peer_python and convs
            else None
        )
    except (OSError, RuntimeError) as err:
        print(
            f"conv_formulations: the PyTorch peer failed: {err}",
            file=sys.stderr,
        )
        return 1
    for case in convs:
        line = _with_peer(_conv_case(case, args.calls), case, peer)
        _env.emit({**line, **env}, args.out)
    for case in pools:
        _env.emit({**_pool_case(case, args.calls), **env}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
