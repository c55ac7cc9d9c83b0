"""Plots of a training run, written as PNG files with matplotlib.

matplotlib is imported inside :func:`plot_run` and drawn through its Agg
canvas directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so
importing this module needs no matplotlib and changes no global backend.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_run"]


def plot_run(
    records: Sequence[Mapping[str, Any]],
    latents: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike,
) -> list[str]:
    """Writes the curves, flip ratios and latent-weight histograms.

    Files (in ``out_dir``):

    * ``curves.png``: training and validation loss and accuracy per epoch,
      one line per seed;
    * ``flip_ratio.png``: fraction of binary weights whose sign changed in
      each epoch (all kernels, one line per seed) and per layer (first
      seed), and the fraction of latent weights with a non-negligible
      surrogate gradient;
    * ``latent_histograms.png``: one histogram per layer of the latent
      kernels given in ``latents``.

    Args:
      records: the per-epoch, per-seed metrics (``metrics.jsonl``).
      latents: layer name -> latent kernel values (e.g. of the first seed
        at the end of training).
      out_dir: an existing directory.

    Returns:
      The paths written, or ``[]`` if matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []

    out_dir = os.fspath(out_dir)
    by_seed: dict[int, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for record in records:
        by_seed[int(record["seed"])].append(record)
    for rows in by_seed.values():
        rows.sort(key=lambda r: r["epoch"])
    seeds = sorted(by_seed)
    paths = []

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        paths.append(path)

    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for seed in seeds:
        rows = by_seed[seed]
        epochs = [r["epoch"] for r in rows]
        for split, style in (("train", "-"), ("val", "--")):
            loss_ax.plot(
                epochs,
                [r[f"{split}_loss"] for r in rows],
                style,
                label=f"{split} (seed {seed})",
            )
            acc_ax.plot(
                epochs,
                [r[f"{split}_accuracy"] for r in rows],
                style,
                label=f"{split} (seed {seed})",
            )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if seeds:
            ax.legend(fontsize="small")
    save(fig, "curves.png")

    fig = Figure(figsize=(10, 4))
    flip_ax, grad_ax = fig.subplots(1, 2)
    for seed in seeds:
        rows = by_seed[seed]
        epochs = [r["epoch"] for r in rows]
        flip_ax.plot(
            epochs, [r["flip_ratio"] for r in rows], label=f"all (seed {seed})"
        )
        grad_ax.plot(
            epochs,
            [r["gradient_fraction"] for r in rows],
            label=f"all (seed {seed})",
        )
    if seeds:
        rows = by_seed[seeds[0]]
        epochs = [r["epoch"] for r in rows]
        for layer in rows[0].get("flip_ratio_layers", {}):
            flip_ax.plot(
                epochs,
                [r["flip_ratio_layers"][layer] for r in rows],
                ":",
                label=f"{layer} (seed {seeds[0]})",
            )
    flip_ax.set(
        xlabel="epoch",
        ylabel="fraction of binary weights",
        title="sign flips per epoch",
    )
    if seeds and max(r["flip_ratio"] for r in records) > 0:
        flip_ax.set_yscale("log")
    grad_ax.set(
        xlabel="epoch",
        ylabel="fraction of latent weights",
        title="weights with a surrogate gradient",
        ylim=(0, 1.05),
    )
    for ax in (flip_ax, grad_ax):
        ax.grid(alpha=0.3)
        if seeds:
            ax.legend(fontsize="small")
    save(fig, "flip_ratio.png")

    if latents:
        n = len(latents)
        cols = min(n, 3)
        rows_n = -(-n // cols)
        fig = Figure(figsize=(4 * cols, 3 * rows_n))
        axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
        for ax, (layer, values) in zip(axes, latents.items(), strict=False):
            values = np.asarray(values, np.float64).ravel()
            ax.hist(values, bins=100, color="tab:blue")
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.set(title=f"{layer} ({values.size:,} weights)", xlabel="w")
        for ax in axes[n:]:
            ax.set_visible(False)
        save(fig, "latent_histograms.png")
    return paths
