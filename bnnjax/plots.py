"""Plots of a training run or a method comparison, as PNG files.

matplotlib is imported inside :func:`plot_run` and :func:`plot_comparison`
and drawn through its Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), so importing this module needs no matplotlib and
changes no global backend.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["plot_comparison", "plot_run", "training_minutes"]


def plot_run(
    records: Sequence[Mapping[str, Any]],
    latents: Mapping[str, npt.ArrayLike],
    out_dir: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    seed: int | None = None,
    test_accuracy: Mapping[int, float] | None = None,
) -> list[str]:
    """Writes the curves, flip and update ratios and latent histograms.

    Files (in ``out_dir``):

    * ``curves.png``: training and validation loss and accuracy per epoch,
      one line per seed;
    * ``flip_ratio.png``: per epoch, the fraction of binary weights whose
      sign changed (left) and the update-to-weight ratio of the latent
      kernels, ``||w_end - w_start|| / ||w_start||`` (right,
      ``bnnjax.training.diagnostics.update_ratio``); all kernels one
      line per seed, and per layer for ``seed``; log scales;
    * ``latent_histograms.png``: one histogram per layer of the latent
      kernels given in ``latents`` (number of weights per bin), titled
      with the epoch and seed they come from;
    * ``accuracy_time.png`` (when the records hold ``train_seconds``):
      validation accuracy per seed against training wall-clock minutes
      per seed (the epochs' ``train_seconds``, which cover every seed
      trained together, summed and divided by the number of seeds), with
      ``test_accuracy`` marked at the end.

    The right panel of ``flip_ratio.png`` shows how far the latent
    weights still move relative to their size (the effective learning
    rate when the forward pass ignores the kernels' scale, as in the
    default method), which falls with the schedule; the fraction of
    weights with a surrogate gradient (``gradient_fraction`` in
    ``metrics.jsonl``) is not plotted: with a window that follows the
    weights' spread it stays near 1 through a run.

    Args:
      records: the per-epoch, per-seed metrics (``metrics.jsonl``).
      latents: layer name -> latent kernel values (e.g. of the first seed
        at the end of training).
      out_dir: an existing directory.
      epoch: the epoch ``latents`` are from; ``None``: the last epoch in
        ``records``.
      seed: the seed ``latents`` are from, whose per-layer ratios are
        drawn too; ``None``: the first record's (:func:`bnnjax.train.run`
        passes its first seed).
      test_accuracy: seed -> test accuracy, marked at the end of
        ``accuracy_time.png``; ``None``: not marked.

    Returns:
      The paths written, or ``[]`` if matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return []

    out_dir = os.fspath(out_dir)
    by_seed: dict[int, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for record in records:
        by_seed[int(record["seed"])].append(record)
    for rows in by_seed.values():
        rows.sort(key=lambda r: r["epoch"])
    seeds = sorted(by_seed)
    if epoch is None and records:
        epoch = max(int(r["epoch"]) for r in records)
    if seed is None and records:
        seed = int(records[0]["seed"])
    latents_title = _latents_title(epoch, seed)
    paths = []

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        paths.append(path)

    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for s in seeds:
        rows = by_seed[s]
        epochs = [r["epoch"] for r in rows]
        for split, style in (("train", "-"), ("val", "--")):
            loss_ax.plot(
                epochs,
                [r[f"{split}_loss"] for r in rows],
                style,
                label=f"{split} (seed {s})",
            )
            acc_ax.plot(
                epochs,
                [r[f"{split}_accuracy"] for r in rows],
                style,
                label=f"{split} (seed {s})",
            )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if seeds:
            ax.legend(fontsize="small")
    save(fig, "curves.png")

    fig = Figure(figsize=(10, 4))
    flip_ax, update_ax = fig.subplots(1, 2)
    for ax, key in ((flip_ax, "flip_ratio"), (update_ax, "update_ratio")):
        _ratio_lines(ax, by_seed, key, first=seed)
    flip_ax.set(
        xlabel="epoch",
        ylabel="fraction of binary weights",
        title="sign flips per epoch",
    )
    update_ax.set(
        xlabel="epoch",
        ylabel="||w_end - w_start|| / ||w_start||",
        title="latent-weight update per epoch (relative)",
    )
    for ax in (flip_ax, update_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if seeds:
            ax.legend(fontsize="small")
    save(fig, "flip_ratio.png")

    if latents:
        n = len(latents)
        cols = min(n, 3)
        rows_n = -(-n // cols)
        fig = Figure(figsize=(4 * cols, 3 * rows_n + 0.4))
        axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
        for ax, (layer, values) in zip(axes, latents.items(), strict=False):
            values = np.asarray(values, np.float64).ravel()
            # One filled step outline per layer (Axes.stairs), not a
            # patch per bin (Axes.hist): the same picture, drawn and laid
            # out several times faster. Non-finite values are left out
            # of the bins, as Axes.hist leaves out NaN.
            finite = values[np.isfinite(values)]
            if finite.size:
                counts, edges = np.histogram(finite, bins=100)
                ax.stairs(counts, edges, fill=True, color="tab:blue")
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.set(
                title=f"{layer} ({values.size:,} weights)",
                xlabel="latent weight w",
                ylabel="weights per bin",
            )
        for ax in axes[n:]:
            ax.set_visible(False)
        fig.suptitle(latents_title)
        save(fig, "latent_histograms.png")

    if records and all("train_seconds" in r for r in records):
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        _accuracy_time(ax, records, by_seed, test_accuracy or {})
        save(fig, "accuracy_time.png")
    return paths


def training_minutes(
    records: Sequence[Mapping[str, Any]],
) -> dict[int, float]:
    """Epoch -> training wall-clock minutes per seed up to its end.

    An epoch's ``train_seconds`` covers every seed trained with it; the
    minutes per seed are their running sum divided by the seed count.
    """
    seconds: dict[int, float] = {}
    seeds = set()
    for r in records:
        seconds[int(r["epoch"])] = float(r["train_seconds"])
        seeds.add(int(r["seed"]))
    total, minutes = 0.0, {}
    for e in sorted(seconds):
        total += seconds[e]
        minutes[e] = total / 60.0 / max(len(seeds), 1)
    return minutes


def _accuracy_time(
    ax: Any,
    records: Sequence[Mapping[str, Any]],
    by_seed: Mapping[int, Sequence[Mapping[str, Any]]],
    test_accuracy: Mapping[int, float],
) -> None:
    """Validation accuracy per seed against training minutes per seed."""
    minutes = training_minutes(records)
    for i, (s, rows) in enumerate(sorted(by_seed.items())):
        color = f"C{i}"
        xs = [minutes[int(r["epoch"])] for r in rows]
        ax.plot(
            xs,
            [r["val_accuracy"] for r in rows],
            "o-",
            color=color,
            markersize=3,
            label=f"val (seed {s})",
        )
        if s in test_accuracy and xs:
            ax.plot(
                [xs[-1]],
                [test_accuracy[s]],
                "*",
                color=color,
                markersize=10,
                label=f"test (seed {s})",
            )
    ax.set(
        xlabel=f"training minutes per seed ({len(by_seed)} trained together)",
        ylabel="accuracy",
        title="accuracy against training time",
    )
    ax.grid(alpha=0.3)
    if by_seed:
        ax.legend(fontsize="small")


def _latents_title(epoch: int | None, seed: int | None) -> str:
    """``"latent kernels after epoch 3, seed 0"`` (unknown parts left out)."""
    parts = []
    if epoch is not None:
        parts.append(f"after epoch {epoch}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return "latent kernels" + (" " + ", ".join(parts) if parts else "")


def _ratio_lines(
    ax: Any,
    by_seed: Mapping[int, Sequence[Mapping[str, Any]]],
    key: str,
    *,
    first: int | None,
) -> None:
    """Per-epoch ``key`` of every seed, and ``{key}_layers`` of ``first``.

    Epochs without ``key`` (records written before it was measured) are
    left out; the axis is logarithmic when some value is positive.
    """
    seeds = sorted(by_seed)
    values: list[float] = []
    for seed in seeds:
        rows = [r for r in by_seed[seed] if key in r]
        ys = [r[key] for r in rows]
        ax.plot([r["epoch"] for r in rows], ys, label=f"all (seed {seed})")
        values += ys
    if seeds:
        first = first if first is not None and first in by_seed else seeds[0]
        rows = [r for r in by_seed[first] if f"{key}_layers" in r]
        for layer in rows[0][f"{key}_layers"] if rows else {}:
            ax.plot(
                [r["epoch"] for r in rows],
                [r[f"{key}_layers"][layer] for r in rows],
                ":",
                label=f"{layer} (seed {first})",
            )
    if any(v > 0 for v in values):
        ax.set_yscale("log")


def _by_method(
    records: Sequence[Mapping[str, Any]],
) -> dict[str, list[Mapping[str, Any]]]:
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        methods.setdefault(str(record["method"]), []).append(record)
    return methods


def _band(ax: Any, curves: list[list[float]], label: str, color: Any) -> None:
    """Mean line and min-max band over seeds (curves of equal length)."""
    values = np.asarray(curves, np.float64)
    epochs = np.arange(1, values.shape[1] + 1)
    ax.plot(epochs, values.mean(0), label=label, color=color)
    if len(values) > 1:
        ax.fill_between(
            epochs, values.min(0), values.max(0), color=color, alpha=0.2
        )


def plot_comparison(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    target_accuracy: float | None = None,
    title: str = "",
    prefix: str = "",
) -> list[str]:
    """Writes the plots of a method comparison.

    Files (in ``out_dir``, names prefixed by ``prefix``):

    * ``val_accuracy.png``: validation accuracy against epoch, one line per
      method (mean over seeds) with a band from the lowest to the highest
      seed, and the target accuracy as a dashed line; a second panel
      zooms on the last half of the epochs;
    * ``flip_ratio.png``: fraction of binary weights whose sign changed in
      each epoch (mean and min-max band over seeds; log scale), for the
      methods with binary weights;
    * ``test_accuracy.png``: test accuracy per seed (dots) with the mean
      and sample standard deviation (bar) per method.

    Args:
      records: per-seed records of the final runs, as
        :meth:`bnnjax.compare.RunResult.records` gives them: ``method``,
        ``seed``, ``val_accuracy`` and ``flip_ratio`` (lists over epochs,
        ``flip_ratio`` may be ``None``) and ``test_accuracy``.
      out_dir: directory (created if missing).
      target_accuracy: drawn on the validation plot when given.
      title: figure title (e.g. the dataset and architecture).
      prefix: file-name prefix, e.g. ``"binary_weights_"``.

    Returns:
      The paths written, or ``[]`` if matplotlib is not installed.

    Raises:
      ValueError: if ``records`` is empty.
    """
    if not records:
        raise ValueError("plot_comparison: no records to plot.")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    methods = _by_method(records)
    colors = {name: f"C{i % 10}" for i, name in enumerate(methods)}
    styles: dict[str, Literal["-", "--"]] = {
        name: "-" if i < 10 else "--" for i, name in enumerate(methods)
    }
    paths = []

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        if title:
            fig.suptitle(title, fontsize="medium")
        fig.tight_layout()
        path = os.path.join(out_dir, prefix + name)
        fig.savefig(path, dpi=100)
        paths.append(path)

    fig = Figure(figsize=(12, 4.5))
    full_ax, zoom_ax = fig.subplots(1, 2)
    for name, rows in methods.items():
        curves = [list(r["val_accuracy"]) for r in rows]
        for ax in (full_ax, zoom_ax):
            _band(ax, curves, name, colors[name])
            ax.lines[-1].set_linestyle(styles[name])
    epochs = max(len(r["val_accuracy"]) for r in records)
    if epochs > 1:
        zoom_ax.set_xlim(max(1, epochs // 2), epochs)
    tail = [
        v
        for r in records
        for v in r["val_accuracy"][max(0, epochs // 2 - 1) :]
        if np.isfinite(v)
    ]
    if tail:
        low, high = min(tail), max(tail)
        pad = max(0.002, 0.1 * (high - low))
        zoom_ax.set_ylim(low - pad, high + pad)
    for ax, what in ((full_ax, "all epochs"), (zoom_ax, "last half")):
        if target_accuracy is not None:
            ax.axhline(
                target_accuracy,
                color="black",
                linestyle=":",
                linewidth=0.8,
                label=f"target {100 * target_accuracy:g}%",
            )
        ax.set(
            xlabel="epoch",
            ylabel="validation accuracy",
            title=f"validation accuracy ({what}; band: min-max over seeds)",
        )
        ax.grid(alpha=0.3)
    full_ax.legend(fontsize="small")
    save(fig, "val_accuracy.png")

    binary = {
        name: rows
        for name, rows in methods.items()
        if all(r.get("flip_ratio") is not None for r in rows)
    }
    if binary:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for name, rows in binary.items():
            curves = [[max(v, 1e-7) for v in r["flip_ratio"]] for r in rows]
            _band(ax, curves, name, colors[name])
            ax.lines[-1].set_linestyle(styles[name])
        ax.set_yscale("log")
        ax.set(
            xlabel="epoch",
            ylabel="fraction of binary weights (floor 1e-7)",
            title="sign flips per epoch (band: min-max over seeds)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, "flip_ratio.png")

    tested = {
        name: [r["test_accuracy"] for r in rows]
        for name, rows in methods.items()
        if all(r.get("test_accuracy") is not None for r in rows)
    }
    if tested:
        fig = Figure(figsize=(max(6, 0.8 * len(tested) + 2), 4.5))
        ax = fig.subplots()
        for x, (name, accuracies) in enumerate(tested.items()):
            values = 100 * np.asarray(accuracies, np.float64)
            ax.scatter(
                np.full(len(values), x), values, color=colors[name], s=14
            )
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            ax.errorbar(
                x + 0.15,
                values.mean(),
                yerr=std,
                fmt="o",
                color="black",
                capsize=3,
                markersize=4,
            )
        ax.set_xticks(range(len(tested)))
        ax.set_xticklabels(list(tested), rotation=30, ha="right")
        ax.set(
            ylabel="test accuracy (%)",
            title="test accuracy: seeds (dots), mean ± std (black)",
        )
        ax.grid(alpha=0.3, axis="y")
        save(fig, "test_accuracy.png")
    return paths
