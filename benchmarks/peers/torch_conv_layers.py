"""Single binary convolutions in plain PyTorch: value and gradient, timed.

The per-layer peer of ``benchmarks/conv_formulations.py``: for each case
``BATCHxSIZExINxOUTxKERNELxSTRIDE`` it times, as bnnjax's script does,
the loss ``sum(conv2d(sign(x), sign(W)) * g)`` and its gradient with
respect to the inputs and the latent kernel, ``sign`` with the clipped
straight-through gradient ``1{|v| <= 1}`` (inputs binarized unless the
layer has one input channel), padding ``KERNEL // 2``, no bias, float32.
Both memory layouts are timed: NCHW (PyTorch's default) and
``torch.channels_last``; on an x86 CPU both run oneDNN's direct
convolutions.

Prints one JSON line per case with the median milliseconds of each
layout (``nchw_ms``, ``channels_last_ms``).

Usage (in an environment with torch):
  python benchmarks/peers/torch_conv_layers.py --cases 100x28x32x32x3x1
      [--calls 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _torch_sign import SignSte


def _case(text: str) -> tuple[int, ...]:
    parts = text.split("x")
    if len(parts) != 6 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"case {text!r}: expected BATCHxSIZExINxOUTxKERNELxSTRIDE, "
            "e.g. 100x28x32x32x3x1"
        )
    return tuple(int(p) for p in parts)


def _median_ms(step, calls: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_case(case: tuple[int, ...], calls: int, layout) -> float:
    batch, size, cin, cout, k, stride = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, size, size, generator=gen)
    w = torch.randn(cout, cin, k, k, generator=gen)
    out = -(-size // stride)
    g = torch.randn(batch, cout, out, out, generator=gen)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
        g = g.to(memory_format=torch.channels_last)
    x.requires_grad_()
    w.requires_grad_()

    def step():
        inputs = SignSte.apply(x) if cin > 1 else x
        y = F.conv2d(inputs, SignSte.apply(w), stride=stride, padding=k // 2)
        (y * g).sum().backward()
        x.grad = None
        w.grad = None

    return _median_ms(step, calls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        type=lambda s: [_case(c) for c in s.split(",")],
        required=True,
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for case in args.cases:
        line = {
            "framework": "torch",
            "case": "x".join(str(v) for v in case),
            "nchw_ms": round(time_case(case, args.calls, "nchw"), 3),
            "channels_last_ms": round(
                time_case(case, args.calls, "channels_last"), 3
            ),
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
