"""Training memory and step time: float, binary, binary with packed residuals.

Measures bnnjax's own jitted training step
(:func:`bnnjax.train.make_train_step`: forward with batch norm in training
mode, softmax cross-entropy, gradient, Adam update on every parameter) for
three variants of one architecture:

* ``float``: the ``float`` preset (identity kernels; ReLU in the MLP,
  hard tanh in the ResNet, as ``bnnjax train --method float`` runs);
* ``binary``: binary weights and activations with ``--method``'s rules
  (default ``bnn``: sign with the clipped STE on both, BinaryNet's rule;
  ``scaled_sigmoid`` is the founding method), the layers'
  ``residuals="unpacked"`` (autodiff's float32 residuals);
* ``binary_packed``: the same with ``residuals="packed"``: the ``+-1``
  operands of every binary product and the clipped STE's window kept as
  bits for the backward pass;
* ``binary_auto`` (with ``--with-auto``): the same with the layers'
  default ``residuals="auto"``, which packs only the dense layers where
  packing measured as a saving
  (:func:`bnnjax.nn.functional.dense_packing_saves`).

For each variant, one JSON line with:

* ``temp_bytes``: the temporary memory of the compiled step by XLA's
  memory analysis (``compiled.memory_analysis().temp_size_in_bytes``;
  arguments and outputs, the parameters and optimizer state, are not
  in it);
* ``peak_rss_bytes`` (CPU) or ``peak_device_bytes`` (accelerators): the
  process's resident-memory high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` before the variant runs) or the device's
  ``peak_bytes_in_use``, measured in a subprocess per variant so that one
  variant's peak does not hide another's; ``None`` where the platform does
  not report it;
* ``step_ms_median``: the median step time over ``--steps`` steps, the
  variants interleaved over ``--rounds`` rounds in one process (after a
  warm-up of compilation and 2 steps), and ``ratio_to_float`` /
  ``ratio_to_binary`` of the temporary memory and the step time.

``--max-batch-budget BYTES`` adds, per variant, the largest batch size
whose step's temporary memory fits the budget (``max_batch``, and
``max_batch_ratio_to_float``), by compiling only: doubling from
``--batch-size`` up to ``--batch-size * 2**--max-doublings``, then
bisection between the last size that fits and the first that does not,
to a multiple of ``--batch-step`` (default ``--batch-size // 16``).
``--memory-only`` skips the steps and the peaks (temporary memory and
the budget search only).

Models: ``--model mlp``, :class:`bnnjax.models.linen.BinaryMLP` with
``--hidden`` (default 4096,4096,4096) on 28x28x1 inputs, batch 1024;
``--model resnet18``, :func:`bnnjax.models.linen.bireal_resnet18` on
32x32x3 inputs, batch 256, its binary convolutions in the form
``--conv-impl`` names (default ``auto``: shifted-slice patches and one
product on CPU, XLA's convolution elsewhere; ``xla`` keeps no patches).

Usage:
  python benchmarks/train_memory.py --model mlp [--batch-size 1024] \\
      [--method bnn] [--steps 6] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import _env
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bnnjax
from bnnjax import train as train_lib
from bnnjax.models import linen as models

VARIANTS = ("float", "binary", "binary_packed")
AUTO_VARIANT = "binary_auto"
_RESIDUALS = {"binary_packed": "packed", AUTO_VARIANT: "auto"}
MODELS = ("mlp", "resnet18")
_DEFAULT_BATCH = {"mlp": 1024, "resnet18": 256}
_INPUT_SHAPE = {"mlp": (28, 28, 1), "resnet18": (32, 32, 3)}
_WARMUP_STEPS = 2


def build_model(args: argparse.Namespace, variant: str) -> Any:
    """The linen model of ``variant``."""
    if variant == "float":
        preset = bnnjax.presets.get_preset("float")
    else:
        preset = bnnjax.presets.get_preset(args.method)
    residuals = _RESIDUALS.get(variant, "unpacked")
    if args.model == "mlp":
        return models.BinaryMLP(
            hidden=tuple(args.hidden),
            binary_activations=variant != "float",
            kernel_binarizer=preset.kernel_binarizer,
            activation_binarizer=preset.activation_binarizer,
            residuals=residuals,
        )
    return models.bireal_resnet18(
        num_classes=10,
        kernel_binarizer=preset.kernel_binarizer,
        activation_binarizer=preset.activation_binarizer,
        residuals=residuals,
        conv_impl=args.conv_impl,
    )


def _batch(args: argparse.Namespace, batch_size: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    shape = (1, batch_size, *_INPUT_SHAPE[args.model])
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, 10, (1, batch_size), dtype=np.int32)
    return jax.device_put(images), jax.device_put(labels)


def compile_step(
    args: argparse.Namespace, variant: str, batch_size: int
) -> tuple[Any, Any, Any]:
    """``(state, compiled step, batch)`` of one variant."""
    model = build_model(args, variant)
    tx = optax.adam(1e-3)
    sample = jnp.zeros((2, *_INPUT_SHAPE[args.model]), jnp.float32)
    state = train_lib.init_state(model, tx, [0], sample)
    step = train_lib.make_train_step(model, tx)
    batch = _batch(args, batch_size)
    compiled = step.lower(state, *batch, jnp.float32(0.5)).compile()
    return state, compiled, batch


def temp_bytes(compiled: Any) -> int:
    """The compiled step's temporary memory by XLA's memory analysis."""
    return int(compiled.memory_analysis().temp_size_in_bytes)


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            match = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure_peak(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Peak memory of 2 steps of one variant (run in its own process)."""
    state, compiled, batch = compile_step(args, variant, args.batch_size)
    device = jax.devices()[0]
    reset = _reset_hwm()
    for _ in range(2):
        state, metrics = compiled(state, *batch, jnp.float32(0.5))
        jax.block_until_ready(metrics)
    out: dict[str, Any] = {"peak_rss_bytes": _vm_hwm() if reset else None}
    stats = device.memory_stats() if device.platform != "cpu" else None
    out["peak_device_bytes"] = stats.get("peak_bytes_in_use") if stats else None
    return out


