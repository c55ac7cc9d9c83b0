"""Training binary linen models: config, jitted steps, diagnostics, runs.

The public face of the training harness; the code lives in
``bnnjax.training``, one module per idea:

* :class:`TrainConfig` (``bnnjax.training.config``): a frozen,
  validated description of one run. It holds names (``method="bnn"``,
  ``optimizer="adam"``) and turns them into objects
  (:attr:`TrainConfig.preset`, :meth:`TrainConfig.make_optimizer`,
  :meth:`TrainConfig.schedule_fn`); the rest of the library passes
  objects.
* :func:`build_model`, :func:`init_state`, :func:`make_train_step`,
  :func:`make_eval_step`, :func:`evaluate` (``bnnjax.training.step``):
  pure, jit-able pieces. Every array in a :class:`TrainState` carries a
  leading *seed* axis: several seeds train at once, in one process, with
  ``jax.vmap`` (one model, optimizer state and batch order per seed;
  training seeds ``[0, 1]`` together gives each seed's result alone).
* Diagnostics (``bnnjax.training.diagnostics``), pure functions of one
  seed's parameters: :func:`latent_kernels`, :func:`kernel_signs`,
  :func:`flip_ratio`, :func:`gradient_fraction`, :func:`latent_stats`.
* :func:`run` (``bnnjax.training.loop``): the whole job (data,
  training, per-epoch metrics and checkpoints in a run directory, resume,
  plots, final test accuracy). It never prints; progress goes to the
  callbacks and the result is a dict. :func:`load_checkpoint`
  (``bnnjax.training.rundir``) reads a run back.

* Losses (``bnnjax.training.losses``): :func:`cross_entropy` (with
  label smoothing), BinaryNet's :func:`squared_hinge` and the
  :func:`distillation` loss of ``TrainConfig.teacher``; schedules and
  base optimizers (``bnnjax.training.optimization``):
  :func:`make_schedule` (warm-up, cosine, linear, BinaryNet's exponential
  decay), :func:`make_base_optimizer` (weight decay).
* Recipes (``bnnjax.training.recipes``): :class:`Recipe`, the published
  setups by name in :data:`RECIPES`, :func:`get_recipe`.

The loss is ``TrainConfig.loss`` on the model's logits. Training
progress ``step / total_steps`` is passed to the model at every step as
a traced scalar (annealed surrogates such as IR-Net's EDE use it), so the
step compiles once.
"""

from __future__ import annotations

from bnnjax.training.config import DEFAULT_EPOCHS as DEFAULT_EPOCHS
from bnnjax.training.config import DEFAULT_HIDDEN as DEFAULT_HIDDEN
from bnnjax.training.config import MODEL_NAMES as MODEL_NAMES
from bnnjax.training.config import AugmentName as AugmentName
from bnnjax.training.config import MethodName as MethodName
from bnnjax.training.config import ModelName as ModelName
from bnnjax.training.config import OptimizerName as OptimizerName
from bnnjax.training.config import ScheduleName as ScheduleName
from bnnjax.training.config import TrainConfig as TrainConfig
from bnnjax.training.config import check_batch_split as check_batch_split
from bnnjax.training.diagnostics import (
    GRADIENT_THRESHOLD as GRADIENT_THRESHOLD,
)
from bnnjax.training.diagnostics import flip_ratio as flip_ratio
from bnnjax.training.diagnostics import gradient_fraction as gradient_fraction
from bnnjax.training.diagnostics import kernel_signs as kernel_signs
from bnnjax.training.diagnostics import latent_kernels as latent_kernels
from bnnjax.training.diagnostics import latent_stats as latent_stats
from bnnjax.training.epoch import NonFiniteLossError as NonFiniteLossError
from bnnjax.training.epoch import StepInfo as StepInfo
from bnnjax.training.loop import VALIDATION_SPLIT_SEED as VALIDATION_SPLIT_SEED
from bnnjax.training.loop import run as run
from bnnjax.training.losses import LossName as LossName
from bnnjax.training.losses import cross_entropy as cross_entropy
from bnnjax.training.losses import distillation as distillation
from bnnjax.training.losses import squared_hinge as squared_hinge
from bnnjax.training.optimization import (
    make_base_optimizer as make_base_optimizer,
)
from bnnjax.training.optimization import make_schedule as make_schedule
from bnnjax.training.recipes import RECIPE_NAMES as RECIPE_NAMES
from bnnjax.training.recipes import RECIPES as RECIPES
from bnnjax.training.recipes import Recipe as Recipe
from bnnjax.training.recipes import get_recipe as get_recipe
from bnnjax.training.rundir import default_out_dir as default_out_dir
from bnnjax.training.rundir import load_checkpoint as load_checkpoint
from bnnjax.training.step import Teacher as Teacher
from bnnjax.training.step import TrainState as TrainState
from bnnjax.training.step import abstract_params as abstract_params
from bnnjax.training.step import build_model as build_model
from bnnjax.training.step import evaluate as evaluate
from bnnjax.training.step import init_state as init_state
from bnnjax.training.step import make_eval_step as make_eval_step
from bnnjax.training.step import make_train_step as make_train_step

__all__ = [
    "AugmentName",
    "DEFAULT_EPOCHS",
    "DEFAULT_HIDDEN",
    "GRADIENT_THRESHOLD",
    "MODEL_NAMES",
    "RECIPES",
    "RECIPE_NAMES",
    "VALIDATION_SPLIT_SEED",
    "LossName",
    "MethodName",
    "ModelName",
    "NonFiniteLossError",
    "OptimizerName",
    "Recipe",
    "ScheduleName",
    "StepInfo",
    "Teacher",
    "TrainConfig",
    "TrainState",
    "abstract_params",
    "build_model",
    "check_batch_split",
    "cross_entropy",
    "default_out_dir",
    "distillation",
    "evaluate",
    "flip_ratio",
    "get_recipe",
    "gradient_fraction",
    "init_state",
    "kernel_signs",
    "latent_kernels",
    "latent_stats",
    "load_checkpoint",
    "make_base_optimizer",
    "make_eval_step",
    "make_schedule",
    "make_train_step",
    "run",
    "squared_hinge",
]
