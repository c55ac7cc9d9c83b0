"""Shared command line and JSON output of the peer training scripts.

The peers run in their own environment (TensorFlow/Larq, PyTorch), never
in bnnjax's; they import nothing from bnnjax. Each prints one JSON line
with every timed step, so ``benchmarks/train_throughput.py`` can pool the
steps of several interleaved rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

KINDS = ("float", "binary_weights", "binary_all")


def _add_step_options(parser: argparse.ArgumentParser) -> None:
    """``--steps``, ``--warmup``, ``--threads`` and ``--compile``."""
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=(
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count()
        ),
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the step (tf.function jit_compile=True / torch.compile)",
    )


def parse_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variant", choices=KINDS, default="binary_weights")
    parser.add_argument(
        "--hidden",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1024, 1024, 1024],
    )
    parser.add_argument("--batch-size", type=int, default=100)
    _add_step_options(parser)
    return parser.parse_args(argv)


# The CNN peers' networks. ``layers``: (kind, filters or units, pool
# after) per layer, "conv" being 3x3; ``same``: 'same' padding (else
# 'valid'); ``clip``: latent weights clipped to [-1, 1] (Larq's
# weight_clip); ``bn_scale``: batch norm with a learned scale.
CNN_NETWORKS = {
    "larq_tutorial": {
        "same": False,
        "clip": True,
        "bn_scale": False,
        "layers": [
            ("conv", 32, True),
            ("conv", 64, True),
            ("conv", 64, False),
            ("dense", 64, False),
            ("dense", 10, False),
        ],
    },
    "binarynet_quarter": {
        "same": True,
        "clip": False,
        "bn_scale": True,
        "layers": [
            ("conv", 32, False),
            ("conv", 32, True),
            ("conv", 64, False),
            ("conv", 64, True),
            ("conv", 128, False),
            ("conv", 128, True),
            ("dense", 256, False),
            ("dense", 256, False),
            ("dense", 10, False),
        ],
    },
}


def parse_cnn_args(description: str, argv=None) -> argparse.Namespace:
    """The CNN peers' command line; ``--batch-size`` defaults per network."""
    default_batch = {"larq_tutorial": 64, "binarynet_quarter": 100}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--network", choices=tuple(default_batch), required=True
    )
    parser.add_argument(
        "--variant", choices=("float", "binary_all"), default="binary_all"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: 64 for larq_tutorial, 100 for binarynet_quarter",
    )
    _add_step_options(parser)
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = default_batch[args.network]
    return args


def result(args, framework: str, times_ms, cpu_ms, **fields) -> dict:
    affinity = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None
    )
    ms = statistics.median(times_ms)
    out = {
        "framework": framework,
        "variant": args.variant,
        "surrogate": "none" if args.variant == "float" else "clipped_ste",
        "scale": "none",
        "hidden": getattr(args, "hidden", None),
        "batch_size": args.batch_size,
        "compiled": args.compile,
        "step_ms_median": round(ms, 4),
        "examples_per_second": round(args.batch_size * 1e3 / ms, 1),
        "step_ms": [round(t, 4) for t in times_ms],
        "cpu_ms": [round(t, 4) for t in cpu_ms],
        "device": "cpu",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        **fields,
    }
    if not hasattr(args, "hidden"):  # the CNN peers: no MLP widths
        del out["hidden"]
    return out


def time_steps(step, batches, warmup: int, steps: int):
    """Runs ``warmup + steps`` steps on ``batches`` in turn; returns the
    wall and process-CPU milliseconds of each timed step. ``step(images,
    labels)`` returns the loss, read back as a float so the step is
    finished when its time is taken."""
    times, cpu = [], []
    for i in range(warmup + steps):
        images, labels = batches[i % len(batches)]
        cpu_start = time.process_time()
        start = time.perf_counter()
        float(step(images, labels))
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - cpu_start) * 1e3)
    return times, cpu
