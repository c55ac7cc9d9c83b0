"""Command-line interface: ``bnnjax <command> ...``.

``main(argv)`` is the only entry point and the only place that prints.
Commands:

* ``demo``: a short demonstration of the binarizer and its surrogate
  gradients, and a check of the founding method's scale invariance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import bnnjax

_DEMO_POINTS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
_DEMO_SCALES = (1e-3, 1.0, 1e3)


def _demo_results(seed: int) -> dict:
    """Computes the demo's numbers with the public API."""
    points = jnp.array(_DEMO_POINTS)
    slopes = {}
    for name in (
        "ste",
        "clipped_ste",
        "approx_sign",
        "swish_sign",
        "ede",
        "sigmoid",
        "scaled_sigmoid",
    ):

        def total(v, name=name):
            return bnnjax.binarize(v, name, None, progress=0.5).sum()

        slopes[name] = [round(float(g), 4) for g in jax.grad(total)(points)]

    w = 0.05 * jax.random.normal(jax.random.key(seed), (256, 128))
    binary = bnnjax.binarize(w, axis=-1)
    alpha = bnnjax.mean_abs_dev(w, (0,))
    invariance = {}
    for name in ("scaled_sigmoid", "clipped_ste"):
        rows = []
        for c in _DEMO_SCALES:
            v = jnp.float32(c) * w
            _, vjp = jax.vjp(
                lambda u, name=name: bnnjax.binarize(u, name, axis=-1), v
            )
            (g,) = vjp(jnp.ones_like(v))
            g = np.asarray(g)
            rows.append(
                {
                    "c": c,
                    "mean_abs_grad": float(np.mean(np.abs(g))),
                    "fraction_with_gradient": float(
                        np.mean(np.abs(g) > 1e-3 * np.max(np.abs(g)))
                    ),
                }
            )
        invariance[name] = rows
    return {
        "bnnjax": bnnjax.__version__,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "points": list(_DEMO_POINTS),
        "surrogate_slopes": slopes,
        "weight_shape": list(w.shape),
        "distinct_values_per_channel": int(
            max(len(np.unique(col)) for col in np.asarray(binary).T)
        ),
        "contains_zero": bool(np.any(np.asarray(binary) == 0)),
        "alpha_equals_mean_abs_dev": bool(
            np.allclose(np.abs(np.asarray(binary)), np.asarray(alpha))
        ),
        "invariance": invariance,
    }


def _print_demo(results: dict, out) -> None:
    def p(*parts):
        print(*parts, file=out)

    p(
        f"bnnjax {results['bnnjax']} demo (jax {results['jax']}, "
        f"{results['device']})"
    )
    p()
    p(
        "1. Forward: binarize(w, axis=-1) on a "
        f"{tuple(results['weight_shape'])} Gaussian weight gives "
        f"{results['distinct_values_per_channel']} values per output channel,"
    )
    p(
        "   +-alpha_j with alpha_j = mean |w_j - mean(w_j)| "
        f"({results['alpha_equals_mean_abs_dev']}); any exact zeros: "
        f"{results['contains_zero']}."
    )
    p()
    p("2. Backward: d binarize(x) / dx (no scale; EDE at progress 0.5)")
    header = (
        "   " + "x".ljust(15) + "".join(f"{x:>8.1f}" for x in results["points"])
    )
    p(header)
    for name, slopes in results["surrogate_slopes"].items():
        p("   " + name.ljust(15) + "".join(f"{g:>8.3f}" for g in slopes))
    p("   (scaled_sigmoid's width is the spread of this 7-point tensor)")
    p()
    p("3. Founding property: scale the weights by c; mean |gradient| and the")
    p("   fraction of weights that still get a gradient:")
    p(f"   {'c':<8}{'scaled_sigmoid':>26}{'clipped_ste':>26}")
    rows = zip(*results["invariance"].values(), strict=True)
    for founding, clipped in rows:
        p(
            f"   {founding['c']:<8g}"
            f"{founding['mean_abs_grad']:>14.4g}"
            f"{founding['fraction_with_gradient']:>12.1%}"
            f"{clipped['mean_abs_grad']:>14.4g}"
            f"{clipped['fraction_with_gradient']:>12.1%}"
        )
    p()
    p("The scaled sigmoid's gradient does not depend on c. The fixed window")
    p("becomes a plain STE for small weights (one slope for all, times a tiny")
    p("alpha) and reaches almost none of the large ones.")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnnjax",
        description="Binarized neural networks in JAX and Flax.",
    )
    parser.add_argument(
        "--version", action="version", version=f"bnnjax {bnnjax.__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="demonstrate the binarizer and its surrogate gradients",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    demo.add_argument(
        "--json", action="store_true", help="print one JSON line instead"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        results = _demo_results(args.seed)
        if args.json:
            print(json.dumps(results))
        else:
            _print_demo(results, sys.stdout)
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