def _peak_in_subprocess(
    args: argparse.Namespace, variant: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--method",
        args.method,
        "--hidden",
        ",".join(map(str, args.hidden)),
        "--conv-impl",
        args.conv_impl,
        "--peak-only",
        variant,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_error": tail}
    return json.loads(lines[-1])


def max_batch(
    args: argparse.Namespace, variant: str, budget: int, first_temp: int
) -> int | None:
    """The largest batch size whose step fits ``budget`` bytes.

    Doubling from ``--batch-size`` (whose step's temporary memory is
    ``first_temp``; at most ``--max-doublings`` times), then bisection
    between the last size that fits and the first that does not, to a
    multiple of ``--batch-step``. None if not even ``--batch-size`` fits.
    """

    def fits(size: int) -> bool:
        _, compiled, _ = compile_step(args, variant, size)
        return temp_bytes(compiled) <= budget

    if first_temp > budget:
        return None
    limit = args.batch_size * 2**args.max_doublings
    low, high = args.batch_size, args.batch_size * 2
    while high <= limit and fits(high):
        low, high = high, high * 2
    if high > limit:
        return low
    step = args.batch_step or max(1, args.batch_size // 16)
    while True:
        mid = low + (high - low) // 2 // step * step
        if mid <= low:
            return low
        if fits(mid):
            low = mid
        else:
            high = mid


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measures every variant; returns one record per variant."""
    env = _env.environment()
    variants = VARIANTS + ((AUTO_VARIANT,) if args.with_auto else ())
    records = {}
    compiled_steps = {}
    for variant in variants:
        start = time.perf_counter()
        state, compiled, batch = compile_step(args, variant, args.batch_size)
        compile_s = time.perf_counter() - start
        for _ in range(0 if args.memory_only else _WARMUP_STEPS):
            state, metrics = compiled(state, *batch, jnp.float32(0.5))
            jax.block_until_ready(metrics)
        compiled_steps[variant] = [state, compiled, batch]
        records[variant] = {
            "variant": variant,
            "model": args.model,
            "method": "float" if variant == "float" else args.method,
            "batch_size": args.batch_size,
            "hidden": list(args.hidden) if args.model == "mlp" else None,
            "conv_impl": None if args.model == "mlp" else args.conv_impl,
            "temp_bytes": temp_bytes(compiled),
            "compile_s": round(compile_s, 2),
            "times_ms": [],
        }
    per_round = max(1, args.steps // args.rounds)
    for r in range(0 if args.memory_only else args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            entry = compiled_steps[variant]
            for _ in range(per_round):
                start = time.perf_counter()
                entry[0], metrics = entry[1](
                    entry[0], *entry[2], jnp.float32(0.5)
                )
                jax.block_until_ready(metrics)
                records[variant]["times_ms"].append(
                    (time.perf_counter() - start) * 1e3
                )
    del compiled_steps
    out = []
    for variant in variants:
        rec = records[variant]
        times = rec.pop("times_ms")
        if not args.memory_only:
            rec["steps"] = len(times)
            rec["step_ms_median"] = round(statistics.median(times), 3)
        if not (args.no_peak or args.memory_only):
            rec.update(_peak_in_subprocess(args, variant))
        if args.max_batch_budget:
            rec["max_batch_budget_bytes"] = args.max_batch_budget
            rec["max_batch"] = max_batch(
                args, variant, args.max_batch_budget, rec["temp_bytes"]
            )
        out.append(rec)
    for rec in out:
        for ref in ("float", "binary"):
            base = records[ref]
            rec[f"temp_ratio_to_{ref}"] = round(
                rec["temp_bytes"] / base["temp_bytes"], 3
            )
            if not args.memory_only:
                rec[f"step_ratio_to_{ref}"] = round(
                    rec["step_ms_median"] / base["step_ms_median"], 3
                )
        if args.max_batch_budget:
            best, best_float = rec["max_batch"], records["float"]["max_batch"]
            rec["max_batch_ratio_to_float"] = (
                round(best / best_float, 3)
                if best is not None and best_float
                else None
            )
        rec.update(env)
        rec["load"] = _env.load()
    return out


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1: {text!r}")
    return widths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="mlp")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: 1024 for mlp, 256 for resnet18",
    )
    parser.add_argument("--hidden", type=_widths, default=[4096, 4096, 4096])
    parser.add_argument(
        "--method",
        default="bnn",
        choices=[m for m in bnnjax.presets.PRESET_NAMES if m != "float"],
        help="rules of the binary variants (default: bnn)",
    )
    parser.add_argument(
        "--conv-impl",
        choices=("auto", "xla", "patches"),
        default="auto",
        help="the ResNet's binary convolutions (default: auto)",
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--max-batch-budget",
        type=int,
        default=None,
        metavar="BYTES",
        help="also report the largest batch whose temp memory fits",
    )
    parser.add_argument(
        "--max-doublings",
        type=int,
        default=6,
        help="largest batch searched: --batch-size * 2**N (default 6)",
    )
    parser.add_argument(
        "--batch-step",
        type=int,
        default=None,
        help="resolution of the budget search (default --batch-size // 16)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="temporary memory and the budget search only: no steps, no peaks",
    )
    parser.add_argument(
        "--no-peak",
        action="store_true",
        help="skip the peak-memory subprocesses",
    )
    parser.add_argument(
        "--with-auto",
        action="store_true",
        help="also measure binary_auto: the layers' default residuals='auto'",
    )
    parser.add_argument(
        "--peak-only",
        choices=(*VARIANTS, AUTO_VARIANT),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--out", help="append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = _DEFAULT_BATCH[args.model]
    if args.peak_only:
        print(json.dumps(measure_peak(args, args.peak_only)), flush=True)
        return 0
    lines = run(args)
    for rec in lines:
        _env.emit(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
