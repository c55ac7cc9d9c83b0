"""The results of a finished run: accuracies over seeds, best epochs, memory.

:func:`bnnjax.train.run` returns one JSON-ready dict; the functions here
compute its parts from the per-epoch, per-seed records of
``metrics.jsonl``, the test evaluation and the final state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bnnjax.optim import REAL
from bnnjax.summary import summary as memory_summary
from bnnjax.training.config import TrainConfig
from bnnjax.training.step import TrainState

__all__ = [
    "memory_numbers",
    "run_summary",
]


def memory_numbers(state: TrainState, binary: bool) -> dict[str, Any]:
    """The memory summary of the first seed's model.

    Args:
      state: the stacked state (host arrays).
      binary: whether the method trains binary kernels (else every
        parameter counts as real).

    Returns:
      ``binary_params``, ``real_params``, ``latent_bytes`` and
      ``packed_bytes`` (the binary kernels while training and deployed),
      ``train_bytes``, ``deploy_bytes`` and ``compression_ratio``.
    """
    one = jax.tree.map(lambda x: x[0], state)
    variables = {"params": one.params, "batch_stats": one.batch_stats}
    labels = None if binary else jax.tree.map(lambda _: REAL, one.params)
    s = memory_summary(variables, labels=labels)
    binary_rows = [r for r in s.rows if r.kind != REAL]
    return {
        "binary_params": s.binary_params,
        "real_params": s.real_params,
        "latent_bytes": sum(r.train_bytes for r in binary_rows),
        "packed_bytes": sum(r.deploy_bytes for r in binary_rows),
        "train_bytes": s.train_bytes,
        "deploy_bytes": s.deploy_bytes,
        "compression_ratio": s.compression_ratio,
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std())


def _best_epochs(
    records: Sequence[Mapping[str, Any]], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """Per seed, the epoch of best validation accuracy (earliest on a tie)."""
    best = []
    for seed in seeds:
        rows = [r for r in records if r["seed"] == seed]
        top = max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))
        best.append(
            {"epoch": top["epoch"], "val_accuracy": top["val_accuracy"]}
        )
    return best


def run_summary(
    config: TrainConfig,
    records: Sequence[Mapping[str, Any]],
    *,
    test_loss: np.ndarray,
    test_accuracy: np.ndarray,
    steps: int,
    steps_per_epoch: int,
) -> dict[str, Any]:
    """The settings, accuracies, losses, best epochs and throughput of a run.

    Args:
      config: the run.
      records: every epoch's metrics records, one per seed and epoch.
      test_loss: the final test loss per seed.
      test_accuracy: the final test accuracy per seed.
      steps: steps done.
      steps_per_epoch: steps in one epoch.

    Returns:
      A JSON-ready dict: the run's settings, then ``test_accuracy``,
      ``val_accuracy``, ``test_loss`` and ``val_loss`` (means over seeds,
      with ``_std`` and ``_per_seed``; validation at the last epoch),
      ``best_val_epoch_per_seed``, ``best_val_accuracy_per_seed``,
      ``train_seconds`` and ``examples_per_second``.
    """
    seeds = list(config.seeds)
    lr, real_lr = config.learning_rates()
    last = [r for r in records if r["epoch"] == config.epochs]
    last.sort(key=lambda r: seeds.index(r["seed"]))
    best = _best_epochs(records, seeds)
    epoch_seconds = {r["epoch"]: r["train_seconds"] for r in records}
    train_seconds = float(sum(epoch_seconds.values()))
    examples = len(seeds) * config.epochs * steps_per_epoch * config.batch_size
    results: dict[str, Any] = {
        "method": config.method,
        "method_options": config.options,
        "model": config.model,
        "dataset": config.dataset,
        "binary_activations": config.activations_binary,
        "seeds": seeds,
        "epochs": config.epochs,
        "steps": steps,
        "batch_size": config.batch_size,
        "learning_rate": lr,
        "real_learning_rate": real_lr,
    }
    for name, values in (
        ("test_accuracy", [float(v) for v in test_accuracy]),
        ("val_accuracy", [r["val_accuracy"] for r in last]),
        ("test_loss", [float(v) for v in test_loss]),
        ("val_loss", [r["val_loss"] for r in last]),
    ):
        mean, std = _mean_std(values)
        results[name] = mean
        results[f"{name}_std"] = std
        results[f"{name}_per_seed"] = values
    results.update(
        {
            "best_val_epoch_per_seed": [b["epoch"] for b in best],
            "best_val_accuracy_per_seed": [b["val_accuracy"] for b in best],
            "train_seconds": train_seconds,
            "examples_per_second": examples / train_seconds
            if train_seconds > 0
            else 0.0,
        }
    )
    return results
