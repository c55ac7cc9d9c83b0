# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing training methods
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/bnnjax/bnnjax/blob/main/notebooks/compare_methods.ipynb)
#
# `bnnjax.compare.compare` trains several binarization methods on the same
# data, architecture and budget, and reports test accuracy over seeds and
# how fast each method reaches a target validation accuracy. Its protocol,
# for every method:
#
# 1. **tune on validation**: each learning rate of a small declared grid
#    trains with a tuning seed that is not one of the final seeds; the
#    candidate with the best final validation accuracy wins (the test split
#    is not touched);
# 2. **final runs**: the chosen candidate trains with every final seed (all
#    seeds at once, `jax.vmap` over a seed axis); the test split is
#    evaluated once, at the end.
#
# Everything else is equal across methods: the model and its initial
# weights per seed, the training and validation examples, the batch order,
# the epochs, the optimizer and schedule of the real parameters.
#
# This notebook runs a small grid; the sizes below are a demonstration,
# not a published comparison (`docs/results/comparison.md` has those, with
# their commands).
# On Colab the first cell installs bnnjax and the data is the full MNIST
# from TensorFlow Datasets; elsewhere (and with `BNNJAX_SMOKE=1`, the small
# mode CI runs) it uses the MNIST sample shipped in the package.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # install bnnjax on Colab only
    package = "bnnjax[data] @ git+https://github.com/bnnjax/bnnjax"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", package]
    subprocess.run(pip, check=True)

# %%
import json
import os
import tempfile

import jax
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

import bnnjax
import bnnjax.compare

# BNNJAX_SMOKE=1: tiny widths, few runs, the embedded sample (CI runs this).
SMOKE = os.environ.get("BNNJAX_SMOKE") == "1"
ON_COLAB = "google.colab" in sys.modules
DATASET = "mnist" if ON_COLAB and not SMOKE else "mnist-sample"
try:  # on Colab, TFDS downloads and prepares MNIST once (about a minute)
    ds = bnnjax.data.load_dataset(DATASET)
except (ImportError, bnnjax.data.DatasetUnavailableError) as e:
    print(f"TFDS MNIST unavailable ({type(e).__name__}); using the sample")
    DATASET = "mnist-sample"
    ds = bnnjax.data.load_dataset(DATASET)
# Files go to a new folder under $BNNJAX_NOTEBOOK_DIR when it is set (kept);
# otherwise to a temporary folder that the last cell (or the kernel's exit)
# removes.
KEEP_DIR = os.environ.get("BNNJAX_NOTEBOOK_DIR")
if KEEP_DIR:
    os.makedirs(KEEP_DIR, exist_ok=True)
    work_tmp = None
    WORK = tempfile.mkdtemp(prefix="compare-", dir=KEEP_DIR)
else:
    work_tmp = tempfile.TemporaryDirectory(prefix="bnnjax-compare-")
    WORK = work_tmp.name
print(
    f"bnnjax {bnnjax.__version__}, jax {jax.__version__}, "
    f"device {jax.devices()[0]}, {ds}, smoke={SMOKE}"
)

# %% [markdown]
# ## The grid
#
# The founding method (`scaled_sigmoid`: a sigmoid surrogate whose width
# follows the weights' spread, mean-absolute-deviation scale,
# `scale_adaptive` Adam), its fixed-width ablation (`sigmoid`), BinaryNet
# (`bnn`), XNOR-Net (`xnor`), Bop (latent-free) and the float ceiling of the
# same architecture. `bnnjax.compare.tuning_grid(name)` declares each
# method's search space; `tune="lr"` searches its learning rates only.

# %%
if SMOKE:
    methods = ["scaled_sigmoid", "bnn"]
    grids = {  # two learning rates each, one tuning epoch
        "scaled_sigmoid": bnnjax.compare.TuningGrid(
            learning_rates=(1e-2, 3e-2)
        ),
        "bnn": bnnjax.compare.TuningGrid(learning_rates=(1e-3, 1e-2)),
    }
    budget = {"hidden": (32,), "epochs": 2, "tune_epochs": 1, "seeds": (0, 1)}
