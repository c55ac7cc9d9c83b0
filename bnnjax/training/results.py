"""The results of a finished run: accuracies over seeds, best epochs, memory.

:func:`bnnjax.train.run` returns one JSON-ready dict; the functions here
compute its parts from the per-epoch, per-seed records of
``metrics.jsonl``, the test evaluation and the final state.

Accuracies are exact: every one is ``correct / total`` computed from
integer counts (float64, the double nearest the fraction, so 963 of 1000
is ``0.963``), and the counts are kept beside it
(:func:`accuracy_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bnnjax.optim import REAL
from bnnjax.summary import summary as memory_summary
from bnnjax.training.config import TrainConfig
from bnnjax.training.step import Evaluation, TrainState

__all__ = [
    "accuracy_fields",
    "memory_numbers",
    "run_summary",
]


def accuracy_fields(split: str, correct: int, total: int) -> dict[str, Any]:
    """An accuracy and the counts it is computed from.

    Args:
      split: the key prefix (``"train"``, ``"val"``, ``"test"``).
      correct: correctly classified examples.
      total: examples.

    Returns:
      ``{f"{split}_accuracy": correct / total, f"{split}_correct":
      correct, f"{split}_total": total}``; the accuracy is the double
      nearest the exact fraction (``0.0`` when ``total`` is 0).

    Example:
      >>> accuracy_fields("test", 963, 1000)
      {'test_accuracy': 0.963, 'test_correct': 963, 'test_total': 1000}
    """
    correct, total = int(correct), int(total)
    return {
        f"{split}_accuracy": correct / total if total else 0.0,
        f"{split}_correct": correct,
        f"{split}_total": total,
    }


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


def _accuracy_over_seeds(
    split: str, correct: Sequence[int], total: Sequence[int]
) -> dict[str, Any]:
    """Exact accuracies from per-seed counts, pooled and per seed.

    ``{split}_accuracy`` is the mean over seeds; every seed sees the same
    split, so it equals the pooled ``{split}_correct / {split}_total``
    and is computed that way, exactly.
    """
    per_seed = [
        accuracy_fields(split, c, t)
        for c, t in zip(correct, total, strict=True)
    ]
    accuracies = [f[f"{split}_accuracy"] for f in per_seed]
    return {
        **accuracy_fields(split, sum(correct), sum(total)),
        f"{split}_accuracy_std": _mean_std(accuracies)[1],
        f"{split}_accuracy_per_seed": accuracies,
        f"{split}_correct_per_seed": [int(c) for c in correct],
        f"{split}_total_per_seed": [int(t) for t in total],
    }


def _add_mean_std(
    results: dict[str, Any], name: str, values: Sequence[float]
) -> None:
    """Adds ``name`` (the mean), ``{name}_std`` and ``{name}_per_seed``."""
    mean, std = _mean_std(values)
    results[name] = mean
    results[f"{name}_std"] = std
    results[f"{name}_per_seed"] = list(values)


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
    test: Evaluation,
    steps: int,
    steps_per_epoch: int,
    selected_epochs: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The settings, accuracies, losses, best epochs and throughput of a run.

    Args:
      config: the run.
      records: every epoch's metrics records, one per seed and epoch.
      test: the final test evaluation (per seed).
      steps: steps done.
      steps_per_epoch: steps in one epoch.
      selected_epochs: per seed, the epoch whose parameters ``test`` was
        evaluated on (``select="best_val"``); ``None``: the last.

    Returns:
      A JSON-ready dict: the run's settings, then ``test_accuracy``,
      ``val_accuracy``, ``test_loss`` and ``val_loss`` (means over seeds,
      with ``_std`` and ``_per_seed``; validation at the selected epoch,
      listed in ``selected_epoch_per_seed``), the
      counts behind each accuracy (``test_correct`` and ``test_total``
      pooled over seeds, so ``test_accuracy == test_correct /
      test_total``, and ``test_correct_per_seed``,
      ``test_total_per_seed``; the same for ``val_``),
      ``best_val_epoch_per_seed``, ``best_val_accuracy_per_seed``,
      ``train_seconds`` and ``examples_per_second``.
    """
    seeds = list(config.seeds)
    lr, real_lr = config.learning_rates()
    if selected_epochs is None:
        selected_epochs = [config.epochs] * len(seeds)
    chosen = dict(zip(seeds, selected_epochs, strict=True))
    selected = [r for r in records if r["epoch"] == chosen[r["seed"]]]
    selected.sort(key=lambda r: seeds.index(r["seed"]))
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
        "init_from": config.init_from,
        "teacher": config.teacher,
        "select": config.select,
        "selected_epoch_per_seed": [int(e) for e in selected_epochs],
    }
    results.update(
        _accuracy_over_seeds(
            "test", [int(c) for c in test.correct], [test.total] * len(seeds)
        )
    )
    if all("val_correct" in r for r in selected):
        results.update(
            _accuracy_over_seeds(
                "val",
                [r["val_correct"] for r in selected],
                [r["val_total"] for r in selected],
            )
        )
    else:  # records of a run directory written before counts were kept
        _add_mean_std(
            results, "val_accuracy", [r["val_accuracy"] for r in selected]
        )
    _add_mean_std(results, "test_loss", [float(v) for v in test.loss])
    _add_mean_std(results, "val_loss", [r["val_loss"] for r in selected])
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
