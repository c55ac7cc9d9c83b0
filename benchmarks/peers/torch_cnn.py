"""The binary CNNs in plain PyTorch: the same networks, batch and optimizer.

Input ``(batch, 1, 28, 28)`` (NCHW, as PyTorch users write it), no
biases, ``BatchNorm2d`` / ``BatchNorm1d`` (momentum 0.1, i.e. Keras'
0.9; epsilon 1e-4) after every layer, Adam (lr 1e-3) on every trainable
parameter, softmax cross-entropy, ``uint8`` images scaled to ``[0, 1]``
inside the step. Networks (``--network``):

* ``larq_tutorial``: Larq's MNIST guide, conv 32 (3x3, valid) - pool 2
  - BN, conv 64 - pool 2 - BN, conv 64 - BN, flatten (576), dense 64 -
  BN, dense 10 - BN; every BN without scale (Keras' ``scale=False``: the
  BN weight is frozen at 1 and left out of the optimizer, the shift
  trains); latent kernels clamped to ``[-1, 1]`` after each optimizer
  step (Larq's ``kernel_constraint="weight_clip"``);
* ``binarynet_quarter``: BinaryNet's CNN at a quarter of its width, six
  3x3 ``same`` convs (32, 32, 64, 64, 128, 128), a 2x2 max pool after
  convs 2, 4 and 6 (pool before BN), BN after every conv, flatten (1152),
  dense 256 - BN, dense 256 - BN, dense 10 - BN; no clamping.

Variants (``--variant``):

* ``binary_all``: kernels ``sign(W)`` (``sign(0) = +1``) with the clipped
  straight-through gradient ``1{|W| <= 1}`` (a custom
  ``torch.autograd.Function``), and ``sign`` inputs with the same
  gradient on every layer after the first; no ReLU;
* ``float``: ``F.conv2d`` / ``F.linear`` on the latent weights and a ReLU
  after every hidden BN (no clamping).

Prints one JSON line with every timed step (``--steps``, after
``--warmup`` steps). ``--compile`` wraps the step in ``torch.compile``.

Usage (in an environment with torch):
  python benchmarks/peers/torch_cnn.py --network larq_tutorial --steps 100
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

NETWORKS = _common.CNN_NETWORKS


class BinaryConv2d(nn.Conv2d):
    """``conv2d(x_b, sign(W))``; ``x_b = sign(x)`` when ``binary_inputs``.

    Zero padding is added after ``sign`` (as Larq's default
    ``pad_values=0``).
    """

    def __init__(self, n_in, n_out, padding, binary_inputs):
        super().__init__(n_in, n_out, 3, padding=padding, bias=False)
        self.binary_inputs = binary_inputs

    def forward(self, x):
        if self.binary_inputs:
            x = SignSte.apply(x)
        return F.conv2d(x, SignSte.apply(self.weight), padding=self.padding)


class BinaryLinear(nn.Linear):
    """``x_b @ sign(W)^T``; ``x_b = sign(x)`` when ``binary_inputs``."""

    def __init__(self, n_in, n_out, binary_inputs):
        super().__init__(n_in, n_out, bias=False)
        self.binary_inputs = binary_inputs

    def forward(self, x):
        if self.binary_inputs:
            x = SignSte.apply(x)
        return F.linear(x, SignSte.apply(self.weight))


class MaxPool(nn.Module):
    """2x2 max pool, stride 2 (``floor`` of odd sizes, as Keras' valid)."""

    def forward(self, x):
        return F.max_pool2d(x, 2)


def batch_norm(layer: str, width: int, scale: bool) -> nn.Module:
    cls = nn.BatchNorm2d if layer == "conv" else nn.BatchNorm1d
    bn = cls(width, eps=1e-4, momentum=0.1)
    if not scale:  # Keras' scale=False: gamma stays 1, beta trains
        bn.weight.requires_grad_(False)
    return bn


def build(network: str, kind: str) -> tuple[nn.Module, list[nn.Parameter]]:
    """The model and the latent kernels to clamp to ``[-1, 1]``."""
    spec = NETWORKS[network]
    pad = 1 if spec["same"] else 0
    specs = spec["layers"]
    layers: list[nn.Module] = []
    clipped: list[nn.Parameter] = []
    channels, size = 1, 28
    for i, (layer, width, pool) in enumerate(specs):
        if layer == "dense" and specs[i - 1][0] == "conv":
            layers.append(nn.Flatten())
            channels = channels * size * size
        if layer == "conv":
            if kind == "float":
                mod = nn.Conv2d(channels, width, 3, padding=pad, bias=False)
            else:
                mod = BinaryConv2d(channels, width, pad, i > 0)
            size = size + 2 * pad - 2
        elif kind == "float":
            mod = nn.Linear(channels, width, bias=False)
        else:
            mod = BinaryLinear(channels, width, i > 0)
        layers.append(mod)
        if kind != "float" and spec["clip"]:
            clipped.append(mod.weight)
        channels = width
        if pool:
            layers.append(MaxPool())
            size //= 2
        layers.append(batch_norm(layer, width, spec["bn_scale"]))
        if i < len(specs) - 1 and kind == "float":
            layers.append(nn.ReLU())
    return nn.Sequential(*layers), clipped


def main(argv=None) -> int:
    args = _common.parse_cnn_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, clipped = build(args.network, args.variant)
    model.train()
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3
    )
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
        with torch.no_grad():
            for w in clipped:
                w.clamp_(-1.0, 1.0)
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
                network=args.network,
                kernel_constraint="weight_clip" if clipped else None,
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
