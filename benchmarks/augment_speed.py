"""Four exact ways to shift, crop and flip a batch of images on the device.

Every formulation computes ``out[b, i, j] = x[b, i + dy[b], j' + dx[b]]``
(zero outside the image) with ``j' = W - 1 - j`` where ``flip[b]``, the
random crop with zero padding (``dy, dx`` in ``[-pad, pad]``) and
horizontal flip of :func:`bnnjax.training.augment.crop_flip`:

* ``slice``: pad, then one ``lax.dynamic_slice`` per example under
  ``vmap`` (XLA turns the batched slice into a gather), flip by select;
* ``onehot``: two batched matrix products with one-hot shift matrices
  (the column matrix also mirrors); exact for finite values only;
* ``select``: the ``2 * pad + 1`` static shifts of each axis, one
  ``where`` each; no gather, no product;
* ``gather``: ``take_along_axis`` on each axis with computed indices.

Each line gives the median time of the jitted function over ``--calls``
calls, for the library's :func:`~bnnjax.training.augment.translate` too
(the ``gather`` formulation), and checks that every formulation equals it
bit for bit on uint8 images.

Usage:
  python benchmarks/augment_speed.py [--calls 200]
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
from jax import lax

from bnnjax.training import augment

# (name, batch, image shape, pad): CIFAR-style crop and flip, MNIST shift.
CASES = (
    ("cifar_crop_flip", 128, (32, 32, 3), 4),
    ("mnist_shift", 100, (28, 28, 1), 2),
)


def _slice(x, dy, dx, flip, pad):
    h, w, c = x.shape[1:]
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img, oy, ox):
        return lax.dynamic_slice(img, (oy + pad, ox + pad, 0), (h, w, c))

    out = jax.vmap(one)(xp, dy, dx)
    return jnp.where(flip[:, None, None, None], out[:, :, ::-1], out)


def _onehot(x, dy, dx, flip, pad):
    del pad
    h, w = x.shape[1:3]
    i = jnp.arange(h)
    j = jnp.arange(w)
    rows = (i[None, :, None] + dy[:, None, None]) == i[None, None, :]
    src = jnp.where(flip[:, None], w - 1 - j[None, :], j[None, :])
    cols = (src[:, :, None] + dx[:, None, None]) == j[None, None, :]
    f = x.astype(jnp.float32)
    out = jnp.einsum("bik,bkwc->biwc", rows.astype(f.dtype), f)
    out = jnp.einsum("bjl,bilc->bijc", cols.astype(f.dtype), out)
    return out.astype(x.dtype)


def _select(x, dy, dx, flip, pad):
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    out = jnp.zeros_like(x)
    for d in range(-pad, pad + 1):
        out = jnp.where(
            (dy == d)[:, None, None, None], xp[:, pad + d : pad + d + h], out
        )
    xp = jnp.pad(out, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    out = jnp.zeros_like(x)
    for d in range(-pad, pad + 1):
        out = jnp.where(
            (dx == d)[:, None, None, None], xp[:, :, pad + d : pad + d + w], out
        )
    return jnp.where(flip[:, None, None, None], out[:, :, ::-1], out)


def _gather(x, dy, dx, flip, pad):
    del pad
    h, w = x.shape[1:3]
    iy = jnp.arange(h)[None, :] + dy[:, None]
    j = jnp.arange(w)[None, :]
    ix = jnp.where(flip[:, None], w - 1 - j, j) + dx[:, None]
    ok_y = (iy >= 0) & (iy < h)
    ok_x = (ix >= 0) & (ix < w)
    out = jnp.take_along_axis(
        x, jnp.clip(iy, 0, h - 1)[:, :, None, None], axis=1
    )
    out = jnp.take_along_axis(
        out, jnp.clip(ix, 0, w - 1)[:, None, :, None], axis=2
    )
    keep = ok_y[:, :, None, None] & ok_x[:, None, :, None]
    return jnp.where(keep, out, jnp.zeros((), x.dtype))


def _library(x, dy, dx, flip, pad):
    del pad
    return augment.translate(x, dy, dx, flip)


FORMULATIONS = {
    "slice": _slice,
    "onehot": _onehot,
    "select": _select,
    "gather": _gather,
    "library": _library,
}


def _median_us(fn, args, calls):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    env = _env.environment()
    rng = np.random.default_rng(0)
    for case, batch, shape, pad in CASES:
        x = jnp.asarray(rng.integers(0, 256, (batch, *shape), np.uint8))
        dy = jnp.asarray(rng.integers(-pad, pad + 1, batch), jnp.int32)
        dx = jnp.asarray(rng.integers(-pad, pad + 1, batch), jnp.int32)
        flip = jnp.asarray(rng.integers(0, 2, batch).astype(bool))
        if case.endswith("shift"):
            flip = jnp.zeros_like(flip)
        want = np.asarray(augment.translate(x, dy, dx, flip))
        for name, fn in FORMULATIONS.items():
            jitted = jax.jit(fn, static_argnums=4)
            got = np.asarray(jitted(x, dy, dx, flip, pad))
            line = {
                "benchmark": "augment_speed",
                "case": case,
                "formulation": name,
                "batch": batch,
                "image_shape": list(shape),
                "pad": pad,
                "median_us": round(
                    _median_us(jitted, (x, dy, dx, flip, pad), args.calls), 1
                ),
                "equal_to_library": bool(np.array_equal(got, want)),
                "calls": args.calls,
                **env,
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
