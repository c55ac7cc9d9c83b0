"""Named training recipes: the published setups, one name each.

A :class:`Recipe` is a set of :class:`~bnnjax.train.TrainConfig` fields
(architecture, method, optimizer, schedule, epochs, augmentation, loss)
under a name; ``bnnjax train --recipe NAME`` starts from them and any flag
given beside it overrides its field. :func:`get_recipe` looks one up,
:data:`RECIPES` holds them all.

Each recipe names the paper it follows, the result published there, and
where bnnjax's version differs from the paper's code (so a number trained
with it is compared with the right one).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from bnnjax.training.config import TrainConfig

__all__ = ["RECIPES", "RECIPE_NAMES", "Recipe", "get_recipe"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """A named set of training settings.

    Attributes:
      name: the name ``--recipe`` takes.
      summary: one line: the network, the dataset, the length (every
        recipe trains binary weights and activations).
      settings: :class:`~bnnjax.train.TrainConfig` fields and their values.
      reference: the paper (and code) the settings follow.
      published: the result reported there, or ``""`` where none is.
      deviations: where the settings or the network differ from the
        reference's code.
    """

    name: str
    summary: str
    settings: Mapping[str, Any]
    reference: str
    published: str = ""
    deviations: str = ""

    def config(self, **overrides: Any) -> TrainConfig:
        """The recipe's :class:`~bnnjax.train.TrainConfig`.

        Args:
          **overrides: fields that replace the recipe's (or add to them),
            e.g. ``dataset="cifar:/data/cifar-10"``, ``epochs=10``,
            ``seeds=(0, 1, 2)``.

        Returns:
          The validated config.

        Raises:
          ValueError: for invalid fields or values.

        Example:
          >>> config = get_recipe("irnet-resnet20-cifar10").config(epochs=2)
          >>> config.model, config.optimizer, config.epochs
          ('resnet20', 'sgd', 2)
        """
        return TrainConfig.from_dict({**self.settings, **overrides})


_CIFAR10 = {"dataset": "cifar10", "augment": "crop_flip"}
# The 30-minute MLP records: permutation-invariant MNIST, founding method.
_MLP_MNIST = {
    "dataset": "mnist",
    "model": "mlp",
    "hidden": (2048, 2048, 2048),
    "method": "scaled_sigmoid",
    "input_dropout": 0.1,
}

RECIPES: Mapping[str, Recipe] = types.MappingProxyType(
    {
        recipe.name: recipe
        for recipe in (
            Recipe(
                name="binarynet-vgg-cifar10",
                summary="BinaryNet's VGG-like CNN on CIFAR-10, 500 epochs",
                settings={
                    **_CIFAR10,
                    "augment": "none",
                    "model": "cnn",
                    "method": "bnn",
                    "epochs": 500,
                    "batch_size": 50,
                    "optimizer": "adam",
                    "learning_rate": 1e-3,
                    "real_learning_rate": 1e-3,
                    "schedule": "exponential",
                    "final_lr_fraction": 3e-3,
                    "loss": "squared_hinge",
                },
                reference="Courbariaux, Hubara et al. 2016, "
                "arXiv:1602.02830 (Theano code, cifar10.py)",
                published="88.60% test accuracy (11.40% error, no "
                "augmentation)",
                deviations="inputs are scaled to [0, 1] (the paper "
                "whitens them with global contrast normalisation and "
                "ZCA); no per-layer learning-rate scale (the paper "
                "scales each layer's rate by its Glorot range); no biases "
                "before batch norm.",
            ),
            Recipe(
                name="irnet-resnet20-cifar10",
                summary="ResNet-20 on CIFAR-10 with IR-Net, 400 epochs",
                settings={
                    **_CIFAR10,
                    "model": "resnet20",
                    "method": "irnet",
                    "epochs": 400,
                    "batch_size": 128,
                    "optimizer": "sgd",
                    "learning_rate": 0.1,
                    "real_learning_rate": 0.1,
                    "schedule": "cosine",
                    "weight_decay": 1e-4,
                },
                reference="Qin et al. 2020, arXiv:1909.10788 (code: "
                "htqin/IR-Net, CIFAR-10/ResNet20/1w1a/trainer.py)",
                published="86.5% test accuracy",
                deviations="weight decay applies to the real parameters "
                "only (IR-Net's SGD decays the latent weights too); "
                "EDE's sharpness follows bnnjax's irnet schedule over "
                "the run's progress; inputs are scaled to [0, 1] without "
                "per-channel normalisation.",
            ),
            Recipe(
                name="irnet-resnet18-cifar10",
                summary="ResNet-18 on CIFAR-10 with IR-Net, 400 epochs",
                settings={
                    **_CIFAR10,
                    "model": "resnet18",
                    "method": "irnet",
                    "epochs": 400,
                    "batch_size": 128,
                    "optimizer": "sgd",
                    "learning_rate": 0.1,
                    "real_learning_rate": 0.1,
                    "schedule": "cosine",
                    "weight_decay": 1e-4,
                },
                reference="Qin et al. 2020, arXiv:1909.10788 (settings "
                "of its CIFAR-10 trainer)",
                published="91.5% test accuracy",
                deviations="as irnet-resnet20-cifar10.",
            ),
            Recipe(
                name="bireal-resnet18-cifar10",
                summary="Bi-Real ResNet-18 on CIFAR-10, 256 epochs",
                settings={
                    **_CIFAR10,
                    "model": "resnet18",
                    "method": "bireal",
                    "epochs": 256,
                    "batch_size": 256,
                    "optimizer": "adam",
                    "learning_rate": 1e-3,
                    "real_learning_rate": 1e-3,
                    "schedule": "linear",
                    "weight_decay": 0.0,
                    "label_smoothing": 0.1,
                },
                reference="Liu et al. 2018, arXiv:1808.00278 (training "
                "settings of its PyTorch code, liuzechun/Bi-Real-net)",
                published="",
                deviations="the paper and its code train on ImageNet "
                "(batch 512, 224x224 crops); this is their optimizer, "
                "schedule, epochs and label smoothing on CIFAR-10 at "
                "batch 256, without the two-step (real-activation first) "
                "initialisation.",
            ),
            Recipe(
                name="cnn-mnist-30min",
                summary="BinaryNet's CNN at 1/4 width on MNIST, 11 epochs",
                settings={
                    "dataset": "mnist",
                    "model": "cnn",
                    "width": 0.25,
                    "method": "scaled_sigmoid",
                    "epochs": 11,
                    "augment": "shift",
                },
                reference="bnnjax (the 30-minute binary CNN run on the "
                "documentation's accuracy page: 99.32% over 3 seeds, each "
                "trained alone on 2 CPU cores)",
            ),
            Recipe(
                name="mlp-weights-mnist-30min",
                summary="binary weights, 3x2048 MLP, dropout, 18 epochs",
                settings={
                    **_MLP_MNIST,
                    "binary_activations": False,
                    "epochs": 18,
                    "dropout": 0.2,
                },
                reference="bnnjax (the 30-minute binary-weights MLP run "
                "on the documentation's accuracy page: 98.79% over 3 "
                "seeds; BinaryConnect reports 98.82% after 250 epochs)",
            ),
            Recipe(
                name="mlp-binary-mnist-30min",
                summary="binary weights and activations, 3x2048 MLP, 20 epochs",
                settings={
                    **_MLP_MNIST,
                    "binary_activations": True,
                    "epochs": 20,
                },
                reference="bnnjax (the 30-minute fully binary MLP run on "
                "the documentation's accuracy page: 98.52% over 3 seeds; "
                "BinaryNet reports 99.04% after 1000 epochs)",
            ),
        )
    }
)
"""Every recipe, by name."""

RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe named ``name``.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            f"Unknown recipe {name!r}; expected one of {list(RECIPE_NAMES)}."
        ) from None
