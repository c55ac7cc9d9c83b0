"""bnnjax: binarized neural networks in JAX and Flax.

Importing bnnjax has no side effects: it sets no JAX configuration, creates no
files and prints nothing.
"""

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
from bnnjax.binarize import ApproxSignSurrogate as ApproxSignSurrogate
from bnnjax.binarize import Binarizer as Binarizer
from bnnjax.binarize import ClippedSteSurrogate as ClippedSteSurrogate
from bnnjax.binarize import EdeSurrogate as EdeSurrogate
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

from bnnjax._version import __version__ as __version__

__all__ = [
    "BINARY",
    "ApproxSignSurrogate",
    "BinarizeRule",
    "Binarizer",
    "BopSecondOrderState",
    "BopState",
    "ClippedSteSurrogate",
    "DETERMINISTIC_SURROGATE_NAMES",
    "EdeSurrogate",
    "MeanAbsDevScale",
    "MeanAbsScale",
    "ModelSummary",
    "NoScale",
    "ParamSummary",
    "REAL",
    "SURROGATE_NAMES",
    "Scale",
    "ScaledSigmoidSurrogate",
    "SigmoidSurrogate",
    "StdScale",
    "SteSurrogate",
    "StochasticSurrogate",
    "Surrogate",
    "SwishSignSurrogate",
    "TrainConfig",
    "__version__",
    "binarize",
    "binarize_model",
    "binary_param_labels",
    "binary_partition",
    "bop",
    "bop_second_order",
    "clip_latent_weights",
    "clip_latent_weights_by_spread",
    "compare",
    "data",
    "distributed",
    "export",
    "get_scale",
    "get_surrogate",
    "mean_abs",
    "mean_abs_dev",
    "models",
    "nn",
    "packed",
    "presets",
    "reduce_axes",
    "scale_adaptive",
    "scale_by_glorot_lr",
    "scale_by_mean_abs_dev",
    "std",
    "summary",
    "train",
]
