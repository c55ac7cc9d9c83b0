"""The PyTorch peers' binarizer: ``sign`` with the clipped STE.

Imported by the PyTorch peer scripts only (it needs torch); the Larq
peers share ``_common`` instead.
"""

from __future__ import annotations

import torch


class SignSte(torch.autograd.Function):
    """Forward ``sign(x)`` with ``sign(0) = +1``; backward ``1{|x| <= 1}``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)
