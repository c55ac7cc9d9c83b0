"""bnnjax: binarized neural networks in JAX and Flax.

The flat namespace is lazy: each name below imports the module that defines
it on first use, so ``import bnnjax`` imports neither JAX nor any training
code until a name is used (``bnnjax --help`` answers without JAX). Importing
bnnjax has no side effects: it sets no JAX configuration, creates no files
and prints nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from bnnjax._version import __version__ as __version__

if TYPE_CHECKING:
    from bnnjax import compare as compare
    from bnnjax import data as data
    from bnnjax import distributed as distributed
    from bnnjax import export as export
    from bnnjax import models as models
    from bnnjax import nn as nn
    from bnnjax import packed as packed
    from bnnjax import presets as presets
    from bnnjax import train as train
    from bnnjax.binarize import (
        DETERMINISTIC_SURROGATE_NAMES as DETERMINISTIC_SURROGATE_NAMES,
    )
    from bnnjax.binarize import SURROGATE_NAMES as SURROGATE_NAMES
    from bnnjax.binarize import (
        AnnealedScaledSigmoidSurrogate as AnnealedScaledSigmoidSurrogate,
    )
    from bnnjax.binarize import ApproxSignSurrogate as ApproxSignSurrogate
    from bnnjax.binarize import Binarizer as Binarizer
    from bnnjax.binarize import ClippedSteSurrogate as ClippedSteSurrogate
    from bnnjax.binarize import EdeSurrogate as EdeSurrogate
    from bnnjax.binarize import HardTanhSurrogate as HardTanhSurrogate
    from bnnjax.binarize import IdentitySurrogate as IdentitySurrogate
    from bnnjax.binarize import ScaledSigmoidSurrogate as ScaledSigmoidSurrogate
    from bnnjax.binarize import SigmoidSurrogate as SigmoidSurrogate
    from bnnjax.binarize import SteSurrogate as SteSurrogate
    from bnnjax.binarize import StochasticSurrogate as StochasticSurrogate
    from bnnjax.binarize import Surrogate as Surrogate
    from bnnjax.binarize import SwishSignSurrogate as SwishSignSurrogate
    from bnnjax.binarize import binarize as binarize
    from bnnjax.binarize import get_surrogate as get_surrogate
    from bnnjax.convert import BinarizeRule as BinarizeRule
    from bnnjax.convert import binarize_model as binarize_model
    from bnnjax.optim import BINARY as BINARY
    from bnnjax.optim import REAL as REAL
    from bnnjax.optim import BopSecondOrderState as BopSecondOrderState
    from bnnjax.optim import BopState as BopState
    from bnnjax.optim import binary_param_labels as binary_param_labels
    from bnnjax.optim import binary_partition as binary_partition
    from bnnjax.optim import bop as bop
    from bnnjax.optim import bop_second_order as bop_second_order
    from bnnjax.optim import clip_latent_weights as clip_latent_weights
    from bnnjax.optim import (
        clip_latent_weights_by_spread as clip_latent_weights_by_spread,
    )
    from bnnjax.optim import scale_adaptive as scale_adaptive
    from bnnjax.optim import scale_by_glorot_lr as scale_by_glorot_lr
    from bnnjax.optim import scale_by_mean_abs_dev as scale_by_mean_abs_dev
    from bnnjax.scale import MeanAbsDevScale as MeanAbsDevScale
    from bnnjax.scale import MeanAbsScale as MeanAbsScale
    from bnnjax.scale import NoScale as NoScale
    from bnnjax.scale import Scale as Scale
    from bnnjax.scale import StdScale as StdScale
    from bnnjax.scale import get_scale as get_scale
    from bnnjax.scale import mean_abs as mean_abs
    from bnnjax.scale import mean_abs_dev as mean_abs_dev
    from bnnjax.scale import reduce_axes as reduce_axes
    from bnnjax.scale import std as std
    from bnnjax.summary import ModelSummary as ModelSummary
    from bnnjax.summary import ParamSummary as ParamSummary
    from bnnjax.summary import summary as summary
    from bnnjax.train import TrainConfig as TrainConfig

# Subpackages and modules reachable as ``bnnjax.<name>``.
_SUBMODULES = (
    "compare",
    "data",
    "distributed",
    "export",
    "models",
    "nn",
    "packed",
    "presets",
    "train",
)

# Names of the flat namespace, each with the module that defines it.
_ATTRIBUTES = {
    "AnnealedScaledSigmoidSurrogate": "bnnjax.binarize",
    "ApproxSignSurrogate": "bnnjax.binarize",
    "binarize": "bnnjax.binarize",
    "binarize_model": "bnnjax.convert",
    "Binarizer": "bnnjax.binarize",
    "BinarizeRule": "bnnjax.convert",
    "BINARY": "bnnjax.optim",
    "binary_param_labels": "bnnjax.optim",
    "binary_partition": "bnnjax.optim",
    "bop": "bnnjax.optim",
    "bop_second_order": "bnnjax.optim",
    "BopSecondOrderState": "bnnjax.optim",
    "BopState": "bnnjax.optim",
    "clip_latent_weights": "bnnjax.optim",
    "clip_latent_weights_by_spread": "bnnjax.optim",
    "ClippedSteSurrogate": "bnnjax.binarize",
    "DETERMINISTIC_SURROGATE_NAMES": "bnnjax.binarize",
    "EdeSurrogate": "bnnjax.binarize",
    "get_scale": "bnnjax.scale",
    "HardTanhSurrogate": "bnnjax.binarize",
    "IdentitySurrogate": "bnnjax.binarize",
    "get_surrogate": "bnnjax.binarize",
    "mean_abs": "bnnjax.scale",
    "mean_abs_dev": "bnnjax.scale",
    "MeanAbsDevScale": "bnnjax.scale",
    "MeanAbsScale": "bnnjax.scale",
    "ModelSummary": "bnnjax.summary",
    "NoScale": "bnnjax.scale",
    "ParamSummary": "bnnjax.summary",
    "REAL": "bnnjax.optim",
    "reduce_axes": "bnnjax.scale",
    "Scale": "bnnjax.scale",
    "scale_adaptive": "bnnjax.optim",
    "scale_by_glorot_lr": "bnnjax.optim",
    "scale_by_mean_abs_dev": "bnnjax.optim",
    "ScaledSigmoidSurrogate": "bnnjax.binarize",
    "SigmoidSurrogate": "bnnjax.binarize",
    "std": "bnnjax.scale",
    "StdScale": "bnnjax.scale",
    "SteSurrogate": "bnnjax.binarize",
    "StochasticSurrogate": "bnnjax.binarize",
    "summary": "bnnjax.summary",
    "Surrogate": "bnnjax.binarize",
    "SURROGATE_NAMES": "bnnjax.binarize",
    "SwishSignSurrogate": "bnnjax.binarize",
    "TrainConfig": "bnnjax.train",
}

__all__ = sorted([*_SUBMODULES, *_ATTRIBUTES, "__version__"], key=str.lower)


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Namespace(types.ModuleType):
    """The package module, keeping exported names over same-named modules.

    Loading a submodule binds it as an attribute of its package. The modules
    ``bnnjax.binarize`` and ``bnnjax.summary`` share their names with the
    functions the flat namespace exports; this class keeps the functions.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ATTRIBUTES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Namespace
