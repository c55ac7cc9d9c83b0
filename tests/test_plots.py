"""What the figures of bnnjax.plots.plot_run show."""

import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import pytest
from absl.testing import absltest

from bnnjax import plots

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure

LAYERS = ("dense_0", "head")


def _records(seeds=(3, 1), epochs=3):
    """Records as metrics.jsonl holds them, seed 3 first in each epoch."""
    records = []
    for epoch in range(1, epochs + 1):
        for seed in seeds:
            update = 0.2 / 4 ** (epoch - 1) + 0.01 * seed
            records.append(
                {
                    "epoch": epoch,
                    "seed": seed,
                    "train_loss": 1.0 / epoch,
                    "val_loss": 1.2 / epoch,
                    "train_accuracy": 0.5 + 0.1 * epoch,
                    "val_accuracy": 0.45 + 0.1 * epoch,
                    "flip_ratio": 0.05 / epoch,
                    "flip_ratio_layers": {k: 0.05 / epoch for k in LAYERS},
                    "update_ratio": update,
                    "update_ratio_layers": {k: update for k in LAYERS},
                    "gradient_fraction": 0.996,
                    "gradient_fraction_layers": {k: 0.996 for k in LAYERS},
                }
            )
    return records


def _suptitle(fig):
    # Figure.get_suptitle is matplotlib >= 3.8; the project allows 3.7.
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def _latents():
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=(16, 4)) for k in LAYERS}


class PlotRunTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.out = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.out, ignore_errors=True)

    def _figures(self, records, latents=None, **kwargs):
        """Runs plot_run (on ``latents``, by default ``_latents()``);
        returns {file name: the Figure saved to it}."""
        saved = {}
        original = Figure.savefig

        def record(fig, path, *args, **kw):
            saved[os.path.basename(path)] = fig
            return original(fig, path, *args, **kw)

        if latents is None:
            latents = _latents()
        with mock.patch.object(Figure, "savefig", record):
            paths = plots.plot_run(records, latents, self.out, **kwargs)
        self.assertEqual(sorted(map(os.path.basename, paths)), sorted(saved))
        return saved

    def test_histograms_name_axes_epoch_and_seed(self):
        fig = self._figures(_records())["latent_histograms.png"]
        title = _suptitle(fig)
        self.assertIn("epoch 3", title)  # the last epoch of the records
        self.assertIn("seed 3", title)  # the first record's seed
        visible = [ax for ax in fig.axes if ax.get_visible()]
        self.assertLen(visible, len(LAYERS))
        for ax, layer in zip(visible, LAYERS, strict=True):
            self.assertIn(layer, ax.get_title())
            self.assertEqual(ax.get_ylabel(), "weights per bin")
            self.assertTrue(ax.get_xlabel())
        fig = self._figures(_records(), epoch=2, seed=1)[
            "latent_histograms.png"
        ]
        self.assertEqual(_suptitle(fig), "latent kernels after epoch 2, seed 1")

    def test_histograms_count_the_finite_latents_in_100_bins(self):
        latents = _latents()
        latents["head"] = np.array([[np.nan, 1.0], [2.0, np.inf], [2.5, 3.0]])
        fig = self._figures(_records(), latents)["latent_histograms.png"]
        visible = [ax for ax in fig.axes if ax.get_visible()]
        for ax, layer in zip(visible, LAYERS, strict=True):
            (outline,) = ax.patches
            counts, edges = outline.get_data()[:2]
            values = np.ravel(latents[layer])
            want_counts, want_edges = np.histogram(
                values[np.isfinite(values)], bins=100
            )
            np.testing.assert_array_equal(counts, want_counts)
            np.testing.assert_array_equal(edges, want_edges)
        self.assertEqual(counts.sum(), 4)  # the head's NaN and inf left out

    def test_flip_figure_plots_the_update_ratio(self):
        records = _records()
        fig = self._figures(records)["flip_ratio.png"]
        flips, updates = fig.axes
        self.assertIn("flip", flips.get_title())
        self.assertNotIn("surrogate gradient", updates.get_title())
        self.assertIn("update", updates.get_title())
        self.assertTrue(updates.get_ylabel())
        self.assertEqual(updates.get_xlabel(), "epoch")
        self.assertEqual(updates.get_yscale(), "log")
        lines = {line.get_label(): line for line in updates.get_lines()}
        self.assertEqual(
            sorted(lines),
            [
                "all (seed 1)",
                "all (seed 3)",
                "dense_0 (seed 3)",
                "head (seed 3)",
            ],
        )
        ys = lines["all (seed 3)"].get_ydata()
        want = [r["update_ratio"] for r in records if r["seed"] == 3]
        np.testing.assert_array_equal(ys, want)
        self.assertGreater(np.ptp(ys), 0.1)
        # The per-layer lines follow the seed of the histograms.
        fig = self._figures(records, seed=1)["flip_ratio.png"]
        labels = [line.get_label() for line in fig.axes[1].get_lines()]
        self.assertIn("head (seed 1)", labels)
        for ax in fig.axes:
            ticks = ax.xaxis.get_major_locator()()
            np.testing.assert_array_equal(ticks, np.round(ticks))

    def test_old_records_without_update_ratio(self):
        records = [
            {k: v for k, v in r.items() if not k.startswith("update_ratio")}
            for r in _records()
        ]
        fig = self._figures(records)["flip_ratio.png"]
        _, updates = fig.axes
        for line in updates.get_lines():
            self.assertEmpty(line.get_ydata())

    def test_accuracy_against_minutes_per_seed(self):
        records = _records()  # two seeds trained together
        for r in records:
            r["train_seconds"] = 60.0 * r["epoch"]  # 1, 2, 3 minutes
        self.assertEqual(
            plots.training_minutes(records), {1: 0.5, 2: 1.5, 3: 3.0}
        )
        fig = self._figures(records, test_accuracy={3: 0.9, 1: 0.8})[
            "accuracy_time.png"
        ]
        (ax,) = fig.axes
        self.assertIn("2 trained together", ax.get_xlabel())
        lines = {line.get_label(): line for line in ax.get_lines()}
        self.assertEqual(
            sorted(lines),
            ["test (seed 1)", "test (seed 3)", "val (seed 1)", "val (seed 3)"],
        )
        np.testing.assert_allclose(
            lines["val (seed 1)"].get_xdata(), [0.5, 1.5, 3.0]
        )
        np.testing.assert_allclose(
            lines["val (seed 1)"].get_ydata(), [0.55, 0.65, 0.75]
        )
        np.testing.assert_allclose(lines["test (seed 3)"].get_xdata(), [3.0])
        np.testing.assert_allclose(lines["test (seed 3)"].get_ydata(), [0.9])

    def test_no_time_figure_without_train_seconds(self):
        self.assertNotIn("accuracy_time.png", self._figures(_records()))


if __name__ == "__main__":
    absltest.main()
