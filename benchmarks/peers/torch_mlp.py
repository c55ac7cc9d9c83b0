"""The BNN MLP in plain PyTorch: the same network, batch and optimizer.

784-H-...-10 MLP, no biases, ``BatchNorm1d`` (momentum 0.1, i.e. flax's
0.9; epsilon 1e-4) after every layer, Adam (lr 1e-3) on every parameter,
softmax cross-entropy, ``uint8`` images scaled to ``[0, 1]`` inside the
step. Variants:

* ``float``: ``nn.Linear`` + BN + ReLU;
* ``binary_weights``: kernels ``sign(W)`` (``sign(0) = +1``) with the
  clipped straight-through gradient ``1{|W| <= 1}`` (a custom
  ``torch.autograd.Function``), ReLU activations;
* ``binary_all``: also ``sign`` activations with the same gradient (every
  layer after the first binarizes its inputs; no ReLU).

Prints one JSON line with every timed step (``--steps``, after
``--warmup`` steps). ``--compile`` wraps the step in ``torch.compile``.

Usage (in an environment with torch):
  python benchmarks/peers/torch_mlp.py --variant binary_all --steps 100
"""

from __future__ import annotations

import json
import os
import sys

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
from _torch_sign import SignSte


class BinaryLinear(nn.Linear):
    """``x_b @ sign(W)^T``; ``x_b = sign(x)`` when ``binary_inputs``."""

    def __init__(self, n_in, n_out, binary_inputs):
        super().__init__(n_in, n_out, bias=False)
        self.binary_inputs = binary_inputs

    def forward(self, x):
        if self.binary_inputs:
            x = SignSte.apply(x)
        return F.linear(x, SignSte.apply(self.weight))


def build(kind: str, hidden) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    widths = [784, *hidden]
    for i, width in enumerate([*hidden, 10]):
        n_in = widths[i]
        if kind == "float":
            layers.append(nn.Linear(n_in, width, bias=False))
        else:
            layers.append(
                BinaryLinear(n_in, width, kind == "binary_all" and i > 0)
            )
        layers.append(nn.BatchNorm1d(width, eps=1e-4, momentum=0.1))
        if i < len(hidden) and kind != "binary_all":
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def main(argv=None) -> int:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.variant, args.hidden)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(
                0,
                256,
                (args.batch_size, 1, 28, 28),
                dtype=torch.uint8,
                generator=gen,
            ),
            torch.randint(0, 10, (args.batch_size,), generator=gen),
        )
        for _ in range(8)
    ]

    def step(images, labels):
        opt.zero_grad(set_to_none=True)
        logits = model(images.float() / 255)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        return loss.detach()

    if args.compile:
        step = torch.compile(step)
    times, cpu = _common.time_steps(step, batches, args.warmup, args.steps)
    print(
        json.dumps(
            _common.result(
                args,
                "torch",
                times,
                cpu,
                torch=torch.__version__,
                intra_op_threads=torch.get_num_threads(),
                interop_threads=torch.get_num_interop_threads(),
                mkldnn=torch.backends.mkldnn.is_available(),
            )
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