else:
    methods = ["scaled_sigmoid", "sigmoid", "bnn", "xnor", "bop", "float"]
    grids = None  # the declared grids
    budget = {"hidden": (256, 256), "epochs": 10, "seeds": (0, 1, 2)}
    if DATASET == "mnist":  # ten times the data: fewer epochs
        budget.update(epochs=4, tune_epochs=2)
for name in methods:
    grid = (grids or {}).get(name) or bnnjax.compare.tuning_grid(name)
    print(f"{name:>15}: learning rates {grid.learning_rates}")

# %% [markdown]
# ## Run it
#
# `on_run` is called after every run; here it prints one line per run.


# %%
def report(run):
    accuracy = run.final_val_accuracy
    test = (
        ""
        if run.test_accuracy is None
        else (f", test {sum(run.test_accuracy) / len(run.test_accuracy):.3f}")
    )
    print(
        f"{run.phase:>5} {run.method:>15} lr={run.learning_rate:g}: "
        f"val {accuracy:.3f}{test} ({sum(run.epoch_seconds):.1f} s)"
    )


result = bnnjax.compare.compare(
    methods,
    dataset=DATASET,
    tune="lr",
    grids=grids,
    target_accuracy=0.9,
    on_run=report,
    **budget,
)

# %% [markdown]
# ## Results
#
# Test accuracy is the mean and sample standard deviation over the final
# seeds; "epochs/seconds to 90% val" count the final runs' training time
# per model until the validation accuracy first reaches 90%.

# %%
display(Markdown(result.table()))
best = max(result.methods, key=lambda m: m.test_accuracy_mean)
print(
    f"highest mean test accuracy: {best.method} "
    f"({100 * best.test_accuracy_mean:.1f}%)"
)

# %% [markdown]
# The harness writes three plots: validation accuracy per epoch (mean over
# seeds, band from the lowest to the highest seed), the fraction of binary
# weights that flip sign per epoch, and test accuracy per seed.

# %%
paths = result.plot(os.path.join(WORK, "plots"))
for path in paths:
    display(Image(filename=path, width=800))

# %% [markdown]
# ## The tuning grid
#
# What the validation split chose: final validation accuracy of each
# tuning candidate against its learning rate. A choice at the edge of the
# grid (`at_grid_edge`) means the grid may be too narrow for that method.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for m in result.methods:
    runs = sorted(
        (r for r in result.runs if r.phase == "tune" and r.method == m.method),
        key=lambda r: r.learning_rate,
    )
    ax.plot(
        [r.learning_rate for r in runs],
        [r.final_val_accuracy for r in runs],
        "o-",
        label=m.method,
    )
    print(
        f"{m.method:>15}: chose lr={m.learning_rate:g}"
        f"{' (grid edge)' if m.at_grid_edge else ''}"
    )
ax.set_xscale("log")
ax.set_xlabel("binary-group learning rate (Bop: gamma)")
ax.set_ylabel("validation accuracy (tuning seed)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Every run as JSON lines (settings, one line per run and seed, one per
# method), the same records `bnnjax compare` writes, with the device and
# library versions in the settings.

# %%
records = result.records()
with open(os.path.join(WORK, "compare.jsonl"), "w") as f:
    for record in records:
        f.write(json.dumps(record) + "\n")
settings = records[0]
print(
    {
        k: settings[k]
        for k in ("dataset", "model", "hidden", "epochs", "seeds")
        if k in settings
    }
)
print(f"{len(records)} records in {os.path.join(WORK, 'compare.jsonl')}")

# %% [markdown]
# ## Clean up
#
# The temporary folder goes; a folder under `$BNNJAX_NOTEBOOK_DIR` stays.

# %%
if work_tmp is not None:
    work_tmp.cleanup()
    assert not os.path.exists(WORK)
else:
    print("files kept in", WORK)
